"""The grading policy, case by case: (reference, completion, expected verdict).

Two kinds of cases. Regressions: disagreements with math-verify on the TDG rationales, or
with the published grader-cases corpus, that were grader errors and are fixed. Policy:
disagreements we keep on purpose, each listed with its reason in the README ("Grading
policy"), asserted here so that a change of policy is a visible decision.
"""

from __future__ import annotations

import pytest

from curator.grading import grade


def boxed(ans: str) -> str:
    return f"Putting it together, we get $\\boxed{{{ans}}}$."


REGRESSIONS = [
    # thousands separators inside a fraction's braces (TDG, GPT-3.5 and GPT-4)
    (r"\dfrac{1}{29,\!322,\!216}", r"The answer is \frac{1}{29,322,216}.", True),
    (r"\dfrac{1}{29,\!322,\!216}", boxed(r"\frac{1}{29,322,217}"), False),
    # a degree sign on an element of a tuple is the number, as it is for a whole answer
    (r"(6,235^\circ)", boxed("(6, 235)"), True),
    (r"(6,235^\circ)", boxed(r"(6, 235^\circ)"), True),
    (r"(6,235^\circ)", boxed("(6, 236)"), False),
    # a choice label in front of the value, when the question is not multiple choice
    ("29", "Adding up the blocks, we get 29.\nThe answer is (A) 29.", True),
    ("1", r"So there is one solution. The answer is $\textbf{(B)} \ 1$.", True),
    ("3:1", r"The ratio is 3k:k. The answer is \textbf{(D)}\ 3:1", True),
    ("4.2", r"So BF = 4.2. The answer is \text{(C) } 4.2", True),
    ("29", "The answer is (A) 28.", False),
    # ... but a multiple-choice reference still compares letters
    (r"\text{(C)}", "The answer is (B) 13.", False),
    (r"\text{(B)}", "The answer is (B) 13.", True),
    # a unit after a constant
    (r"\pi", boxed(r"\pi\text{ cubic inches}"), True),
    (r"2\pi", boxed(r"\pi\text{ cubic inches}"), False),
    # "81,256" boxed where the reference lists two solutions
    ("81, 256", r"Hence, the solutions are $\boxed{81,256}.$", True),
    ("81, 256", boxed("81,257"), False),
    ("22,500", boxed("22,500"), True),
    # a reference that writes base-b digits without the subscript
    ("110111", r"So the product is $\boxed{110111_2}$.", True),
    ("110111", boxed("110110_2"), False),
]

POLICY = [
    # lists of solutions are unordered (hendrycks' tests say ordered: see the README)
    ("10, 4, -2", boxed("4, 10, -2"), True),
    # a rounded decimal is not an exact irrational unless the question asks for rounding
    (r"\frac{\sqrt{3}}{2}", boxed("0.8660254037844386"), False),
    (r"\frac{1}{12}", boxed("0.0833333333333333"), False),
    # several different answers where one is asked for: a hedge, not an answer
    ("150^\\circ", r"the possible values are $\boxed{30^\circ}$ and $\boxed{150^\circ}.$", False),
    # the value counts, not the form: unsimplified fractions and leading zeros
    ("31", boxed(r"\frac{93}{3}"), True),
    ("001", boxed("1"), True),
    # a reference percent asks for the number of percent
    (r"10\%", boxed("0.1"), False),
    (r"10\%", boxed("10"), True),
    # a comma is a thousands separator or a list separator, never a decimal comma
    ("1000.99", boxed("1000,99"), False),
]


@pytest.mark.parametrize("reference, completion, expected", REGRESSIONS + POLICY)
def test_policy_case(reference, completion, expected):
    g = grade(reference, completion)
    assert g.correct is expected, (g.status, g.rule, g.extracted, g.normalized)
