"""Small LaTeX text utilities shared by the loaders and the grader."""

from __future__ import annotations

import re

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)\b")


def close_brace(text: str, start: int, stop: int | None = None) -> int | None:
    """Index just after the brace group opening at ``text[start] == '{'``, scanning no
    further than ``stop`` (default: the end); None when the group does not close."""
    depth = 0
    i = start
    n = len(text) if stop is None else min(stop, len(text))
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # an escaped brace (\{ or \}) does not open or close a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at ``text[start] == '{'`` and the index
    after its closing brace, or None when the braces never balance."""
    end = close_brace(text, start)
    return None if end is None else (text[start + 1:end - 1], end)


def boxed_contents(text: str) -> list[str]:
    """Every ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed) and ``\\boxed 5``
    in order of appearance. Unbalanced groups are skipped."""
    out = []
    for m in _BOX_CMD.finditer(text):
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            got = _braced(text, j)
            if got is not None:
                out.append(got[0])
        elif m.group(0) == "\\boxed" and j > m.end():
            # "\boxed 5": the argument is the next token, up to a space, $ or end.
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append(tok.group(0).rstrip(".,"))
    return out


def last_boxed(text: str) -> str | None:
    """The content of the last boxed expression, or None when there is none."""
    found = boxed_contents(text)
    return found[-1] if found else None
