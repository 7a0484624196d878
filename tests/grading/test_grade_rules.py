"""The grader's rules, family by family: extraction, then equivalence of final answers.

Each case is (reference answer as the loaders store it, completion, expected verdict).
Cases that need sympy run in the guard worker process, exactly as they do for users.
"""

from __future__ import annotations

import pytest

from curator.grading import GRADER_VERSION, STATUSES, Grade, equivalent, extract_answer, grade


def boxed(ans: str) -> str:
    return f"Working it out step by step, we get $\\boxed{{{ans}}}$."


# -- extraction ------------------------------------------------------------------------

@pytest.mark.parametrize("text, answer", [
    (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"first \boxed{3}, then on reflection \boxed{4}.", "4"),
    (r"nested \boxed{\frac{\sqrt{3}}{2}} done", r"\frac{\sqrt{3}}{2}"),
    (r"bare box: \boxed 5.", "5"),
    (r"framed \fbox{12}", "12"),
    ("Adding them, the answer is 42.", "42"),
    ("Final answer: 17", "17"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("Some reasoning.\nAnswer: 3.5", "3.5"),
    ("0.5", "0.5"),
    (r"$\frac12$", r"\frac12"),
    (r"The roots are $x = \boxed{2}$ or $x = \boxed{3}$.", "2, 3"),
    (r"We find \boxed{4}. The final answer is 5.", "5"),
])
def test_extraction(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text", ["", "   ", r"\boxed{}",
                                  "I could not solve this problem, sorry about that, it is hard."])
def test_no_answer(text):
    assert extract_answer(text) is None
    g = grade("3", text)
    assert g.status == "no_answer" and not g.correct


def test_a_box_that_never_closes_is_never_correct():
    g = grade("3", r"so the answer is \boxed{3")
    assert not g.correct and g.status in ("no_answer", "unparseable")


def test_base_n_answers_are_read_in_the_reference_base():
    # MATH asks "express your answer in base 8"; answers often drop the subscript
    assert grade("52_8", boxed("52")).correct and grade("52_8", boxed("52_{8}")).correct
    assert not grade("52_8", boxed("42")).correct       # the same value written in base 10
    assert not grade("52_8", boxed("53")).correct


def test_multiple_choice_letters_only_when_the_reference_is_a_choice():
    assert grade("C", "Let's think. It is not A, therefore I think it's (C).").correct
    assert grade(r"\text{(B)}", r"The answer is $\boxed{\text{(B)}}$").correct
    assert not grade("C", "The answer is (B).").correct


# -- equivalence -------------------------------------------------------------------------

EQUAL = [
    # integers, separators
    ("1000", "1,000"), ("1000000", "1\\,000\\,000"), ("1234", "1 234"), ("-7", "-7"),
    # decimals and fractions
    (r"\frac{1}{2}", "0.5"), (r"\frac12", r"\dfrac{1}{2}"), (r"\frac{3}{4}", r"\tfrac34"),
    ("0.25", "1/4"), (r"2\frac{1}{2}", "2.5"), (r"-\frac{2}{3}", r"\frac{-2}{3}"),
    # radicals, pi, e
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"), (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"4\pi", r"4 \pi"), (r"\pi/2", r"\frac{\pi}{2}"),
    # percent, degrees, units and words
    (r"25\%", "25"), (r"30^\circ", "30"), (r"30^\circ", r"30^{\circ}"), ("12", r"12\text{ cm}"),
    ("5", "5 dollars"), (r"\$18.90", "18.90"), ("18.9", r"\$18.90"),
    # sets, tuples, intervals, lists
    (r"\{1, 2, 3\}", r"\{3, 1, 2\}"), ("(1, 2)", r"\left(1, 2\right)"),
    ("(-\\infty, 3]", r"(-\infty,3]"), ("1, 2", "2, 1"),
    # labels, relations
    ("5", "x = 5"), ("x > 3", "3 < x"), (r"y = 2x + 1", r"y = 1 + 2x"),
    # matrices and vectors
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    (r"\begin{pmatrix} 1/2 & 0 \\ 0 & 1 \end{pmatrix}",
     r"\begin{pmatrix} \frac{1}{2} & 0 \\ 0 & 1 \end{pmatrix}"),
    # base-n, complex, scientific notation
    ("52_8", "52_8"), ("3 + 4i", "4i + 3"), (r"1.5 \times 10^{3}", "1500"),
    # symbolic expressions
    ("x^2 + 2x + 1", "(x+1)^2"), (r"\frac{x+1}{2}", r"\frac{1}{2}x + \frac{1}{2}"),
    # text
    (r"\text{Monday}", "Monday"), ("Mrs. Hilt", "mrs. hilt"),
]

DIFFERENT = [
    ("2", "-2"), (r"\frac{1}{2}", "0.6"), ("1000", "100"), (r"\sqrt{2}", "1.41"),
    (r"\pi", "3.14"), ("(1, 2)", "(2, 1)"), ("[0, 1]", "(0, 1)"), ("(0, 1]", "[0, 1]"),
    (r"\{1, 2\}", r"\{1, 2, 3\}"), ("x > 3", "x \\ge 3"), ("x^2 + 1", "x^2 - 1"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
    ("3 + 4i", "3 - 4i"), (r"\text{Monday}", "Tuesday"), ("1, 2", "1, 2, 3"),
]


@pytest.mark.parametrize("reference, answer", EQUAL)
def test_equal_answers(reference, answer):
    g = grade(reference, boxed(answer))
    assert g.correct and g.status == "correct", g
    assert equivalent(reference, answer)


@pytest.mark.parametrize("reference, answer", DIFFERENT)
def test_different_answers(reference, answer):
    g = grade(reference, boxed(answer))
    assert not g.correct and g.status in ("wrong", "unparseable"), g
    assert not equivalent(reference, answer)


def test_rounded_decimal_counts_only_when_the_question_asks_for_one():
    assert not grade(r"\sqrt{2}", boxed("1.41")).correct
    asked = "Express your answer as a decimal to the nearest hundredth."
    assert grade(r"\sqrt{2}", boxed("1.41"), question=asked).correct
    assert not grade(r"\sqrt{2}", boxed("1.42"), question=asked).correct


def test_grade_record_explains_itself():
    g = grade(r"\frac{1}{2}", r"... so the answer is $\boxed{0.5}$.")
    assert isinstance(g, Grade)
    assert (g.correct, g.status, g.extracted, g.normalized, g.extraction) == \
        (True, "correct", "0.5", "1/2", "boxed")
    assert g.rule and set(STATUSES) == {"correct", "wrong", "no_answer", "unparseable", "timeout"}
    assert GRADER_VERSION.startswith("curator-grader-")


def test_empty_reference_is_a_user_error():
    from curator.errors import InputError
    with pytest.raises(InputError):
        grade("", boxed("1"))
