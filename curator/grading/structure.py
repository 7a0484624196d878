"""Find an answer's structure in its text: top-level separators, brackets, relations, labels.

Helpers of :func:`curator.grading.normalize.parse` (and of the comparison, which strips
labels such as ``x =``): splitting at top-level commas, telling an interval's brackets from
a tuple's, splitting ``a <= b < c`` into operands and operators, and recognising a label.
"""

from __future__ import annotations

import re

from curator.grading.answer import parse_number

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
