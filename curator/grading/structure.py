"""Find an answer's structure in its text: top-level separators, brackets, relations, labels.

Helpers of :func:`curator.grading.normalize.parse` (and of the comparison, which strips
labels such as ``x =``): splitting at top-level commas, telling an interval's brackets from
a tuple's, splitting ``a <= b < c`` into operands and operators, and recognising a label.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from curator.grading.answer import parse_number

_OPEN = "([{"
_CLOSE = ")]}"


def _top_level_cuts(s: str, stops: str, cut_at: Callable[[str, int], int | None], *,
                    escaped_braces: bool, clamp_env: bool) -> list[tuple[int, int]]:
    """The spans ``(i, j)`` of ``s`` that ``cut_at`` claims at top level, left to right.

    The one walk behind :func:`split_top` and :func:`split_relation`. It keeps the bracket
    depth (``( [ {`` open, ``) ] }`` close, and ``\\{`` / ``\\}`` too when ``escaped_braces``)
    and the environment depth (``\\begin`` opens, ``\\end`` closes, never below 0 when
    ``clamp_env``). A backslash before a non-letter is passed over together with that char
    (``\\,``, ``\\{``); before a letter only the backslash is.

    At each position where both depths are 0 and whose char is in ``stops`` (a bracket never
    is; a backslash is when ``stops`` holds one), ``cut_at(s, i)`` returns the end of the
    separator starting at ``i``, or None for no cut; the walk goes on from that end.
    """
    cuts = []
    depth = 0
    env = 0
    n = len(s)
    find = _marks(stops).search
    m = find(s)
    while m:
        i = m.start()
        c = s[i]
        if c in _OPEN:
            depth += 1
            m = find(s, i + 1)
            continue
        if c in _CLOSE:
            depth -= 1
            m = find(s, i + 1)
            continue
        step = 1
        if c == "\\":
            if s.startswith("\\begin", i):
                env += 1
            elif s.startswith("\\end", i):
                env = max(0, env - 1) if clamp_env else env - 1
            elif escaped_braces and i + 1 < n and s[i + 1] in "{}":
                depth += 1 if s[i + 1] == "{" else -1
                m = find(s, i + 2)
                continue
            if i + 1 < n and not s[i + 1].isalpha():
                step = 2
        if c in stops and depth == 0 and env == 0:
            end = cut_at(s, i)
            if end is not None:
                cuts.append((i, end))
                m = find(s, end)
                continue
        m = find(s, i + step)
    return cuts


@functools.lru_cache(maxsize=64)
def _marks(stops: str) -> re.Pattern:
    """The chars the walk of :func:`_top_level_cuts` acts on (brackets, backslash and
    ``stops``): it jumps from one to the next over everything else."""
    return re.compile("[" + re.escape("\\" + _OPEN + _CLOSE + stops) + "]")


def _pieces(s: str, cuts: list[tuple[int, int]]) -> list[str]:
    """``s`` without the spans ``cuts``: the text before, between and after them."""
    starts = [0] + [end for _, end in cuts]
    ends = [i for i, _ in cuts] + [len(s)]
    return [s[a:b] for a, b in zip(starts, ends)]


def split_top(s: str, seps: str = ",;") -> list[str]:
    """Split at separators outside brackets, ``\\{ \\}``, and ``\\begin ... \\end``."""
    # A backslash starts a command: it is never a separator.
    cuts = _top_level_cuts(s, seps.replace("\\", ""), lambda _, i: i + 1,
                           escaped_braces=True, clamp_env=True)
    return _pieces(s, cuts)


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


def _relation_end(s: str, i: int) -> int | None:
    """The end of the relation token starting at ``s[i]``, or None."""
    m = _REL_TOKENS.match(s, i)
    return m.end() if m else None


def split_relation(s: str) -> tuple[list[str], list[str]]:
    """Operands and relation operators at top level (outside brackets)."""
    cuts = _top_level_cuts(s, "\\<>=!", _relation_end,
                           escaped_braces=False, clamp_env=False)
    operands = [o.strip() for o in _pieces(s, cuts)]
    return operands, [_REL_CANON[s[i:j]] for i, j in cuts]


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
