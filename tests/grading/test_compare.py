"""The grader's compare step on its own: typed answers in, a verdict (outcome and rule)
out (curator.grading.compare), with the answers built by parse and no extraction. The
table of cases is compare_cases.toml, grouped by what each group checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from case_table import grouped_cases

from curator.grading.compare import (CORRECT, UNPARSEABLE, WRONG, Context, NeedsSympy,
                                     asks_for_approximation, compare, relation_as_interval,
                                     strip_label)
from curator.grading.normalize import parse


OUTCOMES = {"correct": CORRECT, "wrong": WRONG}   # the outcomes the case table names


def verdict(ref: str, pred: str, ctx: Context = Context()) -> tuple[str, str]:
    v = compare(parse(ref), parse(pred), ctx)
    return v.outcome, v.rule


@pytest.mark.parametrize("ref, pred, outcome, rule",
                         grouped_cases(Path(__file__).with_name("compare_cases.toml"), "group",
                                       convert=lambda c: (c[0], c[1], OUTCOMES[c[2]], c[3])))
def test_verdict_and_the_rule_that_decides(ref, pred, outcome, rule):
    assert verdict(ref, pred) == (outcome, rule)


def test_a_rounding_counts_only_when_the_question_asks_for_one():
    assert verdict("3.14", "3.14159") == (WRONG, "number")
    assert verdict("3.14", "3.14159", Context(approx=True)) == (CORRECT, "number-rounded")
    assert asks_for_approximation("Round your answer to the nearest tenth.")
    assert not asks_for_approximation("What is 2 + 2?")
    assert not asks_for_approximation(None)


def test_oversized_answers_are_compared_as_text_only():
    big = "a" * 1001
    assert verdict(big, big) == (CORRECT, "exact")
    assert verdict(big, "b" * 1001) == (UNPARSEABLE, "size-guard")
    assert verdict(big, "5") == (UNPARSEABLE, "size-guard")


def test_expressions_need_sympy_and_say_so_when_it_is_not_allowed():
    with pytest.raises(NeedsSympy):
        compare(parse(r"\sqrt{2}/2"), parse(r"\frac{\sqrt{2}}{2}"), Context(sympy=False))
    # structure and plain numbers never need it
    assert compare(parse("1, 2"), parse("2, 1"), Context(sympy=False)).outcome == CORRECT


def test_symbolic_equivalence_through_sympy():
    assert verdict(r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}") == (CORRECT, "sympy-symbolic")
    assert verdict("x^2+1", "1+x^2") == (CORRECT, "sympy-symbolic")


def test_strip_label_and_relation_as_interval():
    assert strip_label(parse("x = 5")).canonical() == "5"
    assert strip_label(parse("x = 5 + 5 + 1 = 11")).canonical() == "11"
    assert relation_as_interval(parse(r"1 < x \le 2")).canonical() == "(1, 2]"
    assert relation_as_interval(parse("x > 3")).canonical() == "(3, oo)"
