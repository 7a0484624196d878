"""What every `curator` command shares: the consoles, the common options, opening the
warehouse, and the output conventions (docs/cli.md).

Conventions:
- stdout carries the command's result only: a table, or with ``--format json`` one JSON
  document. Progress, notes, warnings and "wrote ..." lines go to stderr.
- ``--format table|json`` on every command that reports something (``sql``, ``stats``,
  ``check``, ``generate`` and ``batch`` also take csv and markdown).
- A command that writes to the warehouse names it on stderr; a warehouse created by any
  command other than ``curator init`` is announced on stderr with its path.

Command modules import from here, never from :mod:`curator.cli` (which imports them).
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console, ConsoleDimensions

from curator.output import Format, dumps

if TYPE_CHECKING:
    from curator.warehouse import Warehouse

PIPE_WIDTH = 200  # piped output without $COLUMNS: wide enough that ids are not folded


def _width(stream) -> int | None:
    """None (rich's own choice: the terminal, or $COLUMNS) unless piped without $COLUMNS."""
    cols = os.environ.get("COLUMNS", "")
    if cols.strip().isdigit() and int(cols) > 0:
        return int(cols)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty else PIPE_WIDTH


class _StdConsole(Console):
    """A console on sys.stdout or sys.stderr as they are at print time (tests swap them),
    whose width follows the rule of :func:`_width` at print time too."""

    def __init__(self, stderr: bool = False) -> None:
        super().__init__(stderr=stderr)
        self._std_err = stderr

    @property
    def size(self) -> ConsoleDimensions:  # type: ignore[override]
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        w = _width(sys.stderr if self._std_err else sys.stdout)
        return size if w is None else ConsoleDimensions(w, size.height)

    @size.setter
    def size(self, value) -> None:
        Console.size.fset(self, value)  # type: ignore[attr-defined]


console = _StdConsole()
err_console = _StdConsole(stderr=True)


# -- options ---------------------------------------------------------------------------

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", help="Warehouse file (default: $CURATOR_DB or warehouse/curator.duckdb).",
    envvar="CURATOR_DB", show_default=False)]


class ReportFormat(str, Enum):
    """``--format`` of commands whose result is a report: a table for people, JSON for scripts."""
    table = "table"
    json = "json"


ReportFormatOption = Annotated[ReportFormat, typer.Option(
    "--format", "-f", help="table | json: JSON goes to stdout, and nothing else does.")]
TableFormatOption = Annotated[Format, typer.Option(
    "--format", "-f", help="table | json | csv | markdown (JSON goes to stdout, and nothing else does).")]


# -- output ----------------------------------------------------------------------------

def emit_json(data) -> None:
    """Write one JSON document to stdout."""
    console.file.write(dumps(data) + "\n")
    console.file.flush()


def note(msg: str, style: str | None = None) -> None:
    """A message for people, on stderr (never mixed into the result on stdout)."""
    err_console.print(f"[{style}]{msg}[/{style}]" if style else msg, highlight=False,
                      soft_wrap=True)


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False, soft_wrap=True)


def wrote_to(wh: "Warehouse") -> None:
    """Name the warehouse a writing command wrote to (stderr)."""
    note(f"warehouse: {wh.path.resolve()}")


# -- the warehouse ---------------------------------------------------------------------

def open_warehouse(db: Path | None) -> "Warehouse":
    """The warehouse of ``--db``/$CURATOR_DB, which announces on stderr if a command has to
    create it (only `curator init` creates one quietly)."""
    from curator.warehouse import Warehouse

    def announce(path: Path, made_dirs: list[Path]) -> None:
        made = f" (and created the director{'ies' if len(made_dirs) > 1 else 'y'} " \
               f"{', '.join(str(d) for d in made_dirs)})" if made_dirs else ""
        err_console.print(f"[bold yellow]NEW WAREHOUSE:[/bold yellow] no warehouse was at "
                          f"{path.resolve()}, so a new empty one was created there{made}. If "
                          f"you meant an existing one, check --db / $CURATOR_DB.",
                          highlight=False, soft_wrap=True)

    return Warehouse(db, on_create=announce)
