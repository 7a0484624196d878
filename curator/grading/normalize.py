"""Normalise an answer string and parse it into a typed :class:`Answer`.

The second of the grader's three steps: :func:`parse` cleans the string
(:mod:`~curator.grading.clean`), then decides its kind, using the structure helpers of
:mod:`~curator.grading.structure` and the number parser and :class:`Answer` of
:mod:`~curator.grading.answer`. Everything here is pure string work with
linear-time regular expressions (no sympy), so it runs in the main process on any input.
It decides what *kind* of answer a string is (number, text, choice letter, time, ratio,
base-n number, list, set, tuple/interval, union, relation, matrix, or a general
expression left to sympy) and strips what never changes the value: LaTeX spacing and
sizing commands, math delimiters, ``\\$``, thousands separators, degree signs, trailing
unit words. What each of those decisions means for grading is written down in the README
("Grading policy").
"""

from __future__ import annotations

import re
from fractions import Fraction

from curator.grading.answer import Answer, parse_number
from curator.grading.clean import _WS, clean
from curator.grading.extract import clean_text
from curator.grading.structure import (_CLOSE, _OPEN, _enclosed, _interval_brackets, is_label,
                                       split_relation, split_top)

__all__ = ["MAX_ANSWER_CHARS", "MAX_ELEMENTS", "Answer", "is_label", "normalize_text", "parse",
           "parse_number", "split_relation", "split_top"]

# Longer answers are compared as text only: no model answer to a MATH, GSM8K or ASDiv
# problem is this long, and parsing megabytes of LaTeX is a denial of service.
MAX_ANSWER_CHARS = 1_000
# Lists, sets and matrices with more elements are compared as text only.
MAX_ELEMENTS = 64


_CHOICE_REF = re.compile(r"^\(?([A-J])\)?$")
# "(A) 29", "\\textbf{(D)}\\ 3:1": a choice letter and the value it stands for
_CHOICE_WITH_TEXT = re.compile(r"^(?:\(([A-J])\)\s+|\\text\{\s*\(([A-J])\)\s*\}\s*)(\S.*)$", re.S)
_TEXT_ONLY = re.compile(r"^\\text\{([^{}]*)\}$")
_WORDY = re.compile(r"^[A-Za-z][A-Za-z .,'’\-]*$")
_TIME = re.compile(r"^(\d{1,2})\s*:\s*(\d{2})(?:\s*:\s*(\d{2}))?\s*(?:\\text\{\s*)?([ap])?\.?\s*(?:m\.?)?\s*\}?$", re.I)
_HOUR_AMPM = re.compile(r"^(\d{1,2})\s*(?:\\text\{\s*)?([ap])\.?\s*m\.?\s*\}?$", re.I)
_BASE = re.compile(r"^([0-9A-Za-z.]+)_\{?(\d{1,2})\}?$")
_MATRIX = re.compile(r"^\\begin\{([pbBvV]?matrix|array|smallmatrix)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)
_CASES = re.compile(r"^\\begin\{cases\}(.*)\\end\{cases\}$", re.S)
_PM = re.compile(r"\\pm(?![A-Za-z])|\\mp(?![A-Za-z])")


def normalize_text(s: str) -> str:
    """Text answers compare case-insensitively, ignoring ``\\text``, punctuation and spacing."""
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"[^\w\s]", " ", s.lower())
    return _WS.sub(" ", s).strip()


def parse(s: str, *, depth: int = 0) -> Answer:
    """Parse an answer string (a reference or an extracted answer)."""
    if s is None:
        return Answer("empty")
    if len(s) > MAX_ANSWER_CHARS:
        return Answer("toolong", text=_WS.sub(" ", clean_text(s[:MAX_ANSWER_CHARS])))
    c = clean(s)
    a = _parse_clean(c.text, depth)
    if c.percent or c.degrees or c.unit:
        a = _with(a, percent=c.percent, degrees=c.degrees, unit=c.unit)
    if c.grouped and a.kind == "number":
        a = _with(a, extra={"grouped": c.grouped})
    return a


def _with(a: Answer, **kw) -> Answer:
    d = {f: getattr(a, f) for f in a.__dataclass_fields__}
    d.update(kw)
    return Answer(**d)


