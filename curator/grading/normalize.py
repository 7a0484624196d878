"""Normalise an answer string and parse it into a typed :class:`Answer`.

The second of the grader's three steps. Everything here is pure string work with
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
from dataclasses import dataclass, field
from fractions import Fraction

from curator.grading.extract import clean_text, strip_math_delimiters

# Longer answers are compared as text only: no model answer to a MATH, GSM8K or ASDiv
# problem is this long, and parsing megabytes of LaTeX is a denial of service.
MAX_ANSWER_CHARS = 1_000
# Lists, sets and matrices with more elements are compared as text only.
MAX_ELEMENTS = 64

# -- cleaning ------------------------------------------------------------------------

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": r"\times ", "\u00f7": r"\div ",
    "\u221a": r"\sqrt", "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u2264": r"\le ",
    "\u2265": r"\ge ", "\u2260": r"\ne ", "\u00b0": r"^\circ", "\u00b7": r"\cdot ",
    "\u2009": " ", "\u00a0": " ", "\u202f": " ", "\u2032": "'", "\uff0c": ",",
    "\u00bd": r"\frac{1}{2}", "\u00bc": r"\frac{1}{4}", "\u00be": r"\frac{3}{4}",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

_SIZING = re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|mleft|mright|left|right|"
                     r"[bB]igg?[lrm]?|middle)(?![A-Za-z])\s*\.?")
_FRAC_CMD = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_BINOM_CMD = re.compile(r"\\[dt]binom(?![A-Za-z])")
_TEXT_CMD = re.compile(r"\\(?:textbf|textit|textrm|textnormal|textsf|texttt|textup|mbox|mathrm|"
                       r"mathbf|mathit|mathsf|mathtt|mathnormal|operatorname\*?|hbox|text)\s*\{")
_SPACES = re.compile(r"(?<!\\)\\[,:;> ]|\\q?quad|~|\\hspace\*?\{[^{}]*\}|\\enspace|\\thinspace")
_NEG_SPACE = re.compile(r"(?<!\\)\\!\s*")
# "12,\\!345" and "12{,}345" are thousands separators wherever they appear
_GROUPED_DIGITS = re.compile(r"(\d)(?:,\\!\s*|\{,\})(?=\d{3}(?!\d))")
# "\frac{1}{29,322,216}": a brace group that holds only a comma-grouped integer (a list
# is never a fraction's numerator or denominator)
_GROUPED_IN_BRACES = re.compile(r"(?<!\\text)\{\s*(\d{1,3}(?:,\d{3})+)\s*\}")
_PHANTOM = re.compile(r"\\phantom\s*(?:\{[^{}]*\}|\S)")
_LEADING_APPROX = re.compile(r"^(?:\\approx|\\sim|~|≈)\s*")
_BRACED_COMMA = re.compile(r"\s*\{\s*,\s*\}\s*")
# "\\frac" written with doubled backslashes by a JSON round trip
_DOUBLED = re.compile(r"(?<!\\)\\\\(?=(?:[dtc]?frac|sqrt|text|pi|cdot|times|left|right|infty|"
                      r"begin|end|circ|le|ge|ne|pm|mp|sin|cos|tan|log|ln|boxed)(?![a-z]))")
# "^{\circ}" and "^\circ"; a "}" after "^\circ" closes an outer group ("\sin^2 2.5^\circ}")
_DEGREE = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|"
                     r"\^\s*\{\\text\{o\}\}")
_TRAILING_DEGREE = re.compile(r"(?:\^\s*(?:\{\s*\\circ\s*\}|\\circ)|\\circ|\\degree|\^\s*\{\\text\{o\}\})\s*(?:\\text\{\s*[CF]\s*\}|[CF])?\s*$")
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*percent\s*\}|\bpercent\b|\bper\s*cent\b)\s*$", re.I)
_CURRENCY = re.compile(r"\\\$|\\textdollar|(?<=\d)\s*\\text\{\s*dollars?\s*\}")
_EMPTY_TEXT = re.compile(r"\\text\{\s*\}")
_AND_OR = re.compile(r"\s*,?\s*\\text\{\s*,?\s*(?:and|or)\s*\}\s*|(?<![A-Za-z\\])\s*,?\s+(?:and|or)\s+(?![A-Za-z]*\})"
                     r"|(?<=[)\]}])\s*(?:and|or)\s*(?=[(\[{\\])", re.I)
_THOUSANDS_COMMA = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_THOUSANDS_SPACE = re.compile(r"^[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_FRAC_SHORT = [
    (re.compile(r"\\frac\s*(\\[A-Za-z]+)\s*([0-9A-Za-z])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*([0-9A-Za-z])\s*(\\[A-Za-z]+)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*([0-9A-Za-z])\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9A-Za-z])"), r"\\frac\1{\2}"),
]
_SQRT_SHORT = re.compile(r"\\sqrt\s*([0-9A-Za-z])")
_WS = re.compile(r"\s+")
_UNIT_TEXT_TAIL = re.compile(r"^(?P<head>.*?)\s*\\text\{(?P<unit>[^{}]*)\}\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*\.?$")
_AMPM = re.compile(r"^\s*(?:a\.?\s*m\.?|p\.?\s*m\.?)\s*$", re.I)
# words never stripped as units: they carry mathematical meaning
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "pi", "infty",
               "and", "or", "i", "e", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
               "mod", "pmod", "gcd", "lcm", "det", "max", "min", "deg"}
_PLAIN_UNIT_TAIL = re.compile(
    r"^(?P<head>.*?[0-9}\)\]])(?P<sp>\s*)(?P<unit>(?:[A-Za-z]+\.?(?:/[A-Za-z]+)?)(?:\s+[A-Za-z]+\.?(?:/[A-Za-z]+)?)*)"
    r"\s*(?:\^\s*\{?\s*[23]\s*\}?|²|³)?\s*$")


def _strip_text_braces(s: str) -> str:
    """``\\text{abc}`` -> ``\\text{abc}`` with every text-like command renamed to
    ``\\text`` (so one rule handles ``\\mbox``, ``\\textbf``, ``\\mathrm``...)."""
    return _TEXT_CMD.sub(r"\\text{", s)


def _balanced(s: str) -> bool:
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def _unwrap_braces(s: str) -> str:
    """``{x}`` -> ``x`` while the outer braces wrap the whole string."""
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}" and _balanced(s[1:-1]):
        s = s[1:-1].strip()
    return s


@dataclass(frozen=True)
class Cleaned:
    text: str
    percent: bool = False
    degrees: bool = False
    unit: str | None = None
    grouped: str | None = None   # "81,256" before its commas were read as thousands


def _ascii_sqrt(s: str) -> str:
    """``42x*sqrt(5x)`` -> ``42x*\\sqrt{5x}`` (the closing "The answer is" line is often
    plain text)."""
    out, i = [], 0
    while True:
        j = s.find("sqrt(", i)
        if j < 0 or (j > 0 and s[j - 1] == "\\"):
            out.append(s[i:] if j < 0 else s[i:j + 5])
            if j < 0:
                return "".join(out)
            i = j + 5
            continue
        depth, k = 0, j + 4
        while k < len(s):
            depth += {"(": 1, ")": -1}.get(s[k], 0)
            if depth == 0:
                break
            k += 1
        if k >= len(s):
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j] + "\\sqrt{" + s[j + 5:k] + "}")
        i = k + 1


def _head_is_math(head: str) -> bool:
    """True when ``head`` holds no English words (so a tail word is a unit, not part of a
    text answer such as "February 3rd") and is a value: it has a digit or is a constant
    or root ("\\pi\\text{ cubic inches}")."""
    bare = re.sub(r"\\[A-Za-z]+", " ", head)
    return re.search(r"[A-Za-z]{2,}", bare) is None and (
        re.search(r"[0-9]", head) is not None or re.search(r"\\(?:pi|sqrt|frac)(?![A-Za-z])", head) is not None)


def clean(s: str) -> Cleaned:
    """Strip what never changes an answer's value; record percent, degrees and units."""
    s = clean_text(s)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    if _DOUBLED.search(s):
        s = _DOUBLED.sub(r"\\", s)
    s = strip_math_delimiters(s)
    if "\\boxed" in s or "\\fbox" in s:
        from curator.grading.extract import last_boxed_answer
        inner = last_boxed_answer(s)
        if inner is not None:
            s = inner
    s = s.replace("$", " ")
    s = _SIZING.sub("", s)
    s = _FRAC_CMD.sub(r"\\frac", s)
    s = _BINOM_CMD.sub(r"\\binom", s)
    s = _strip_text_braces(s)
    s = _GROUPED_DIGITS.sub(r"\1", s)
    if "," in s and "{" in s:
        s = _GROUPED_IN_BRACES.sub(lambda m: "{" + m.group(1).replace(",", "") + "}", s)
    s = _PHANTOM.sub("", s)
    s = _NEG_SPACE.sub("", s)
    s = _SPACES.sub(" ", s)
    s = _BRACED_COMMA.sub(",", s)
    s = _CURRENCY.sub(" ", s)
    s = _EMPTY_TEXT.sub(" ", s)
    s = _WS.sub(" ", s).strip()
    s = s.rstrip(" .;,")
    s = _unwrap_braces(s)
    # "(since ..., the answer is 1)." and "...\right)}." leave one closer too many
    # (a ")" that may close a "[" is a half-open interval "[0, 1)", not one too many)
    if s[-1:] == "}" and s.count("}") == s.count("{") + 1 \
            or s[-1:] == ")" and s.count(")") == s.count("(") + 1 and s.count("[") == s.count("]"):
        s = s[:-1].rstrip()
    s = _LEADING_APPROX.sub("", s)

    degrees = False
    if "circ" in s or "degree" in s:
        m = _TRAILING_DEGREE.search(s)
        # "\sin 30^\circ" ends in a degree sign too, but it is an angle inside a function
        if m and not _TRIG.search(s[:m.start()]):
            degrees = True
            s = s[:m.start()].strip()
        if "circ" in s or "degree" in s:
            # "\\sin(90^\\circ - x)": an angle inside an expression, in radians for sympy
            s = _DEGREE.sub(r"\\cdot\\frac{\\pi}{180}", s)
    percent = False
    m = _PERCENT.search(s)
    if m and m.start() > 0:
        percent = True
        s = s[:m.start()].strip()
    s = _AND_OR.sub(", ", s).strip(" ,")

    unit = None
    for _ in range(2):
        m = _UNIT_TEXT_TAIL.match(s)
        if m and m.group("head").strip() and not _AMPM.match(m.group("unit")):
            word = m.group("unit").strip(" .")
            head = m.group("head").strip()
            if word.lower() in ("degrees", "degree"):
                degrees = True
            if word and _head_is_math(head) or not word:
                unit = (word + " " + (unit or "")).strip() or unit
                s = head
                continue
        m = _PLAIN_UNIT_TAIL.match(s)
        if m and _head_is_math(m.group("head")):
            words = [w.strip(".").lower() for w in m.group("unit").split()]
            attached = not m.group("sp")
            # "10 cm" and "10weeks" are a value and a unit; "10m" may be 10 times m
            # "24 hours a week": an article inside a unit of several words
            ok = all(w not in _MATH_WORDS and (len(w) >= 2 or (i > 0 and w == "a" and i < len(words) - 1))
                     for i, w in enumerate(words)) and not (
                attached and len(words) == 1 and len(words[0]) < 3)
            if ok and not any(_AMPM.match(w) for w in words) and "am" not in words and "pm" not in words:
                if words[0] in ("degrees", "degree"):
                    degrees = True
                unit = " ".join(words)
                s = m.group("head").strip()
                continue
        break
    s = s.rstrip(" .;,")
    m = _PERCENT.search(s)
    if m and m.start() > 0 and not percent:
        percent = True
        s = s[:m.start()].strip()
    if "sqrt(" in s:
        s = _ascii_sqrt(s)
    for pat, rep in _FRAC_SHORT:
        s = pat.sub(rep, s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    grouped = None
    if _THOUSANDS_COMMA.match(s):
        grouped = s
        s = s.replace(",", "")
    elif _THOUSANDS_SPACE.match(s):
        s = s.replace(" ", "")
    return Cleaned(s, percent, degrees, unit, grouped)


# -- typed answers ---------------------------------------------------------------------


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


# -- structure --------------------------------------------------------------------------

_OPEN = "([{"
_CLOSE = ")]}"


def split_top(s: str, seps: str = ",;") -> list[str]:
    """Split at separators outside brackets, ``\\{ \\}``, and ``\\begin ... \\end``."""
    parts = []
    depth = 0
    env = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if s.startswith("\\begin", i):
                env += 1
            elif s.startswith("\\end", i):
                env = max(0, env - 1)
            elif i + 1 < n and s[i + 1] in "{}":
                depth += 1 if s[i + 1] == "{" else -1
                i += 2
                continue
            i += 2 if i + 1 < n and not s[i + 1].isalpha() else 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c in seps and depth == 0 and env == 0:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return parts


def _enclosed(s: str, left: str, right: str) -> bool:
    """True when ``s`` starts with ``left`` and its matching closer is its last char."""
    if not s.startswith(left) or not s.endswith(right):
        return False
    depth = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in "{}" and left != "\\{":
            i += 2
            continue
        if s.startswith("\\{", i) and left == "\\{":
            depth += 1
            i += 2
            continue
        if s.startswith("\\}", i) and left == "\\{":
            depth -= 1
            i += 2
            if depth == 0:
                return i == n
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i == n - 1
        i += 1
    return False


def _interval_brackets(s: str) -> bool:
    """``(a, b)``, ``[a, b)``... : opener and closer each in ``([`` / ``)]`` and the
    opener's group ends at the last char."""
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return False
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


_REL_TOKENS = re.compile(
    r"\\leqslant(?![A-Za-z])|\\geqslant(?![A-Za-z])|\\leq(?![A-Za-z])|\\geq(?![A-Za-z])|"
    r"\\le(?![A-Za-z])|\\ge(?![A-Za-z])|\\neq(?![A-Za-z])|\\ne(?![A-Za-z])|\\lt(?![A-Za-z])|"
    r"\\gt(?![A-Za-z])|\\approx(?![A-Za-z])|\\in(?![A-Za-z])|<=|>=|!=|=|<|>")
_REL_CANON = {r"\leqslant": "<=", r"\geqslant": ">=", r"\leq": "<=", r"\geq": ">=", r"\le": "<=",
              r"\ge": ">=", r"\neq": "!=", r"\ne": "!=", r"\lt": "<", r"\gt": ">",
              r"\approx": "~", r"\in": "in", "<=": "<=", ">=": ">=", "!=": "!=", "=": "=",
              "<": "<", ">": ">"}


def split_relation(s: str) -> tuple[list[str], list[str]]:
    """Operands and relation operators at top level (outside brackets)."""
    operands, ops = [], []
    depth = 0
    env = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if s.startswith("\\begin", i):
                env += 1
            elif s.startswith("\\end", i):
                env -= 1
            if depth == 0 and env == 0:
                m = _REL_TOKENS.match(s, i)
                if m:
                    operands.append(s[start:i])
                    ops.append(_REL_CANON[m.group(0)])
                    i = m.end()
                    start = i
                    continue
            i += 2 if i + 1 < n and not s[i + 1].isalpha() else 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and env == 0 and c in "<>=!":
            m = _REL_TOKENS.match(s, i)
            if m:
                operands.append(s[start:i])
                ops.append(_REL_CANON[m.group(0)])
                i = m.end()
                start = i
                continue
        i += 1
    operands.append(s[start:])
    return [o.strip() for o in operands], ops


# An answer's label: "x", "x_1", "AB", "f(x)", "h^{-1}(x)", "P(x)", "\theta", "k'",
# "(p, q)", "V_1:V_2", "\frac{NO}{BO}": names only, no numbers or operators.
_GREEK = ("alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|"
          "mu|nu|xi|rho|sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|"
          "Xi|Sigma|Phi|Psi|Omega")
_LABEL_PARTS = re.compile(r"_\{?[A-Za-z0-9]+\}?|\^\{?-1\}?|\\(?:frac|text|mathrm|overline|angle|" + _GREEK +
                          r")(?![A-Za-z])|[{}()\[\]:/,' ]")


def is_label(s: str) -> bool:
    """True for a name that an answer may be assigned to ("x = 5", "f(x) = 2x+3")."""
    s = s.strip()
    if not s or len(s) > 40 or parse_number(s):
        return False
    rest = _LABEL_PARTS.sub("", s)
    return bool(re.fullmatch(r"[A-Za-z]{1,12}", rest))


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
