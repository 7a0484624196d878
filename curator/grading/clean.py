"""Clean an answer string before it is parsed: the first half of the grader's second step.

Strips what never changes an answer's value (LaTeX spacing and sizing commands, math
delimiters, ``\\$``, thousands separators, ``\\text`` wrappers, degree signs, trailing
unit words) and records on a :class:`Cleaned` what it took off that still matters
(percent, degrees, the unit, how digits were grouped). Pure string work with linear-time
regular expressions; :func:`curator.grading.normalize.parse` calls :func:`clean` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curator.grading.extract import clean_text, strip_math_delimiters

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
