"""Where commands may write: the one check every output path goes through.

Rules (docs/output-paths.md):

* Never the warehouse: no output may be a DuckDB database file, the configured
  warehouse (``--db`` / ``$CURATOR_DB`` / the default), or a warehouse's write-ahead log
  (``X.wal``) or spill directory (``X.tmp``), whether or not those exist yet, through a
  symlink or not. No flag overrides this.
* Never silently over someone else's file: an existing non-empty file is replaced only
  when it is recognisably one this tool wrote for the same purpose (each
  :class:`OutputKind` knows its own format), or when the user passes the command's
  explicit overwrite flag.
* Output directories (exports) are replaced only with the overwrite flag *and* only when
  they verifiably hold an export and nothing else; no flag lets a command delete a
  directory it cannot recognise.

Every path-taking output option calls :func:`guard_output` before doing any work (and
writers call it again just before they replace the file), and writes through
:func:`atomic_write`, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError


@dataclass(frozen=True)
class OutputKind:
    """One kind of output: what it is, who writes it, and how to recognise one.

    ``foreign(path)`` returns None when the existing ``path`` is one of ours, otherwise a
    short reason why it is not (shown to the user).
    """

    what: str
    command: str
    foreign: Callable[[Path], str | None]
    directory: bool = False


def _first_json_line(path: Path, limit: int = 1 << 20) -> dict | str:
    """The first line of ``path`` parsed as a JSON object, or a reason why it is not."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(limit)
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    try:
        obj = json.loads(line)
    except ValueError:
        return "its first line is not JSON"
    return obj if isinstance(obj, dict) else "its first line is not a JSON object"


def jsonl_with_keys(required: set[str], exact: bool = False) -> Callable[[Path], str | None]:
    """A recogniser: the first line is a JSON object with the ``required`` keys (and no
    others when ``exact``)."""
    def foreign(path: Path) -> str | None:
        obj = _first_json_line(path)
        if isinstance(obj, str):
            return obj
        keys = set(obj)
        if (keys != required) if exact else not required <= keys:
            return "its records are not in that format"
        return None
    return foreign


def _verdicts_foreign(path: Path) -> str | None:
    obj = _first_json_line(path)
    if isinstance(obj, str):
        return obj
    if "line" not in obj or not isinstance(obj.get("verdict"), dict) \
            or "status" not in obj["verdict"]:
        return "its records carry no `verdict`"
    return None


def _report_foreign(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if not head.startswith(b"<!DOCTYPE html>") or b"<title>curator report</title>" not in head:
        return "it is not a curator report page"
    return None


PLOT_NAME = re.compile(r"\d\d-[a-z0-9-]+\.png$")


def _plots_foreign(path: Path) -> str | None:
    for entry in os.scandir(path):
        if not (entry.is_file(follow_symlinks=False) and PLOT_NAME.match(entry.name)):
            return f"it holds {entry.name!r}, which a report does not write"
        with open(entry.path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return f"{entry.name} is not a PNG"
    return None


def _port_file_foreign(path: Path) -> str | None:
    if path.stat().st_size > 512:
        return "it is too long to be a port file"
    text = path.read_bytes().decode("utf-8", "replace")
    if not re.fullmatch(r"https?://\S+\n?", text):
        return "it does not hold just a URL"
    return None


REJECTS = OutputKind("rejects file", "--skip-invalid",
                     jsonl_with_keys({"path", "line", "record", "reason", "raw"}, exact=True))
VERDICTS = OutputKind("verdicts file", "curator check --file", _verdicts_foreign)
REPORT = OutputKind("report page", "curator report", _report_foreign)
REPORT_PLOTS = OutputKind("report plots directory", "curator report", _plots_foreign,
                          directory=True)
PORT_FILE = OutputKind("port file", "curator serve --port-file", _port_file_foreign)
SERVER_LOG = OutputKind("request log", "curator serve --log",
                        jsonl_with_keys({"seq", "t", "kind", "path"}))


# -- the warehouse -----------------------------------------------------------------------

def is_duckdb_file(path: Path) -> bool:
    """A DuckDB database file has b"DUCK" at offset 8."""
    try:
        with open(path, "rb") as fh:
            return fh.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


def _warehouse_reason(path: Path, warehouse: Path | None) -> str | None:
    from curator.warehouse import resolve_db_path

    target = path.resolve()
    dbs = {resolve_db_path(None).resolve()}
    if warehouse is not None:
        dbs.add(Path(warehouse).resolve())
    for db in dbs:
        if target == db:
            return "it is the warehouse"
        if target in (db.with_name(db.name + ".wal"), db.with_name(db.name + ".tmp")):
            return f"it belongs to the warehouse {db}"
    if target.is_file() and is_duckdb_file(target):
        return "it is a DuckDB database file"
    for suffix in (".wal", ".tmp"):
        if target.name.endswith(suffix):
            base = target.with_name(target.name[:-len(suffix)])
            if is_duckdb_file(base):
                return f"it belongs to the DuckDB database {base}"
    if target.is_dir():
        for entry in os.scandir(target):
            if entry.is_file(follow_symlinks=False) and is_duckdb_file(Path(entry.path)):
                return f"it holds the DuckDB database {entry.name}"
    return None


# -- the check ---------------------------------------------------------------------------

def guard_output(path: str | os.PathLike, kind: OutputKind, *, option: str,
                 overwrite: bool = False, overwrite_flag: str | None = None,
                 warehouse: Path | None = None) -> Path:
    """Refuse ``path`` as ``option``'s output unless writing it destroys nothing (module
    doc); returns it as a Path. Raises :class:`CuratorError` naming the path and why."""
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    reason = _warehouse_reason(path, warehouse)
    if reason:
        raise CuratorError(f"{where}: refusing to write there: {reason}. Choose another path.")
    if path.is_symlink() and not path.exists():
        raise CuratorError(f"{where}: is a dangling symbolic link; choose another path")
    if not path.exists():
        return path
    if kind.directory:
        if not path.is_dir():
            raise CuratorError(f"{where}: exists and is not a directory; choose another path")
        if not any(path.iterdir()):
            return path
        if overwrite_flag and not overwrite:
            raise CuratorError(f"{path} is not empty; pass {overwrite_flag} to replace it (only "
                               f"a previous {kind.what} is ever replaced), or choose another "
                               "path")
        why = kind.foreign(path)
        if why:
            raise CuratorError(
                f"{path} is not empty and is not a previous {kind.what} of `{kind.command}` "
                f"({why}); refusing to replace it"
                f"{' even with ' + overwrite_flag if overwrite_flag else ''}. Choose another path.")
        return path
    if path.is_dir():
        raise CuratorError(f"{where}: is a directory; name the file to write")
    if not path.is_file():
        raise CuratorError(f"{where}: exists and is not a regular file; choose another path")
    if path.stat().st_size == 0 or overwrite:
        return path
    why = kind.foreign(path)
    if why:
        hint = f", or pass {overwrite_flag} to replace it" if overwrite_flag else ""
        raise CuratorError(f"{where}: exists and is not a {kind.what} written by "
                           f"`{kind.command}` ({why}); refusing to replace it. Choose another "
                           f"path{hint}.")
    return path


@contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator:
    """Write ``path`` through a unique hidden temporary file beside it, renamed over
    ``path`` on success and removed on failure (Ctrl-C included); the file gets the mode
    a new file would (0666 less the umask). Call :func:`guard_output` first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
