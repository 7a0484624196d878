"""Problem-level split assignment: pure functions, no database.

Every rationale of a problem lands in the split of its problem, so no question is seen
in training and again in evaluation. Assignment is reproducible from a seed and does not
depend on the order rows come out of the database:

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
from dataclasses import dataclass
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
