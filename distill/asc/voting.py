"""Choosing one answer per problem from a student's sampled rationales (METHOD.md step 3).

Every rule is a pure function of the problem's candidates (one per sampled rationale):

- ``first``: the first sample's answer (greedy decoding when sampled at temperature 0);
- ``majority``: plain self-consistency, each sample one vote;
- ``prob``: probability-weighted self-consistency, each sample weighted by its
  length-normalised sequence probability ``exp(logprob / tokens)`` (the variant that
  works best in Wang et al.'s self-consistency paper; the unnormalised probability
  is dominated by the shortest rationale);
- ``asc:<w>``: adaptive self-consistency, each sample weighted by ``w(s)`` where ``s`` is
  the ranking model's score and ``w`` one of ``1``, ``1+s``, ``1+2s``, ``s`` (the
  weightings the paper's code compared; ``asc:1`` is ``majority``).

Equivalent answers form one group: answers are compared with the grader's own
equivalence (:func:`curator.grading.equivalent`, the same code that labelled the
training data), passed in as ``same`` so the functions stay pure and testable. The group
with the largest total weight wins; when several groups tie, they share the credit: the
problem scores the fraction of tied groups that are correct. A group is correct when its
first answer (in sample order) was graded correct against the reference. Samples
without an answer do not vote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

Same = Callable[[str, str], bool]

#: ASC weighting functions of the ranker score s in [0, 1].
ASC_WEIGHTS: dict[str, Callable[[float], float]] = {
    "1": lambda s: 1.0,
    "1+s": lambda s: 1.0 + s,
    "1+2s": lambda s: 1.0 + 2.0 * s,
    "s": lambda s: s,
}

#: Rules that need no ranker, then the ASC rules, in report order.
BASE_RULES = ("first", "majority", "prob")
ASC_RULES = tuple(f"asc:{w}" for w in ASC_WEIGHTS)
RULES = BASE_RULES + ASC_RULES

# Totals closer than this (relative) are a tie: sums of the same weights in another order
# differ in the last bits.
_TIE_RTOL = 1e-9


@dataclass(frozen=True)
class Candidate:
    """One sampled rationale, as the voting rules see it."""
    answer: str | None           # the final answer the grader extracted (None: none)
    correct: bool                # the grader's verdict against the reference
    logprob: float | None = None  # sum of the completion tokens' log-probabilities
    tokens: int | None = None     # completion tokens (for the length-normalised probability)
    score: float | None = None    # ranking model score s in [0, 1]


@dataclass(frozen=True)
class Vote:
    """The outcome of one rule on one problem."""
    answer: str | None  # the winning answer (the first of the tied groups)
    credit: float       # 1 correct, 0 wrong, a fraction when tied groups share the credit
    tied: int           # groups sharing the top weight (0: no sample had an answer)
    weight: float       # the winning total weight


NO_VOTE = Vote(None, 0.0, 0, 0.0)


def group_answers(answers: Sequence[str | None], same: Same) -> list[int | None]:
    """The group index of every answer (None for a missing or blank answer). An answer
    joins the first group whose first answer it is ``same`` as (read as the reference),
    else starts a new group; identical strings are never compared twice."""
    reps: list[str] = []
    seen: dict[str, int] = {}
    out: list[int | None] = []
    for a in answers:
        if a is None or not str(a).strip():
            out.append(None)
            continue
        if a not in seen:
            seen[a] = next((g for g, rep in enumerate(reps) if same(rep, a)), len(reps))
            if seen[a] == len(reps):
                reps.append(a)
        out.append(seen[a])
    return out


def weighted_vote(candidates: Sequence[Candidate], groups: Sequence[int | None],
                  weights: Sequence[float]) -> Vote:
    """The group with the largest total weight; tied groups share the credit."""
    if not (len(candidates) == len(groups) == len(weights)):
        raise ValueError("candidates, groups and weights differ in length")
    totals: dict[int, float] = {}
    first: dict[int, Candidate] = {}
    for c, g, w in zip(candidates, groups, weights):
        if g is None:
            continue
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"vote weights must be finite and >= 0, got {w}")
        totals[g] = totals.get(g, 0.0) + w
        first.setdefault(g, c)
    if not totals:
        return NO_VOTE
    best = max(totals.values())
    winners = [g for g in sorted(totals) if math.isclose(totals[g], best, rel_tol=_TIE_RTOL)]
    credit = sum(first[g].correct for g in winners) / len(winners)
    return Vote(first[winners[0]].answer, credit, len(winners), best)


def rule_weights(rule: str, candidates: Sequence[Candidate]) -> list[float]:
    """Each candidate's weight under ``rule`` (``majority``, ``prob`` or ``asc:<w>``)."""
    if rule == "majority":
        return [1.0] * len(candidates)
    if rule == "prob":
        out = []
        for c in candidates:
            if c.logprob is None:
                raise ValueError("rule 'prob' needs each candidate's logprob")
            out.append(math.exp(c.logprob / max(1, c.tokens or 1)))
        return out
    if rule.startswith("asc:"):
        w = ASC_WEIGHTS.get(rule[4:])
        if w is None:
            raise ValueError(f"unknown ASC weighting {rule[4:]!r}: choose one of "
                             f"{', '.join(ASC_WEIGHTS)}")
        out = []
        for c in candidates:
            if c.score is None:
                raise ValueError(f"rule {rule!r} needs a ranker score for each candidate")
            if not 0.0 <= c.score <= 1.0:
                raise ValueError(f"ranker scores must lie in [0, 1], got {c.score}")
            out.append(w(c.score))
        return out
    raise ValueError(f"unknown voting rule {rule!r}: choose one of {', '.join(RULES)}")


def first_vote(candidates: Sequence[Candidate]) -> Vote:
    """The first sample's answer, right or wrong (no answer: no credit)."""
    if not candidates or candidates[0].answer is None:
        return NO_VOTE
    c = candidates[0]
    return Vote(c.answer, float(c.correct), 1, 1.0)


def vote(candidates: Sequence[Candidate], rule: str, same: Same,
         groups: Sequence[int | None] | None = None) -> Vote:
    """One rule on one problem. ``groups`` (from :func:`group_answers`) may be passed in
    to share the grouping between rules."""
    if rule == "first":
        return first_vote(candidates)
    if groups is None:
        groups = group_answers([c.answer for c in candidates], same)
    return weighted_vote(candidates, groups, rule_weights(rule, candidates))


def vote_all(candidates: Sequence[Candidate], rules: Sequence[str], same: Same) -> dict[str, Vote]:
    """Every rule in ``rules`` on one problem, grouping the answers once."""
    groups = group_answers([c.answer for c in candidates], same)
    return {r: vote(candidates, r, same, groups) for r in rules}


def rules_for(has_scores: bool) -> tuple[str, ...]:
    """The rules that can be computed: ASC ones only with ranker scores."""
    return RULES if has_scores else BASE_RULES
