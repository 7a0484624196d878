"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations


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