def _parse_clean(s: str, depth: int) -> Answer:
    s = s.strip()
    if not s:
        return Answer("empty")
    if depth > 6:
        return Answer("expr", text=s)

    m = _TEXT_ONLY.match(s)
    if m:
        inner = m.group(1).strip()
        cm = _CHOICE_REF.match(inner)
        if cm:
            return Answer("choice", text=cm.group(1))
        if "," in inner and all(_CHOICE_REF.match(p.strip()) for p in inner.split(",")):
            return Answer("list", items=tuple(Answer("choice", text=_CHOICE_REF.match(p.strip()).group(1))
                                              for p in inner.split(",")))
        inner_parsed = _parse_clean(inner, depth + 1) if re.search(r"\d", inner) else None
        if inner_parsed is not None and inner_parsed.kind not in ("expr", "text", "empty"):
            return inner_parsed
        return Answer("text", text=normalize_text(inner))
    cm = _CHOICE_REF.match(s)
    if cm:
        return Answer("choice", text=cm.group(1))
    cm = _CHOICE_WITH_TEXT.match(s)
    if cm:
        return Answer("choice", text=cm.group(1) or cm.group(2), extra={"label": s, "value": cm.group(3)})

    num = parse_number(s)
    if num is not None:
        return num

    m = _HOUR_AMPM.match(s)
    if m and 1 <= int(m.group(1)) <= 12:
        ampm = m.group(2).lower()
        return Answer("time", value=(int(m.group(1)) % 12 + (12 if ampm == "p" else 0)) * 60, ampm=ampm, text=s)
    m = _TIME.match(s)
    if m and int(m.group(2)) < 60 and int(m.group(1)) <= 24:
        h, mi = int(m.group(1)), int(m.group(2))
        ampm = (m.group(4) or "").lower() or None
        sec = m.group(3)
        if ampm or sec is not None:
            if ampm:
                h = h % 12 + (12 if ampm == "p" else 0)
            return Answer("time", value=h * 60 + mi, ampm=ampm, text=s)
        return Answer("time", value=h * 60 + mi, ampm=None, text=s,
                      items=(Answer("number", value=Fraction(int(m.group(1)))),
                             Answer("number", value=Fraction(mi))))

    m = _BASE.match(s)
    if m and 2 <= int(m.group(2)) <= 36 and re.search(r"\d", m.group(1)) and _valid_digits(m.group(1), int(m.group(2))):
        return Answer("base", text=m.group(1).upper().lstrip("0") or "0", base=int(m.group(2)))

    m = _CASES.match(s)
    if m:
        rows = [r.replace("&", " ").strip() for r in re.split(r"\\\\", m.group(1)) if r.strip()]
        if 0 < len(rows) <= MAX_ELEMENTS:
            return Answer("list", items=tuple(_parse_clean(clean(r).text, depth + 1) for r in rows), text=s)

    m = _MATRIX.match(s)
    if m:
        body = m.group(2).strip()
        rows = [r for r in re.split(r"\\\\", body) if r.strip() and r.strip() != r"\hline"]
        cells = [[_parse_clean(clean(x).text, depth + 1) for x in r.split("&")] for r in rows]
        if sum(len(r) for r in cells) > MAX_ELEMENTS or len({len(r) for r in cells}) > 1:
            return Answer("expr", text=s)
        return Answer("matrix", rows=tuple(tuple(r) for r in cells), text=s)

    # union of intervals or sets
    if "\\cup" in s:
        parts = _split_cup(s)
        if len(parts) > 1:
            items = tuple(_parse_clean(p, depth + 1) for p in parts)
            return Answer("union", items=items, text=s)

    parts = split_top(s)
    if len(parts) > 1:
        if len(parts) > MAX_ELEMENTS:
            return Answer("toolong", text=s)
        items = tuple(_parse_item(p, depth) for p in parts if p.strip())
        return Answer("list", items=_flatten_pm(items), text=s)

    if _enclosed(s, "\\{", "\\}"):
        inner = s[2:-2].strip()
        if not inner:
            return Answer("set", items=(), text=s)
        items = tuple(_parse_item(p, depth) for p in split_top(inner) if p.strip())
        return Answer("set", items=_flatten_pm(items), text=s)

    if _interval_brackets(s):
        inner = s[1:-1]
        elems = split_top(inner)
        if len(elems) == 1:
            if s[0] == "(" and s[-1] == ")":
                return _parse_clean(inner, depth + 1)
            if s[0] == "[" and s[-1] == "]":
                # "[x]" is a one-element vector or a bracketed value: compare the value
                return _parse_clean(inner, depth + 1)
        elif len(elems) == 2:
            items = tuple(_parse_item(e, depth) for e in elems)
            return Answer("interval", items=items, brackets=s[0] + s[-1], text=s)
        elif s[0] + s[-1] in ("()", "[]"):
            items = tuple(_parse_item(e, depth) for e in elems)
            return Answer("tuple", items=items, brackets=s[0] + s[-1], text=s)

    operands, ops = split_relation(s)
    if ops:
        if len(operands) > 8 or not all(operands):
            return Answer("expr", text=s)
        if "~" in ops:
            # "x = 1/3 \approx 0.33": the exact value before the approximation counts;
            # "x \approx 11" has nothing exact, so the approximation is the answer
            k = ops.index("~")
            before = operands[:k + 1]
            bops = ops[:k]
            if len(before) == 1 and is_label(before[0]):
                after_ops = ops[k + 1:]
                rest = operands[k + 1:]
                if not after_ops:
                    return _parse_clean(rest[0], depth + 1)
                return _parse_clean(_join(rest, after_ops), depth + 1)
            if not bops:
                return _parse_clean(before[0], depth + 1)
            return _parse_clean(_join(before, bops), depth + 1)
        items = tuple(_parse_clean(o, depth + 1) for o in operands)
        return Answer("relation", items=items, ops=tuple(ops), text=s)

    if _PM.search(s):
        pm = _expand_pm(s)
        if pm:
            return Answer("list", items=tuple(Answer("expr", text=x) for x in pm), text=s)

    if _WORDY.match(s) and re.search(r"[A-Za-z]{3,}", s) and not re.search(
            r"\b(?:sin|cos|tan|log|ln|exp|sec|csc|cot)\b", s):
        return Answer("text", text=normalize_text(s))
    if ":" in s:
        halves = s.split(":")
        if len(halves) == 2 and all(h.strip() for h in halves):
            items = tuple(_parse_clean(h.strip(), depth + 1) for h in halves)
            if all(i.kind in ("number", "expr") for i in items):
                return Answer("ratio", items=items, text=s)
    return Answer("expr", text=s)


