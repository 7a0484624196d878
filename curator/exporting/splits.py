"""Problem-level split assignment: pure functions, no database.

Every rationale of a problem lands in the split of its problem, so no question is seen
in training and again in evaluation.

Training exports use the **keyed hash** (:func:`hash_split`, method ``keyed-hash``): a
problem's split is a function of its ``problem_id``, the seed and the fractions only,
never of which other problems are selected, so adding, removing or regrading data never
moves a problem between splits. Each problem draws a point ``u`` in [0, 1) from
``blake2b(problem_id, key="curator-split:<seed>")`` and lands in the split whose
cumulative-fraction interval holds ``u`` (problems that share a question take the point
of the smallest problem id with that question, so one question never straddles two
splits: :func:`question_groups`); split sizes are therefore binomial around the
requested fractions (for n problems, a standard deviation of ``sqrt(f (1 - f) / n)``,
0.35 percentage points for a 10% split of the 7,500 MATH train problems).
:func:`stable_assignment` also reuses an earlier export's assignment (``--splits-from``).

The older **balanced** method (:func:`assign_splits`, ``--split-method balanced``)
deals problems so that split sizes and the subject x level mix are exact, but a
problem's split then depends on the whole selection: leaving one problem out can move
hundreds. It is kept for tiny selections and for ``curator export-eval --limit`` (which
picks a subset, not a split). Its steps, reproducible from a seed and independent of
the order rows come out of the database:

1. each problem gets a rank key ``blake2b(seed, problem_id)``;
2. problems are grouped into strata (e.g. subject x level) and sorted by
   (stratum, rank key), which fixes one sequence for a given set of problems and seed;
3. walking that sequence, problems are dealt to the splits so that every prefix of
   the sequence is within one problem of the target fractions (:func:`apportion`).
   Every stratum, and every group of adjacent strata (a subject over its levels), is
   then split in the proportions of the whole, within two problems, and the split
   sizes are the targets rounded.

Without stratification the sequence is simply the rank-key order.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from curator.errors import CuratorError

DEFAULT_SPLITS = "train=0.9,validation=0.05,test=0.05"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SplitSpec:
    """Split names and their fractions (exact rationals summing to 1), in given order."""

    names: tuple[str, ...]
    fractions: tuple[Fraction, ...]

    def as_dict(self) -> dict[str, float]:
        return {n: float(f) for n, f in zip(self.names, self.fractions)}


def parse_splits(text: str) -> SplitSpec:
    """Parse ``train=0.9,validation=0.05,test=0.05``; fractions must sum to 1."""
    names: list[str] = []
    fracs: list[Fraction] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise CuratorError(f"--splits: bad entry {part!r}; write NAME=FRACTION, e.g. "
                               f"{DEFAULT_SPLITS}")
        if name in names:
            raise CuratorError(f"--splits: split {name!r} is named twice")
        try:
            frac = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise CuratorError(f"--splits: {name}={value!r} is not a number") from None
        if not 0 < frac <= 1:
            raise CuratorError(f"--splits: {name}={value} must be in (0, 1]")
        names.append(name)
        fracs.append(frac)
    if not names:
        raise CuratorError(f"--splits is empty; e.g. {DEFAULT_SPLITS}")
    total = sum(fracs)
    if abs(total - 1) > Fraction(1, 10**6):
        raise CuratorError(f"--splits fractions sum to {float(total):g}, not 1 ({text})")
    # Tiny rounding (0.333+0.333+0.334) is absorbed by renormalising exactly.
    return SplitSpec(tuple(names), tuple(f / total for f in fracs))


def rank_key(seed: int, problem_id: str) -> bytes:
    """The seeded pseudo-random order of problems (stable across Python runs)."""
    return hashlib.blake2b(f"{seed}\x1f{problem_id}".encode(), digest_size=8).digest()


HASH_METHOD = "keyed-hash"
BALANCED_METHOD = "balanced"
SPLIT_METHODS = (HASH_METHOD, BALANCED_METHOD)
HASH_DESCRIPTION = ("u = int(blake2b(problem_id, key='curator-split:<seed>', digest_size=8)) "
                    "/ 2**64; the first split whose cumulative fraction exceeds u. Problems "
                    "that share a question (problems.question_key) all take the split of "
                    "the smallest problem_id among the warehouse's problems with that "
                    "question")
_UNIT = 1 << 64


def hash_point(seed: int, problem_id: str) -> int:
    """The problem's point in [0, 2**64): a keyed hash of its id, nothing else."""
    digest = hashlib.blake2b(problem_id.encode(), key=f"curator-split:{seed}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _thresholds(spec: SplitSpec) -> list[int]:
    """Upper ends of the splits' intervals on [0, 2**64), exact (the last is 2**64)."""
    out, cum = [], Fraction(0)
    for f in spec.fractions:
        cum += f
        out.append(math.floor(cum * _UNIT))
    out[-1] = _UNIT
    return out


def hash_split(problem_id: str, spec: SplitSpec, seed: int) -> str:
    """The split of one problem under the keyed-hash method."""
    x = hash_point(seed, problem_id)
    for name, upper in zip(spec.names, _thresholds(spec)):
        if x < upper:
            return name
    return spec.names[-1]  # unreachable: the last threshold is 2**64


@dataclass
class StableAssignment:
    """The result of :func:`stable_assignment`."""

    assignment: dict[str, str]          # problem_id -> split
    reused: int = 0                     # placed as the earlier export placed them
    hashed: int = 0                     # new: placed by the keyed hash (or with a twin)
    # in the earlier export, but moved to the split of a problem with the same question
    # (the earlier export had split them)
    moved: list[str] = field(default_factory=list)


def question_groups(problem_ids: Iterable[str],
                    representative: Mapping[str, str] | None) -> dict[str, list[str]]:
    """The problems grouped by their question: ``representative`` maps a problem id to
    the smallest problem id with its question (absent: the problem's own id, a question
    no other problem has). Returns {representative: sorted distinct member ids}, in
    order of first appearance."""
    representative = representative or {}
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for pid in problem_ids:
        if pid not in seen:
            seen.add(pid)
            groups.setdefault(representative.get(pid, pid), []).append(pid)
    return {rep: sorted(members) for rep, members in groups.items()}


def check_split_names(earlier: Mapping[str, str], spec: SplitSpec) -> None:
    """Refuse an earlier assignment that uses a split ``spec`` does not name."""
    unknown = sorted(set(earlier.values()) - set(spec.names))
    if unknown:
        raise CuratorError(f"--splits-from: the earlier export has split(s) {unknown} that "
                           f"--splits does not name ({', '.join(spec.names)}); give the same "
                           "split names")


def stable_assignment(problem_ids: Iterable[str], spec: SplitSpec, seed: int,
                      earlier: Mapping[str, str] | None = None,
                      representative: Mapping[str, str] | None = None) -> StableAssignment:
    """Map each problem id to a split: the earlier export's split where ``earlier``
    (problem_id -> split) has it, else :func:`hash_split`. Every split named in
    ``earlier`` must be one of ``spec.names``.

    Problems with the same question (``representative``: problem id -> the smallest
    problem id with its question, see :func:`question_groups`) always share a split:
    the earlier export's split of the smallest member it placed, else the keyed hash of
    the representative. A problem whose question no other problem has is its own
    representative, so it is placed exactly as without ``representative``."""
    earlier = earlier or {}
    check_split_names(earlier, spec)
    thresholds = _thresholds(spec)
    out = StableAssignment({})
    for rep, members in question_groups(problem_ids, representative).items():
        prior = [earlier[m] for m in members if m in earlier]
        if prior:
            split = prior[0]
        else:
            x = hash_point(seed, rep)
            split = next(n for n, u in zip(spec.names, thresholds) if x < u)
        for m in members:
            out.assignment[m] = split
            if m not in earlier:
                out.hashed += 1
            elif earlier[m] == split:
                out.reused += 1
            else:
                out.moved.append(m)
    return out


def apportion(n: int, fractions: Sequence[Fraction]) -> list[int]:
    """For a sequence of ``n`` items, the split index of each item, such that every
    prefix of length k gives split j within ``1 - 1/(2m - 2)`` items of ``f_j * k``
    (m splits): Tijdeman's solution of the chairman assignment problem (1980).

    Each split's next item is a unit job with a release time (taking it earlier would
    put the split too far ahead) and a deadline (later would leave it too far behind);
    earliest deadline first among the released jobs meets every deadline. The simpler
    "largest deficit first" rule can drift a whole item past the target.
    """
    m = len(fractions)
    if m == 1:
        return [0] * n
    # Exact integer arithmetic on a common denominator D: f_j = w_j / D and the bound
    # c = (2m - 3) / (2m - 2), everything scaled by D * (2m - 2).
    denom = 1
    for f in fractions:
        denom = denom * f.denominator // math.gcd(denom, f.denominator)
    w = [int(f * denom) for f in fractions]
    scale, slack = 2 * m - 2, 2 * m - 3          # c = slack / scale
    counts = [0] * m
    out = []
    for k in range(1, n + 1):
        best, best_num, best_den = -1, 0, 1
        for j in range(m):
            # released: f_j * k >= counts_j + 1 - c
            if w[j] * k * scale < ((counts[j] + 1) * scale - slack) * denom:
                continue
            # deadline of the next item: the k at which f_j * k - counts_j would pass c,
            # i.e. (counts_j + c) / f_j = num / den; earliest first, ties to the earlier
            # split (fractions compared by cross-multiplying)
            num, den = (counts[j] * scale + slack) * denom, w[j] * scale
            if best < 0 or num * best_den < best_num * den:
                best, best_num, best_den = j, num, den
        counts[best] += 1
        out.append(best)
    return out


def _stratum_sort_key(value: Hashable) -> tuple:
    # None sorts first and mixed types never get compared with each other.
    return tuple((v is not None, type(v).__name__, v if v is not None else 0)
                 for v in (value if isinstance(value, tuple) else (value,)))


def assign_splits(problems: Iterable[tuple[str, Hashable]], spec: SplitSpec,
                  seed: int) -> dict[str, str]:
    """Map each problem id to a split name.

    ``problems`` holds ``(problem_id, stratum)`` pairs; use the same stratum (e.g. None)
    for all problems to split without stratification. A problem listed twice must have
    the same stratum both times.
    """
    strata: dict[str, Hashable] = {}
    for pid, stratum in problems:
        known = strata.setdefault(pid, stratum)
        if known is not stratum and known != stratum:
            raise CuratorError(f"problem {pid} has two strata: {known!r} and {stratum!r}")
    # Sort the (few) distinct strata once; each problem then sorts by a small int.
    position = {st: i for i, st in enumerate(sorted(set(strata.values()), key=_stratum_sort_key))}
    order = sorted(strata, key=lambda pid: (position[strata[pid]], rank_key(seed, pid)))
    picks = apportion(len(order), spec.fractions)
    return {pid: spec.names[j] for pid, j in zip(order, picks)}


def split_sizes(assignment: Mapping[str, str], spec: SplitSpec) -> dict[str, int]:
    sizes = {n: 0 for n in spec.names}
    for split in assignment.values():
        sizes[split] += 1
    return sizes
