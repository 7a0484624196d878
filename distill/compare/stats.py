"""Statistics over seeds (pure): means, Student's t intervals, paired differences."""

from __future__ import annotations


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` (a whole number) degrees of freedom, in closed
    form (Abramowitz & Stegun 26.7.3-4)."""
    import math
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        term, acc = math.cos(theta), math.cos(theta)
        for k in range(3, df - 1, 2):
            term *= c2 * (k - 1) / k
            acc += term
        return 2 / math.pi * (theta + s * acc)
    term, acc = 1.0, 1.0
    for k in range(2, df - 1, 2):
        term *= c2 * (k - 1) / k
        acc += term
    return s * acc


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided critical value of Student's t: P(|T| < q) = ``confidence``
    (``t_quantile(0.95, 2)`` = 4.303)."""
    if df < 1:
        raise ValueError("t_quantile needs at least one degree of freedom")
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < confidence:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval(values: list[float], confidence: float = 0.95) -> dict | None:
    """Mean of ``values`` (one per seed) and its ``confidence`` interval from the
    t-distribution with n-1 degrees of freedom; with one value, just the value (``low``,
    ``high``, ``half`` and ``sd`` None)."""
    import math
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "n": 1, "sd": None, "half": None, "low": None, "high": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "n": n, "sd": sd, "half": half, "low": mean - half, "high": mean + half}


def paired(values: dict, reference: dict, confidence: float = 0.95) -> dict | None:
    """``values - reference`` per seed (both ``{seed: accuracy}``), and the interval of
    those differences. A seed-independent side (one value under seed None, as the base
    model's) is compared with every seed of the other."""
    if None in values and len(values) == 1:
        diffs = [values[None] - r for r in reference.values() if r is not None]
    elif None in reference and len(reference) == 1:
        diffs = [v - reference[None] for v in values.values() if v is not None]
    else:
        diffs = [values[k] - reference[k] for k in values
                 if k in reference and values[k] is not None and reference[k] is not None]
    return interval(diffs, confidence)


def _level_key(level: str):
    return (0, int(level)) if str(level).isdigit() else (1, str(level))
