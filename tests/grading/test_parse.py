"""The grader's parse step on its own: answer strings -> typed answers (curator.grading's
clean, structure, answer and normalize modules), without extraction or comparison."""

from __future__ import annotations

from fractions import Fraction

import pytest

from curator.grading.answer import parse_number
from curator.grading.clean import clean
from curator.grading.normalize import MAX_ANSWER_CHARS, parse
from curator.grading.structure import is_label, split_relation, split_top


@pytest.mark.parametrize("text, value, decimals", [
    ("42", Fraction(42), None),
    ("-3.50", Fraction(-7, 2), 2),
    ("-.5", Fraction(-1, 2), 1),
    (r"\frac{1}{2}", Fraction(1, 2), None),
    ("3/4", Fraction(3, 4), None),
    (r"2\frac{1}{3}", Fraction(7, 3), None),
    (r"3 \times 10^{2}", Fraction(300), None),
    ("1.5e3", Fraction(1500), 0),
])
def test_numbers_parse_to_exact_values(text, value, decimals):
    a = parse(text)
    assert (a.kind, a.value, a.decimals) == ("number", value, decimals)
    assert parse_number(text).value == value


def test_parse_number_refuses_what_is_not_a_plain_number():
    assert parse_number("abc") is None
    assert parse_number("1/0") is None
    assert parse_number("x^2") is None


def test_thousands_separators_are_dropped_and_remembered():
    a = parse("1,000")
    assert (a.kind, a.value, a.extra) == ("number", Fraction(1000), {"grouped": "1,000"})
    assert parse("1 000").value == Fraction(1000)
    assert parse(r"\$1{,}000").value == Fraction(1000)


def test_percent_degrees_currency_and_units_are_flags_not_value():
    pct, deg, unit = parse(r"50\%"), parse(r"30^\circ"), parse(r"5 \text{ cm}")
    assert (pct.value, pct.percent, pct.canonical()) == (Fraction(50), True, "50%")
    assert (deg.value, deg.degrees, deg.canonical()) == (Fraction(30), True, "30")
    assert (unit.value, unit.unit) == (Fraction(5), "cm")
    assert parse(r"\$5").canonical() == "5"


@pytest.mark.parametrize("text, kind, canonical", [
    (r"\infty", "infinity", "oo"),
    (r"-\infty", "infinity", "-oo"),
    ("(A)", "choice", "A"),
    ("B", "choice", "B"),
    (r"\text{Thursday}", "text", "thursday"),
    ("Yes", "text", "yes"),
    ("10:30", "time", "10:30"),
    ("3:2", "ratio", "3:2"),
    ("1011_2", "base", "1011_2"),
    ("1, 2, 3", "list", "1, 2, 3"),
    (r"2 \text{ and } 3", "list", "2, 3"),
    (r"\{1, 2\}", "set", "{1, 2}"),
    ("[0, 1)", "interval", "[0, 1)"),
    (r"(-\infty, 0) \cup (1, \infty)", "union", "(-oo, 0) U (1, oo)"),
    ("x = 5", "relation", "x = 5"),
    (r"x \le 3", "relation", "x <= 3"),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", "matrix", "[1, 2; 3, 4]"),
    (r"\sqrt{2}/2", "expr", r"\sqrt{2}/2"),
    (r"$\boxed{7}$", "number", "7"),
])
def test_each_kind_of_answer(text, kind, canonical):
    a = parse(text)
    assert (a.kind, a.canonical()) == (kind, canonical)


def test_structure_of_intervals_relations_and_plus_minus():
    assert parse("[0, 1)").brackets == "[)"
    assert parse("1 < x < 2").ops == ("<", "<")
    assert parse("3 p.m.").ampm == "p" and parse("3 p.m.").value == 15 * 60
    pm = parse(r"\pm 2")
    assert pm.kind == "list" and len(pm.items) == 2


def test_empty_and_oversized_answers():
    assert parse("").kind == "empty"
    assert parse(None).kind == "empty"
    big = parse("a" * (MAX_ANSWER_CHARS + 1))
    assert big.kind == "toolong" and len(big.text) == MAX_ANSWER_CHARS


def test_clean_strips_latex_that_never_changes_the_value():
    assert clean(r"\dfrac{1}{2}").text == r"\frac{1}{2}"
    assert clean(r"\left( 1, 2 \right)").text == "( 1, 2 )"
    assert clean(r"\displaystyle 3").text == "3"
    assert clean(r"\boxed{4}").text == "4"
    assert clean("≤ 3").text == r"\le 3"
    c = clean(r"50\%")
    assert (c.text, c.percent, c.degrees, c.unit) == ("50", True, False, None)


def test_split_top_keeps_bracketed_and_environment_commas():
    assert split_top(r"1, (2, 3), \{4, 5\}") == ["1", " (2, 3)", r" \{4, 5\}"]
    assert split_top("a; b") == ["a", " b"]
    assert split_top(r"\begin{pmatrix}1,2\end{pmatrix}, 3") == [r"\begin{pmatrix}1,2\end{pmatrix}", " 3"]


def test_split_relation_returns_operands_and_canonical_operators():
    assert split_relation(r"1 < x \le 2") == (["1", "x", "2"], ["<", "<="])
    assert split_relation("f(x, y) = 3") == (["f(x, y)", "3"], ["="])


def test_labels():
    assert is_label("x") and is_label("x_1")
    assert not is_label("5")
