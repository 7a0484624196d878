"""Render results as a table, CSV, JSON or Markdown (the `--format` option).

Tables fit the console's width (``COLUMNS`` is honoured when output is piped) without ever
breaking a number across lines: when a table is too wide it first switches to a compact
layout, then narrows the text columns (their cells fold), then folds long headers at their
underscores, and only then leaves text columns out, saying which on stderr. JSON output is
always valid JSON (NaN and infinities become null).
"""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
import math
import sys
from collections.abc import Sequence
from enum import Enum

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def _plain(v):
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    if hasattr(v, "__fspath__"):
        return str(v)
    return v


def plain(v):
    """A value made of JSON types only (dates as ISO text, decimals as floats, NaN as None)."""
    return _plain(v)


def dumps(data) -> str:
    """Valid JSON text of ``data`` (see :func:`plain`), indented for reading."""
    return json.dumps(_plain(data), ensure_ascii=False, indent=2, allow_nan=False)


def _cell(v) -> str:
    v = _plain(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)


def render(columns: Sequence[str], rows: Sequence[Sequence], fmt: Format | str,
           console: Console | None = None, title: str | None = None) -> None:
    fmt = Format(fmt)
    console = console or Console()
    if fmt is Format.json:
        data = [{c: v for c, v in zip(columns, r)} for r in rows]
        console.file.write(dumps(data) + "\n")
    elif fmt is Format.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(v) for v in r])
        console.file.write(buf.getvalue())
    elif fmt is Format.markdown:
        console.file.write(markdown_table(columns, rows) + "\n")
    else:
        render_table(columns, rows, console, title=title)


# -- tables that fit ---------------------------------------------------------------------

NUMBER_HEADER_FLOOR = 5  # a header above narrow numbers folds to no fewer characters
TEXT_FLOOR = 10  # a text column is narrowed to this many characters before any is left out


def _line_width(s: str) -> int:
    return max((len(line) for line in s.split("\n")), default=0)


def _header_word(h: str) -> int:
    """Width of the widest piece of a header folded at its underscores ('completion_')."""
    parts = h.split("_")
    return max(len(p) + (i < len(parts) - 1) for i, p in enumerate(parts))


def fold_header(h: str, width: int) -> str:
    """Break a header over lines at its underscores (then anywhere) to fit ``width``."""
    if len(h) <= width or width < 1:
        return h
    lines: list[str] = []
    cur = ""
    parts = h.split("_")
    for i, p in enumerate(parts):
        piece = p + ("_" if i < len(parts) - 1 else "")
        if cur and len(cur) + len(piece) > width:
            lines.append(cur)
            cur = ""
        cur += piece
    lines.append(cur)
    out: list[str] = []
    for line in lines:
        out += [line[i:i + width] for i in range(0, len(line), width)] or [""]
    return "\n".join(out)


class Layout:
    """Which columns a table shows, how wide each is, and whether it is compact."""

    def __init__(self, keep: list[int], widths: list[int] | None, compact: bool) -> None:
        self.keep, self.widths, self.compact = keep, widths, compact


def layout(columns: Sequence[str], cells: list[list[str]], numeric: list[bool],
           width: int) -> Layout:
    """Fit a table into ``width`` characters; see the module docstring for the order."""
    n = len(columns)
    nat = [max([len(columns[i])] + [_line_width(r[i]) for r in cells]) or 1 for i in range(n)]
    cellw = [max([_line_width(r[i]) for r in cells], default=0) or 1 for i in range(n)]
    distinct = [len({r[i] for r in cells if r[i]}) for i in range(n)]
    keep = list(range(n))

    def fit_text(w: dict[int, int], texts: list[int], room: int) -> bool:
        """Share ``room`` among the text columns, none below its floor; False if it can't."""
        floor = {i: min(nat[i], TEXT_FLOOR) for i in texts}
        if room < sum(floor.values()):
            return False
        extra = room - sum(floor.values())
        want = {i: nat[i] - floor[i] for i in texts}
        total_want = sum(want.values())
        for i in texts:
            w[i] = floor[i] + (want[i] if total_want <= extra
                               else extra * want[i] // max(1, total_want))
        return True

    while True:
        k = len(keep)
        if sum(nat[i] for i in keep) + 3 * k + 1 <= width:
            return Layout(keep, None, compact=False)
        budget = width - (k - 1)  # compact: one space between columns, no borders
        nums = [i for i in keep if numeric[i]]
        texts = [i for i in keep if not numeric[i]]
        # numbers as wide as their widest value; their headers fold at underscores
        w = {i: max(cellw[i], min(nat[i], _header_word(columns[i]))) for i in nums}
        if fit_text(w, texts, budget - sum(w.values())):
            return Layout(keep, [w[i] for i in keep], compact=True)
        droppable = [i for i in texts if i != keep[0]]
        if droppable:
            # leave out the column that says least (fewest distinct values), rightmost first
            keep.remove(min(reversed(droppable), key=lambda i: distinct[i]))
            continue
        # no text column left to leave out: headers of numbers fold anywhere (not below a
        # few letters a line), then the first column goes, then numbers stay whole regardless
        w = {i: max(cellw[i], min(nat[i], NUMBER_HEADER_FLOOR)) for i in nums}
        if fit_text(w, texts, budget - sum(w.values())):
            return Layout(keep, [w[i] for i in keep], compact=True)
        if texts:
            keep.remove(texts[0])
            continue
        return Layout(keep, [w[i] for i in keep], compact=True)


def _err_note(msg: str) -> None:
    print(msg, file=sys.stderr)


def render_table(columns: Sequence[str], rows: Sequence[Sequence], console: Console,
                 title: str | None = None) -> None:
    cells = [[_cell(v) for v in r] for r in rows]
    numeric = [bool(rows) and all(r[i] is None or _is_number(r[i]) for r in rows)
               and any(r[i] is not None for r in rows) for i in range(len(columns))]
    lay = layout(columns, cells, numeric, console.width)
    if lay.compact:
        t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0),
                  collapse_padding=True, pad_edge=False)
    else:
        t = Table(title=title, show_lines=False)
    for pos, i in enumerate(lay.keep):
        w = lay.widths[pos] if lay.widths else None
        header = fold_header(columns[i], w) if w else columns[i]
        t.add_column(header, overflow="fold", no_wrap=False, width=w,
                     justify="right" if numeric[i] else "left")
    for r in cells:
        # Text, not str: values are data, never rich markup or :emoji: codes
        t.add_row(*(Text(r[i]) for i in lay.keep))
    needed = (sum(lay.widths) + len(lay.keep) - 1) if lay.widths else 0
    if needed > console.width:
        # nothing left to narrow: print at the width the numbers need rather than break one
        wide = Console(file=console.file, width=needed, color_system=None,
                       force_terminal=False, highlight=False)
        wide.print(t)
    else:
        console.print(t)
    left_out = [columns[i] for i in range(len(columns)) if i not in lay.keep]
    if left_out:
        _err_note(f"(left out to fit {console.width} columns: {', '.join(left_out)}; "
                  "set COLUMNS wider or use --format json for every column)")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(_cell(v)) for v in r) + " |" for r in rows]
    return "\n".join(lines)
