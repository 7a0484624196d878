"""Render query results as a table, CSV, JSON or Markdown (the `--format` option)."""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
from collections.abc import Sequence
from enum import Enum

from rich.console import Console
from rich.table import Table


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def _plain(v):
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _cell(v) -> str:
    v = _plain(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def render(columns: Sequence[str], rows: Sequence[Sequence], fmt: Format | str,
           console: Console | None = None, title: str | None = None) -> None:
    fmt = Format(fmt)
    console = console or Console()
    if fmt is Format.json:
        data = [{c: _plain(v) for c, v in zip(columns, r)} for r in rows]
        console.file.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
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
        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*(_cell(v) for v in r))
        console.print(t)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(_cell(v)) for v in r) + " |" for r in rows]
    return "\n".join(lines)
