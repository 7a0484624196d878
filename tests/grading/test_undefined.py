"""Undefined values (division by zero, 0/0) match nothing: sympy makes 1/0 and 2/0 the
same `zoo`, which must not make them equal answers."""

from __future__ import annotations

import pytest

from curator.grading import api
from curator.grading.symbolic import to_sympy, undefined


@pytest.mark.parametrize("reference, completion", [
    (r"\frac{1}{0}", r"\frac{2}{0}"),
    (r"\frac{1}{0}", r"The answer is $\boxed{\frac{1}{0}}$."),   # not even itself
    ("1/0", "2/0"),
    (r"\frac{0}{0}", r"\frac{0}{0}"),
    (r"\dfrac{3}{0}", r"\frac{3}{0}"),
    (r"\frac{x}{0}", r"\frac{y}{0}"),
    ("x/(2-2)", "y/(3-3)"),
    ("(1/0, 2)", "(2/0, 2)"),
    ("5", r"\frac{5}{0}"),
    (r"\frac{5}{0}", "5"),
])
def test_undefined_values_match_nothing(reference, completion):
    g = api.grade(reference, completion)
    assert not g.correct, g
    if "(" not in reference:  # a tuple may be told apart by its interval rule first
        assert g.rule == "undefined", g


@pytest.mark.parametrize("reference, completion", [
    (r"\infty", r"\infty"),          # infinity is a value, not undefined
    (r"\frac{10}{2}", "5"),
    ("3/0.5", "6"),
    (r"\frac{1}{2}", "0.5"),
])
def test_defined_values_still_match(reference, completion):
    assert api.grade(reference, completion).correct


def test_undefined_detects_evaluated_and_unevaluated_forms():
    for tex in (r"\frac{1}{0}", r"\frac{0}{0}", r"\frac{x}{0}", r"\frac{1}{1-1}", "0^{-1}"):
        assert undefined(to_sympy(tex)), tex
    for tex in (r"\infty", r"\frac{1}{2}", "x^{-1}", "0"):
        assert not undefined(to_sympy(tex)), tex
