"""Problem-level split assignment (pure functions)."""

from __future__ import annotations

import os
import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.errors import CuratorError
from curator.exporting.splits import (DEFAULT_SPLITS, apportion, assign_splits, parse_splits,
                                      split_sizes)

# The MATH train set's subject x level counts (7,500 problems; 2 Geometry problems have
# no level), counted from ../shared/data/MATH/train, so the stratification checks run on
# the real mix without needing the data.
MATH_TRAIN = {
    "Algebra": [178, 340, 392, 398, 436], "Counting & Probability": [50, 119, 160, 166, 276],
    "Geometry": [41, 100, 129, 177, 421], "Intermediate Algebra": [58, 167, 301, 340, 429],
    "Number Theory": [47, 131, 191, 187, 313], "Prealgebra": [126, 329, 251, 247, 252],
    "Precalculus": [64, 162, 168, 175, 177],
}
NO_LEVEL = {"Geometry": 2}


def math_like_problems() -> list[tuple[str, tuple]]:
    out = []
    for subject, per_level in MATH_TRAIN.items():
        for level, n in enumerate(per_level, start=1):
            out += [(f"p_{subject}_{level}_{i}", (subject, level)) for i in range(n)]
        out += [(f"p_{subject}_none_{i}", (subject, None)) for i in range(NO_LEVEL.get(subject, 0))]
    return out


def test_parse_splits():
    spec = parse_splits(DEFAULT_SPLITS)
    assert spec.names == ("train", "validation", "test")
    assert spec.fractions == (Fraction(9, 10), Fraction(1, 20), Fraction(1, 20))
    assert parse_splits("train=1").names == ("train",)
    # thirds written with rounding are accepted and renormalised exactly
    assert sum(parse_splits("a=0.333333,b=0.333333,c=0.333334").fractions) == 1


@pytest.mark.parametrize("text, message", [
    ("train=0.9,test=0.2", "sum to 1.1"),
    ("train=0.9,train=0.1", "named twice"),
    ("train", "NAME=FRACTION"),
    ("train=x,test=1", "not a number"),
    ("train=0,test=1", "must be in (0, 1]"),
    ("", "empty"),
    ("a b=1", "NAME=FRACTION"),
])
def test_parse_splits_errors(text, message):
    with pytest.raises(CuratorError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        parse_splits(text)


def test_exact_sizes_and_every_problem_once():
    problems = math_like_problems()
    a = assign_splits(problems, parse_splits(DEFAULT_SPLITS), seed=0)
    assert set(a) == {pid for pid, _ in problems}
    assert split_sizes(a, parse_splits(DEFAULT_SPLITS)) == {"train": 6750, "validation": 375,
                                                             "test": 375}


def test_stratified_subject_and_level_mix_matches_the_whole():
    problems = math_like_problems()
    spec = parse_splits(DEFAULT_SPLITS)
    a = assign_splits(problems, spec, seed=7)
    whole_subject = Counter(s for _, (s, _) in problems)
    whole_level = Counter(lv for _, (_, lv) in problems)
    for name, frac in zip(spec.names, spec.fractions):
        members = [key for pid, key in problems if a[pid] == name]
        for subject, n in whole_subject.items():
            got = sum(1 for s, _ in members if s == subject)
            # within 2 problems of the exact share (the prefix bound of the apportionment)
            assert abs(got - float(frac) * n) < 2, (name, subject, got)
            assert abs(got / len(members) - n / len(problems)) < 0.02
        for level, n in whole_level.items():
            got = sum(1 for _, lv in members if lv == level)
            # a level spans 7 separate strata: at most 2 problems off in each
            assert abs(got - float(frac) * n) < 2 * len(MATH_TRAIN), (name, level, got)


def test_reproducible_and_independent_of_row_order():
    problems = math_like_problems()
    spec = parse_splits(DEFAULT_SPLITS)
    a = assign_splits(problems, spec, seed=3)
    shuffled = problems[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, spec, seed=3) == a
    b = assign_splits(problems, spec, seed=4)
    moved = sum(a[p] != b[p] for p in a)
    assert moved > 300  # another seed is another split


def test_unstratified_uses_one_stratum():
    problems = [(f"p{i}", None) for i in range(1000)]
    a = assign_splits(problems, parse_splits("train=0.8,test=0.2"), seed=0)
    assert Counter(a.values()) == {"train": 800, "test": 200}


def test_conflicting_strata_rejected():
    with pytest.raises(CuratorError, match="two strata"):
        assign_splits([("p1", "A"), ("p1", "B")], parse_splits("train=1"), seed=0)


@settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 60)), deadline=None)
@given(weights=st.lists(st.integers(1, 50), min_size=1, max_size=5),
       n=st.integers(0, 400))
def test_apportion_every_prefix_within_tijdemans_bound(weights, n):
    total = sum(weights)
    fracs = [Fraction(w, total) for w in weights]
    m = len(fracs)
    bound = Fraction(1) - Fraction(1, 2 * m - 2) if m > 1 else Fraction(0)
    picks = apportion(n, fracs)
    counts = [0] * m
    for k, j in enumerate(picks, start=1):
        counts[j] += 1
        for c, f in zip(counts, fracs):
            assert abs(c - f * k) <= bound
