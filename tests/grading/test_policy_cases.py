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
    # extraction: an abbreviation is not the end of the final sentence (TDG, GPT-4)
    ("27", "Multiplying, 3*9 = 27.\nSo, there are 27 girls in Ms. Snow's math class.", True),
    # "The answer is 8!" after a box: a factorial, not an exclamation (TDG, 16 rationales)
    (r"40,\!320", "Thus there are $\\boxed{8!}$ ways.\nThe answer is 8!", True),
    ("5", "The answer is 5! Great.", True),
    # a quoted closing answer (TDG; lighteval's "12 and 13")
    (r"\text{A,B,E}", 'So the functions with inverses are A, B and E. The answer is "A,B,E".', True),
    (r"\text{A, D, F, G, H}", 'The answer is "A, C, D, F, G, H".', False),
    (r"\text{(P)}", 'The curve is a parabola. The answer is "P" for parabola.', True),
    ("12\\text{ and }13", 'Final Answer: The final answer is \\"$12 $ and $13 $\\". I hope it is correct.', True),
    # a sentence in Chinese is not a bare answer; its last number is (lighteval)
    ("13/28", "计划的比例为13/28", True),
    ("300", "因此，水池中水将在300分钟内被放完。", True),
    ("B", "B。不是 A", True),
    ("B", "B不是 A", True),
    # a sum up to n is checked at integer n (at n = 7/5 sympy ran past the 5 s limit:
    # the one timeout of the 120,000 TDG rationales)
    ("2^{n - 1}", boxed(r"\sum_{k = 0}^{n - 1} \frac{k!}{(n - k)!}"), False),
    ("2^n", boxed(r"\sum_{k=0}^{n} \binom{n}{k}"), True),
    # units in a closing "The answer is" line (TDG, GPT-3.5): slashes, one-letter units
    ("3", r"so the speed is $\boxed{3}$ km/hr.\nThe answer is 3 km/hr.", True),
    ("12", r"$\boxed{12 \text{ hours/week}}$.\nThe answer is 12 hours/week.", True),
    ("24", r"the perimeter is $8+8+8=\boxed{24}$ m.\nThe answer is 24 m", True),
    ("25", "The answer is 24 m", False),
    ("2m", boxed("2 m"), True),           # against an expression, "m" is a variable
    # sqrt(...) in a plain-text closing line
    (r"42x\sqrt{5x}", r"$= \boxed{42x\sqrt{5x}}$.\nThe answer is 42x*sqrt(5x)", True),
    (r"42x\sqrt{5x}", "The answer is 42x*sqrt(6x)", False),
    # one closer too many, from the sentence around the answer
    ("1", r"so $x = \boxed{1}$ (since there is only one nonnegative solution, the answer is 1).", True),
    (r"\left( 2 \sqrt{2}, \frac{5 \pi}{4} \right)",
     r"The answer is \left(2\sqrt{2}, \frac{5\pi}{4}\right)}.", True),
    ("[0,1)", boxed("[0, 1)"), True),     # ... but a half-open interval keeps its ")"
    ("[0,1)", boxed("[0, 1]"), False),
    # a clock time: "9" and "9 p.m." are the same reading
    ("9", r"Thus, the time will be $\boxed{9\text{ p.m.}}$ 12 hours from now.", True),
    ("9", boxed(r"10 \text{ p.m.}"), False),
    # a degree sign that ends an expression is an angle in it, not a unit to drop
    (r"\frac12", boxed(r"\sin 30^\circ"), True),
    (r"\frac12", boxed(r"\sin 30"), False),
    ("30", boxed(r"30^{\circ}"), True),
    # "^\circ}" closing an outer group keeps its brace
    (r"\frac{1}{2}", boxed(r"\frac{\sin 30^\circ}{1}"), True),
    # a remark after the closing answer is not the answer (user trial)
    ("24", "The answer is 24, which is 4 more than before.", True),
    ("4", "The answer is 24, which is 4 more than before.", False),
    ("24", "The answer is 24 dollars, which is 4 more than before.", True),
    ("24", "The answer is 24 (4 more than last week).", True),
    ("8", "The answer is 8 because 4 * 2 = 8 and 2 is half of 4.", True),
    ("4", "The answer is 8 because 4 * 2 = 8 and 2 is half of 4.", False),
    ("10", "Therefore, the answer is 10 (option B).", True),
    ("5", "The answer is 5, so we are done.", True),
    ("5", "The answer is 5 since 5 is prime.", True),
    ("7", "The answer is 7, i.e. one week.", True),
    ("0", "The reason why the answer is 0 is because the product has a factor 0.", True),
    (r"\frac{1}{4}", r"The answer is \frac{3}{12} which simplifies to \frac{1}{4}.", True),
    # ... but lists, intervals, tuples, labels and math in parentheses are kept whole
    ("2, 3, 5", "The answer is 2, 3 and 5.", True),
    ("2, 3", "The answer is 2, 3 and 5.", False),
    ("[0,1)", "The answer is [0, 1).", True),
    ("(1,2)", "The answer is (1, 2).", True),
    ("x=5, y=3", "The answer is x = 5, y = 3.", True),
    (r"2\sqrt{3}", r"The answer is 2 (\sqrt{3}).", True),
    ("x^2", "The answer is f(x) = x^2.", True),
    ("120", "The final answer is: the volume of $ABCD$ is 120, which is a lot.", True),
    # Markdown bold around the phrase or the answer
    ("5", "The answer is **5**.", True),
    ("6", "The answer is **5**.", False),
    ("5", "**Final Answer:** 5", True),
    ("5", "So the total is 5.\n\n**Answer: 5**", True),
    ("5", "__Answer:__ 5", True),
    # text answers ignore case (words of two letters or more; single letters keep it)
    ("No", "no", True),
    ("No", "The answer is no.", True),
    ("NO", "no", True),
    ("Yes", "no", False),
    ("x", "X", False),
    # an article inside a unit of several words
    ("24", "The answer is 24 hours a week.", True),
    ("24", "The answer is 24 hours per week.", True),
    ("25", "The answer is 24 hours a week.", False),
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
    g = grade(reference, completion, timeout=20)
    assert g.status != "timeout"
    assert g.correct is expected, (g.status, g.rule, g.extracted, g.normalized)