# what clean() made of a degree sign inside an expression ("\sin 30^\circ")
_AS_RADIANS = re.compile(r"^(.+?)\s*\\cdot\\frac\{\\pi\}\{180\}$")


def _parse_item(s: str, depth: int) -> Answer:
    """An element of a list, set, tuple or interval. A number with a degree sign, such
    as the angle of "(6, 235^\\circ)", is that number, as it is for a whole answer: the
    sign is only read as pi/180 inside an expression."""
    s = s.strip()
    m = _AS_RADIANS.match(s) if "180" in s else None
    if m:
        num = parse_number(m.group(1).strip())
        if num is not None:
            return _with(num, degrees=True)
    return _parse_clean(s, depth + 1)


def _valid_digits(digits: str, base: int) -> bool:
    try:
        for part in digits.split("."):
            if part:
                int(part, base)
        return True
    except ValueError:
        return False


def _join(operands: list[str], ops: list[str]) -> str:
    out = operands[0]
    inv = {"<=": r"\le", ">=": r"\ge", "!=": r"\ne", "~": r"\approx", "in": r"\in"}
    for op, o in zip(ops, operands[1:]):
        out += f" {inv.get(op, op)} {o}"
    return out


def _split_cup(s: str) -> list[str]:
    parts = []
    depth = 0
    start = 0
    i = 0
    while i < len(s):
        if s.startswith("\\cup", i) and depth == 0:
            parts.append(s[start:i].strip())
            i += 4
            start = i
            continue
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        i += 1
    parts.append(s[start:].strip())
    return [p for p in parts if p]


def _expand_pm(s: str) -> list[str] | None:
    """``a \\pm b`` -> [``a + b``, ``a - b``]; only one ± is expanded."""
    ms = list(_PM.finditer(s))
    if len(ms) != 1:
        return None
    m = ms[0]
    left, right = s[:m.start()].strip(), s[m.end():].strip()
    if not right:
        return None
    sign = m.group(0) == "\\pm"
    plus = f"{left} + ({right})" if left else f"{right}"
    minus = f"{left} - ({right})" if left else f"-({right})"
    return [plus, minus] if sign else [minus, plus]


def _flatten_pm(items: tuple[Answer, ...]) -> tuple[Answer, ...]:
    out = []
    for it in items:
        if it.kind == "list" and it.text and _PM.search(it.text):
            out.extend(it.items)
        else:
            out.append(it)
    return tuple(out)
