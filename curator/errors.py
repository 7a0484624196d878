"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations

import sys
from typing import Callable


class CuratorError(Exception):
    """An error caused by input or environment, with a message that says what to do."""


class InputError(CuratorError):
    """A bad record or file, located by path and line (or record number)."""

    def __init__(self, problem: str, path: str | None = None, line: int | None = None,
                 record: str | None = None):
        self.problem = problem
        self.path = path
        self.line = line
        self.record = record
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "")
        if record is not None:
            where = f"{where} ({record})" if where else record
        super().__init__(f"{where}: {problem}" if where else problem)


class WarehouseBusy(CuratorError):
    """Another process held the warehouse lock for longer than we were willing to wait."""


def is_interrupt(exc: BaseException | None) -> bool:
    """Ctrl-C: Python's KeyboardInterrupt, or the error DuckDB raises for a query that
    SIGINT stopped (RuntimeError "Query interrupted" in DuckDB 2, InterruptException in
    older versions, or its error around a KeyboardInterrupt raised while it read a
    registered Python object), possibly wrapped in another error (``raise ... from None`` ends the
    chain: what was raised so replaces the interrupt)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "InterruptException" \
                or (type(exc) is RuntimeError and str(exc) == "Query interrupted") \
                or _duckdb_wrapped_interrupt(exc):
            return True
        exc = exc.__cause__ if exc.__cause__ is not None else (
            None if exc.__suppress_context__ else exc.__context__)
    return False


def _duckdb_wrapped_interrupt(exc: BaseException) -> bool:
    """A DuckDB error carrying a KeyboardInterrupt raised in Python while DuckDB read a
    registered Python object ("reading the schema of the object registered as 'x'
    failed: KeyboardInterrupt: ")."""
    return type(exc).__module__.lstrip("_") == "duckdb" and "KeyboardInterrupt:" in str(exc)


def run_cli(app: Callable[[], object], console, interrupted: str,
            cleanup: Callable[[], None] | None = None) -> None:
    """Run a Typer ``app`` as a console script: a :class:`CuratorError` is printed on
    ``console`` without a traceback (exit 2), Ctrl-C prints ``interrupted`` (exit 130),
    also when it stopped a DuckDB query (:func:`is_interrupt`); ``cleanup`` runs last
    whatever happened."""
    try:
        app()
    except SystemExit as exc:
        # Typer turns a Ctrl-C that no command handled into a silent exit 130: say it.
        if exc.code == 130 and is_interrupt(exc.__context__):
            console.print(interrupted)
        raise
    except CuratorError as exc:
        # the message as written: never read as console markup (a "[warehouse]" in it
        # would otherwise vanish)
        from rich.text import Text
        console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False,
                      soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print(interrupted)
        sys.exit(130)
    except Exception as exc:
        if not is_interrupt(exc):
            raise
        console.print(interrupted)
        sys.exit(130)
    finally:
        if cleanup is not None:
            cleanup()
