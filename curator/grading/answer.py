"""The typed answer the grader compares: :class:`Answer`, and plain numbers parsed into one.

:func:`parse_number` reads integers, decimals, fractions (``\\frac{1}{2}``, ``1/2``), mixed
numbers, scientific notation and infinity into an exact :class:`Answer`; everything else
is parsed by :func:`curator.grading.normalize.parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

_SQUASH = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])|\s+")


def squash_spaces(s: str) -> str:
    """Drop spaces, which never matter in math mode, except the one that ends a command
    name before a letter (``\\sin x``)."""
    return _SQUASH.sub(lambda m: m.group(1) + " " if m.group(1) else "", s)


@dataclass(frozen=True)
class Answer:
    """A parsed answer. ``kind`` says which fields matter:

    number (``value`` Fraction, ``decimals`` for a decimal literal), infinity (``sign``),
    text (``text``), choice (``text`` the letter), time (``value`` minutes, ``ampm``),
    ratio (``items``), base (``text`` digits, ``base``), list/set/tuple (``items``),
    interval (``items`` two ends, ``brackets``), union (``items`` intervals),
    relation (``ops`` and ``items`` operands), matrix (``rows``), expr (``text`` LaTeX for
    sympy), empty, toolong.
    """
    kind: str
    text: str = ""
    value: Fraction | int | None = None
    decimals: int | None = None
    sign: int = 1
    items: tuple["Answer", ...] = ()
    ops: tuple[str, ...] = ()
    brackets: str = ""
    rows: tuple[tuple["Answer", ...], ...] = ()
    base: int | None = None
    ampm: str | None = None
    percent: bool = False
    degrees: bool = False
    unit: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def canonical(self) -> str:
        """A stable string form: equal canonical forms mean equal answers."""
        k = self.kind
        if k == "number":
            v = self.value
            out = str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
            return out + ("%" if self.percent else "")
        if k == "infinity":
            return "-oo" if self.sign < 0 else "oo"
        if k == "expr":
            return squash_spaces(self.text) + ("%" if self.percent else "")
        if k in ("text", "choice"):
            return self.text + ("%" if self.percent else "")
        if k == "time":
            return f"{self.value // 60:02d}:{self.value % 60:02d}" + (f" {self.ampm}" if self.ampm else "")
        if k == "base":
            return f"{self.text}_{self.base}"
        if k in ("list", "set", "tuple", "ratio", "union"):
            sep = {"ratio": ":", "union": " U "}.get(k, ", ")
            inner = sep.join(i.canonical() for i in self.items)
            return {"set": "{%s}", "tuple": "(%s)"}.get(k, "%s") % inner
        if k == "interval":
            return f"{self.brackets[0]}{self.items[0].canonical()}, {self.items[1].canonical()}{self.brackets[1]}"
        if k == "relation":
            parts = [self.items[0].canonical()]
            for op, it in zip(self.ops, self.items[1:]):
                parts += [op, it.canonical()]
            return " ".join(parts)
        if k == "matrix":
            return "[" + "; ".join(", ".join(c.canonical() for c in r) for r in self.rows) + "]"
        return self.text


_INT_DEC = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)$")
_NUMLIT = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_FRAC_NUM = re.compile(r"^([+-]?)\\frac\{\s*(" + _NUMLIT + r")\s*\}\{\s*(" + _NUMLIT + r")\s*\}$")
_SLASH_NUM = re.compile(r"^(" + _NUMLIT + r")\s*/\s*(" + _NUMLIT + r")$")
_MIXED_TEX = re.compile(r"^([+-]?)(\d+)\s*\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}$")
_MIXED_SLASH = re.compile(r"^([+-]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_SCI_TEX = re.compile(r"^(" + _NUMLIT + r")\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*([+-]?\d{1,4})\s*\}?$")
_SCI_E = re.compile(r"^(" + _NUMLIT + r")[eE]([+-]?\d{1,4})$")
_INFTY = re.compile(r"^([+-]?)\s*\\infty$|^([+-]?)\s*\\infinity$|^([+-]?)\s*infinity$", re.I)


def _decimals(lit: str) -> int | None:
    lit = lit.lstrip("+-")
    if "." not in lit:
        return None
    return len(lit.split(".", 1)[1])


def parse_number(s: str) -> Answer | None:
    """Exact rational value of a plain number, fraction, mixed number or scientific
    notation, without sympy; None for anything else."""
    m = _INT_DEC.match(s)
    if m:
        v = Fraction(m.group(2))
        return Answer("number", value=-v if m.group(1) == "-" else v, decimals=_decimals(m.group(2)))
    m = _FRAC_NUM.match(s)
    if m:
        den = Fraction(m.group(3))
        if den == 0:
            return None
        v = Fraction(m.group(2)) / den
        return Answer("number", value=-v if m.group(1) == "-" else v)
    m = _SLASH_NUM.match(s)
    if m:
        den = Fraction(m.group(2))
        if den == 0:
            return None
        return Answer("number", value=Fraction(m.group(1)) / den)
    m = _MIXED_TEX.match(s) or _MIXED_SLASH.match(s)
    if m:
        den = int(m.group(4))
        if den == 0:
            return None
        v = int(m.group(2)) + Fraction(int(m.group(3)), den)
        return Answer("number", value=-v if m.group(1) == "-" else v)
    m = _SCI_TEX.match(s) or _SCI_E.match(s)
    if m:
        mant = Fraction(m.group(1))
        exp = int(m.group(2))
        d = _decimals(m.group(1))
        return Answer("number", value=mant * Fraction(10) ** exp,
                      decimals=None if d is None else max(0, d - exp))
    m = _INFTY.match(s)
    if m:
        sign = -1 if "-" in (m.group(1) or m.group(2) or m.group(3) or "") else 1
        return Answer("infinity", sign=sign)
    return None
