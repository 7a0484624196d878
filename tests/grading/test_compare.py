"""The grader's compare step on its own: typed answers in, a verdict (outcome and rule)
out (curator.grading.compare), with the answers built by parse and no extraction."""

from __future__ import annotations

import pytest

from curator.grading.compare import (CORRECT, UNPARSEABLE, WRONG, Context, NeedsSympy,
                                     asks_for_approximation, compare, relation_as_interval,
                                     strip_label)
from curator.grading.normalize import parse


def verdict(ref: str, pred: str, ctx: Context = Context()) -> tuple[str, str]:
    v = compare(parse(ref), parse(pred), ctx)
    return v.outcome, v.rule


@pytest.mark.parametrize("ref, pred, outcome, rule", [
    # the same value in another notation
    ("42", "42", CORRECT, "exact"),
    ("0.5", r"\frac{1}{2}", CORRECT, "exact"),
    ("1000", "1,000", CORRECT, "exact"),
    (r"50\%", "50", CORRECT, "percent"),
    # structure: lists and sets in any order, ratios by value
    ("1, 2, 3", "3, 2, 1", CORRECT, "list"),
    (r"\{1, 2\}", r"\{2, 1\}", CORRECT, "set"),
    ("3:2", "6:4", CORRECT, "ratio"),
    # choices and words
    ("(A)", "A", CORRECT, "exact"),
    (r"\text{Thursday}", "thursday", CORRECT, "exact"),
    # a label on either side, a chain of equalities commits to its last member
    ("x = 5", "5", CORRECT, "exact"),
    ("5", "x = 5", CORRECT, "exact"),
    ("7", "2 + 5 = 7", CORRECT, "exact"),
    # inequalities as intervals, unions in any order
    ("1 < x < 2", "(1, 2)", CORRECT, "interval"),
    (r"(-\infty, 0) \cup (1, \infty)", r"(1, \infty) \cup (-\infty, 0)", CORRECT, "union"),
    # other values, a percent is not its fraction, no rounding unless asked
    ("42", "43", WRONG, "number"),
    (r"50\%", "0.5", WRONG, "number"),
    ("3.14", "3.14159", WRONG, "number"),
    # the order and brackets of an interval matter
    ("(1, 2)", "(2, 1)", WRONG, "interval"),
    ("[0, 1)", "[0, 1]", WRONG, "interval"),
    # another choice, no answer, an undefined value (equal to nothing, itself included)
    ("(A)", "B", WRONG, "choice"),
    ("5", "", WRONG, "empty"),
    ("2/0", "2/0", WRONG, "undefined"),
])
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
