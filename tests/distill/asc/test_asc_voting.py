"""Voting rules: majority, probability-weighted and ASC self-consistency, ties, grouping."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.grading import equivalent
from distill.asc.voting import (ASC_RULES, Candidate, group_answers, rule_weights, vote,
                            vote_all, weighted_vote)


def exact(a: str, b: str) -> bool:
    return a == b


def cands(spec, **kw):
    """``[(answer, correct), ...]`` -> candidates."""
    return [Candidate(a, c, **kw) for a, c in spec]


def test_majority_picks_the_most_frequent_answer():
    cs = cands([("3", False), ("4", True), ("4", True), ("5", False)])
    v = vote(cs, "majority", exact)
    assert (v.answer, v.credit, v.tied, v.weight) == ("4", 1.0, 1, 2.0)


def test_ties_share_credit():
    two = cands([("4", True), ("5", False)])
    assert vote(two, "majority", exact).credit == 0.5
    three = cands([("4", True), ("5", False), ("6", False), ("4", True), ("5", False),
                   ("6", False)])
    v = vote(three, "majority", exact)
    assert v.tied == 3 and v.credit == pytest.approx(1 / 3)
    # two correct groups (equivalent answers the grouping did not merge) tied with a wrong one
    v = vote(cands([("a", True), ("b", True), ("c", False)]), "majority", exact)
    assert v.credit == pytest.approx(2 / 3)
    # ASC ties too: equal score totals
    asc = [Candidate("4", True, score=0.3), Candidate("5", False, score=0.1),
           Candidate("5", False, score=0.2)]
    assert vote(asc, "asc:s", exact).credit == 0.5


def test_asc_weight_breaks_a_majority():
    cs = [Candidate("4", True, score=0.9), Candidate("5", False, score=0.1),
          Candidate("5", False, score=0.2)]
    assert vote(cs, "majority", exact).answer == "5"
    assert vote(cs, "asc:s", exact).answer == "4"               # 0.9 > 0.3
    assert vote(cs, "asc:1+s", exact).answer == "5"             # 1.9 < 2.3
    assert vote(cs, "asc:1+2s", exact).answer == "4"            # 2.8 > 2.6
    assert vote(cs, "asc:1", exact).answer == "5"


answers = st.lists(st.tuples(st.sampled_from(["1", "2", "3", "4", None]), st.booleans()),
                   min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(answers, st.floats(0.0, 1.0))
def test_asc_reduces_to_majority_when_all_scores_are_equal(spec, s):
    # A group's correctness must not depend on which member comes first: make it a
    # property of the answer, as the grader makes it.
    cs = [Candidate(a, a == "2", score=s) for a, _ in spec]
    majority = vote(cs, "majority", exact)
    for rule in ASC_RULES:
        v = vote(cs, rule, exact)
        if rule == "asc:s" and s == 0.0:
            # every weight is 0: all groups tie, whatever their size
            assert v.tied == len({c.answer for c in cs if c.answer is not None})
            continue
        assert (v.answer, v.tied) == (majority.answer, majority.tied), rule
        assert v.credit == pytest.approx(majority.credit), rule


def test_prob_weighting_uses_length_normalised_probability():
    cs = [Candidate("4", True, logprob=-2.0, tokens=20),     # 0.905 per token
          Candidate("5", False, logprob=-1.0, tokens=2),     # 0.607
          Candidate("5", False, logprob=-3.0, tokens=3)]     # 0.368
    w = rule_weights("prob", cs)
    assert w == pytest.approx([math.exp(-0.1), math.exp(-0.5), math.exp(-1.0)])
    v = vote(cs, "prob", exact)
    assert v.answer == "5" and v.weight == pytest.approx(math.exp(-0.5) + math.exp(-1.0))
    # a likelier rationale for 4 (0.995 per token) now outweighs both 5s (0.975)
    cs[0] = Candidate("4", True, logprob=-0.1, tokens=20)
    assert vote(cs, "prob", exact).answer == "4"


def test_samples_without_an_answer_do_not_vote():
    cs = cands([(None, False), ("  ", False), ("7", True)])
    v = vote(cs, "majority", exact)
    assert v.answer == "7" and v.credit == 1.0
    none = cands([(None, False), (None, False)])
    assert vote(none, "majority", exact).credit == 0.0
    assert vote(none, "majority", exact).tied == 0
    assert vote(none, "first", exact).credit == 0.0


def test_first_sample_rule_ignores_the_others():
    cs = cands([("5", False), ("4", True), ("4", True)])
    assert vote(cs, "first", exact).credit == 0.0
    assert vote(list(reversed(cs)), "first", exact).credit == 1.0


def test_grouping_uses_the_graders_equivalence():
    answers = ["\\frac{1}{2}", "0.5", "1/2", "2", "\\dfrac12", None, "0.50"]
    groups = group_answers(answers, equivalent)
    assert groups[0] == groups[1] == groups[2] == groups[4] == groups[6]
    assert groups[3] != groups[0] and groups[5] is None
    # three equivalent spellings outvote two "2"s, which plain string voting gets wrong
    cs = cands([("2", False), ("2", False), ("0.5", True), ("\\frac{1}{2}", True), ("1/2", True)])
    assert vote(cs, "majority", equivalent).answer == "0.5"
    assert vote(cs, "majority", exact).answer == "2"


def test_identical_answers_are_compared_once():
    calls = []

    def counting(a, b):
        calls.append((a, b))
        return a == b

    group_answers(["1", "1", "2", "1", "2", "3"], counting)
    assert sorted(calls) == [("1", "2"), ("1", "3"), ("2", "3")]


def test_vote_all_and_invalid_inputs():
    cs = [Candidate("1", True, logprob=-1.0, tokens=2, score=0.5)]
    res = vote_all(cs, ["first", "majority", "prob", *ASC_RULES], exact)
    assert all(v.credit == 1.0 for v in res.values())
    with pytest.raises(ValueError, match="unknown voting rule"):
        vote(cs, "plurality", exact)
    with pytest.raises(ValueError, match="unknown ASC weighting"):
        vote(cs, "asc:2s", exact)
    with pytest.raises(ValueError, match="needs a ranker score"):
        vote([Candidate("1", True)], "asc:s", exact)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        vote([Candidate("1", True, score=1.5)], "asc:s", exact)
    with pytest.raises(ValueError, match="logprob"):
        vote([Candidate("1", True)], "prob", exact)
    with pytest.raises(ValueError, match="finite"):
        weighted_vote(cs, [0], [float("nan")])
