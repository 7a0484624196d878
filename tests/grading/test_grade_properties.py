"""Properties over real reference answers: every reference, written as a rationale that
boxes it, grades as correct; a different value grades as wrong."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.grading import grade
from curator.grading.batch import grade_stream

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "curator" / "demo"
FIXTURES = ROOT / "tests" / "fixtures"


def boxed(ans: str) -> str:
    return f"Step by step, we find the result.\nThe answer is $\\boxed{{{ans}}}$."


def shifted(ans: str) -> str | None:
    """A different value of the same shape: the first digit d becomes d+1 (mod 10). None
    when the answer has no digit."""
    out = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), ans, count=1)
    return out if out != ans else None


def references(cli, db_path, *loads) -> list[tuple[str, str, str | None]]:
    from curator.warehouse import Warehouse
    for args in loads:
        cli("load", *map(str, args))
    with Warehouse(db_path).read() as con:
        return con.execute("SELECT problem_id, reference_answer, question FROM problems "
                           "WHERE reference_answer IS NOT NULL ORDER BY problem_id").fetchall()


def check_all(refs, min_count: int) -> None:
    assert len(refs) >= min_count
    right = dict(grade_stream(((pid, ref, boxed(ref), q) for pid, ref, q in refs), workers=2))
    bad = [(pid, ref, right[pid]) for pid, ref, _ in refs if not right[pid].correct]
    assert not bad, bad[:10]
    changed = [(pid, ref, shifted(ref), q) for pid, ref, q in refs if shifted(ref)]
    wrong = dict(grade_stream(((pid, ref, boxed(s), q) for pid, ref, s, q in changed), workers=2))
    bad = [(ref, s, wrong[pid]) for pid, ref, s, _ in changed if wrong[pid].correct]
    assert not bad, bad[:10]


def test_every_reference_in_the_project_data_grades_itself(cli, db_path):
    refs = references(cli, db_path,
                      ("math", DEMO / "math_train_200.jsonl"), ("math", DEMO / "math_test_70.jsonl"),
                      ("math", FIXTURES / "math"), ("gsm8k", FIXTURES / "gsm8k_test.jsonl"),
                      ("svamp", FIXTURES / "svamp.json"), ("multiarith", FIXTURES / "multiarith.json"),
                      ("asdiv", FIXTURES / "asdiv" / "ASDiv.xml"))
    check_all(refs, 280)


@pytest.mark.parametrize("which", ["math-test", "gsm8k-test"])
def test_every_public_test_reference_grades_itself(cli, db_path, shared_data, which):
    if which == "math-test":
        refs = references(cli, db_path, ("math", shared_data / "MATH" / "test"))
        assert len(refs) == 5000
    else:
        refs = references(cli, db_path, ("gsm8k", shared_data / "gsm8k" / "test.jsonl"))
        assert len(refs) == 1319
    check_all(refs, len(refs))


@settings(max_examples=150, deadline=None)
@given(st.integers(-10**12, 10**12), st.integers(-1000, 1000).filter(bool))
def test_integers(n, k):
    assert grade(str(n), boxed(str(n))).correct
    assert grade(str(n), boxed(f"{n:,}")).correct
    assert not grade(str(n), boxed(str(n + k))).correct


@settings(max_examples=150, deadline=None)
@given(st.integers(-999, 999), st.sampled_from([2, 4, 5, 8, 10, 16, 20, 25, 40]))
def test_terminating_fractions_equal_their_decimals(p, q):
    f = Fraction(p, q)
    dec = f"{float(f):.6f}".rstrip("0").rstrip(".")
    frac = rf"\frac{{{f.numerator}}}{{{f.denominator}}}" if f.denominator != 1 else str(f.numerator)
    assert grade(frac, boxed(dec)).correct
    assert not grade(frac, boxed(f"{float(f) + 0.01:.6f}")).correct
