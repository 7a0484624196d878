"""The embedded DuckDB warehouse: where it lives, its schema, and safe access to it.

DuckDB lets one process write a database file, or several processes read it, but not
both at once. Long jobs (generation, grading) therefore never keep the file open: they
open it, commit a short batch, and close it again, and everyone who finds the file locked
waits with backoff instead of failing. Use :meth:`Warehouse.read` and
:meth:`Warehouse.write` for every access.

Schema changes are numbered SQL files in ``schemas/migrations``, applied in order on
open and recorded in ``schema_migrations``, so an old warehouse is upgraded in place.
Views in ``warehouse/views`` are derived state: they are re-created whenever their text
changes.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from curator.errors import CuratorError, WarehouseBusy

DEFAULT_DB = Path("warehouse") / "curator.duckdb"
ENV_DB = "CURATOR_DB"
ENV_LOCK_TIMEOUT = "CURATOR_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 120.0
# After a write commits, the same process waits this long before it takes the lock
# again, so that readers and other writers who are waiting get their turn.
WRITE_GAP = 0.05

_REPO_ROOT = Path(__file__).resolve().parent.parent
_PACKAGED = Path(__file__).resolve().parent / "_contracts"


def contract_dir(name: str) -> Path:
    """Directory of the SQL contracts: the source tree's, or the copy inside a wheel."""
    source = {"migrations": _REPO_ROOT / "schemas" / "migrations",
              "schemas": _REPO_ROOT / "schemas",
              "views": _REPO_ROOT / "warehouse" / "views"}[name]
    if source.is_dir():
        return source
    packaged = {"migrations": _PACKAGED / "schemas" / "migrations",
                "schemas": _PACKAGED / "schemas",
                "views": _PACKAGED / "views"}[name]
    return packaged


def resolve_db_path(db: str | os.PathLike | None = None) -> Path:
    """``--db`` wins, then ``CURATOR_DB``, then ``warehouse/curator.duckdb`` here."""
    if db:
        return Path(db)
    env = os.environ.get(ENV_DB)
    return Path(env) if env else DEFAULT_DB


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    out = []
    for f in sorted(contract_dir("migrations").glob("*.sql")):
        m = re.match(r"(\d+)_(.+)\.sql$", f.name)
        if not m:
            raise CuratorError(f"{f}: migration files must be named NNN_name.sql")
        out.append((int(m.group(1)), m.group(2), f.read_text()))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise CuratorError(f"duplicate migration numbers in {contract_dir('migrations')}")
    return out


def _views_sql() -> str:
    return "\n".join(f.read_text() for f in sorted(contract_dir("views").glob("*.sql")))


def _is_lock_conflict(exc: Exception) -> bool:
    msg = str(exc)
    return "Could not set lock" in msg or "Conflicting lock" in msg


class Warehouse:
    """Access to one warehouse file. Cheap to create; holds no connection between uses."""

    def __init__(self, path: str | os.PathLike | None = None,
                 lock_timeout: float | None = None,
                 on_create: Callable[[Path, list[Path]], None] | None = None):
        """``on_create(path, directories_made)`` is called when a write finds no warehouse
        and creates one (explicit :meth:`init` calls excepted)."""
        self.path = resolve_db_path(path)
        self.on_create = on_create
        if lock_timeout is None:
            raw = os.environ.get(ENV_LOCK_TIMEOUT)
            if raw is None:
                lock_timeout = DEFAULT_LOCK_TIMEOUT
            else:
                try:
                    lock_timeout = float(raw)
                except ValueError:
                    lock_timeout = float("nan")
                if not lock_timeout >= 0:  # also refuses nan
                    raise CuratorError(f"{ENV_LOCK_TIMEOUT} must be a number of seconds "
                                       f"(got {raw!r})")
        self.lock_timeout = lock_timeout
        self._ready = False
        self._last_write_end = 0.0

    # -- connections ---------------------------------------------------------------

    def _check_is_warehouse_file(self) -> None:
        # DuckDB opens other files (JSON, CSV, Parquet) as an in-memory database with
        # views over them, so look at the header first: a DuckDB file has b"DUCK" at 8.
        if self.path.is_dir():
            raise CuratorError(f"{self.path} is a directory, not a DuckDB warehouse file")
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(12)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CuratorError(f"cannot open warehouse {self.path}: {exc.strerror or exc}") from None
        if head and head[8:12] != b"DUCK":
            raise CuratorError(f"{self.path} is not a DuckDB warehouse file (give --db or "
                               "$CURATOR_DB the warehouse's .duckdb file)")

    def _connect(self, read_only: bool,
                 lock_timeout: float | None = None) -> duckdb.DuckDBPyConnection:
        return self._open_waiting(lambda: duckdb.connect(str(self.path), read_only=read_only),
                                  lock_timeout)

    def _open_waiting(self, open_fn,
                      lock_timeout: float | None = None) -> duckdb.DuckDBPyConnection:
        """``open_fn()``, retried with backoff while another process holds the file's lock
        (for ``lock_timeout`` seconds, default the warehouse's)."""
        self._check_is_warehouse_file()
        patience = self.lock_timeout if lock_timeout is None else lock_timeout
        deadline = time.monotonic() + patience
        delay = 0.005
        while True:
            try:
                return open_fn()
            except duckdb.IOException as exc:
                if not _is_lock_conflict(exc):
                    raise CuratorError(f"cannot open warehouse {self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"warehouse {self.path} stayed locked by another process for "
                        f"{patience:.0f}s ({exc}). Wait for it to finish, or raise "
                        f"{ENV_LOCK_TIMEOUT}.") from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.05)

    def exists(self) -> bool:
        return self.path.exists()

    def init(self) -> bool:
        """Create the warehouse if needed and bring its schema up to date.

        Returns True if the file was created.
        """
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect(read_only=False)
        try:
            self._upgrade(con)
        finally:
            con.close()
        self._ready = True
        return created

    def _needs_upgrade(self, con: duckdb.DuckDBPyConnection) -> bool:
        try:
            applied = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
            views = con.execute(
                "SELECT value FROM warehouse_meta WHERE key = 'views_hash'").fetchall()
        except duckdb.CatalogException:
            return True
        # Compare the whole set, not the highest number: a migration numbered below one
        # already applied (written on another branch) must still be applied.
        missing = {v for v, _, _ in migrations()} - applied
        return bool(missing) or not views or views[0][0] != self._views_hash()

    def _views_hash(self) -> str:
        return hashlib.sha256(_views_sql().encode()).hexdigest()

    def _upgrade(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                           version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,
                           applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""")
        con.execute("""CREATE TABLE IF NOT EXISTS warehouse_meta (
                           key VARCHAR PRIMARY KEY, value VARCHAR)""")
        applied = {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in migrations():
            if version in applied:
                continue
            # Each migration and its record commit together: a crash leaves either
            # the old schema or the new one, never half of it.
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                            [version, name])
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                raise CuratorError(f"migration {version:03d}_{name} failed on {self.path}: "
                                   f"{exc}; the warehouse is unchanged") from exc
        digest = self._views_hash()
        row = con.execute("SELECT value FROM warehouse_meta WHERE key = 'views_hash'").fetchone()
        if row is None or row[0] != digest:
            con.execute("BEGIN TRANSACTION")
            con.execute(_views_sql())
            con.execute("INSERT OR REPLACE INTO warehouse_meta VALUES ('views_hash', ?)", [digest])
            con.execute("COMMIT")

    def _ensure_ready(self, create: bool) -> None:
        if self._ready:
            return
        if not self.path.exists():
            if not create:
                raise CuratorError(
                    f"no warehouse at {self.path}: run `curator init` or `curator load` first "
                    f"(or point --db / {ENV_DB} at an existing one)")
            missing = [d for d in [self.path.parent, *self.path.parent.parents]
                       if not d.exists()][::-1]
            self.init()
            if self.on_create is not None:
                self.on_create(self.path, missing)
            return
        con = self._connect(read_only=True)
        try:
            stale = self._needs_upgrade(con)
        finally:
            con.close()
        if stale:
            self.init()
        self._ready = True

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection, closed on exit. Waits while a writer commits."""
        self._ensure_ready(create=False)
        con = self._connect(read_only=True)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def read_sealed(self, prepare=None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that can read the warehouse and can change nothing: no file
        outside it can be read or written and no setting changed, whatever SQL it runs.

        The warehouse is attached READ_ONLY to a private in-memory database (so nothing
        else in this process shares its settings), made the default catalog, and then
        DuckDB's own controls seal it: ``enable_external_access = false`` (no COPY TO,
        EXPORT, ATTACH, INSTALL/LOAD, file readers, persistent secrets) and
        ``lock_configuration = true`` (no SET/PRAGMA/RESET of any setting, which also
        rules out profiling and query-log files). ``prepare(con)``, if given, runs
        before the seal (e.g. to copy a file the user named into a temporary table).
        Temporary tables and views live in memory and vanish on close.
        """
        self._ensure_ready(create=False)
        con = self._open_waiting(self._attach_read_only)
        try:
            if prepare is not None:
                prepare(con)
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            yield con
        finally:
            con.close()

    def _attach_read_only(self) -> duckdb.DuckDBPyConnection:
        # The catalog gets the name `duckdb.connect(path)` would give it (the file's
        # stem), so qualified names such as curator.main.problems keep working.
        name = self.path.stem
        if not name or name.lower() in ("memory", "temp", "system", "main"):
            name = "warehouse"
        con = duckdb.connect(":memory:", config={
            # nothing is downloaded or installed, and secrets never reach the disk
            "autoinstall_known_extensions": False,
            "allow_persistent_secrets": False,
            # where a plain read-only connection to this file would spill big sorts
            "temp_directory": str(self.path) + ".tmp",
        })
        try:
            con.execute(f"ATTACH {_sql_literal(str(self.path))} AS {_sql_ident(name)} "
                        f"(READ_ONLY)")
            con.execute(f"USE {_sql_ident(name)}")
        except BaseException:
            con.close()
            raise
        return con

    @contextmanager
    def write(self, lock_timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection inside one transaction: committed on normal exit,
        rolled back on any exception (Ctrl-C included), closed either way.
        ``lock_timeout`` overrides how long to wait for another process's lock (a writer
        with other work to do tries briefly and comes back later).

        Keep the body short: other processes wait while it runs.
        """
        self._ensure_ready(create=True)
        con = self._connect_for_write(lock_timeout)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()
            self._last_write_end = time.monotonic()

    @contextmanager
    def write_autocommit(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection without an enclosing transaction (for callers that
        commit several batches themselves)."""
        self._ensure_ready(create=True)
        con = self._connect_for_write()
        try:
            yield con
        finally:
            con.close()
            self._last_write_end = time.monotonic()

    def _connect_for_write(self, lock_timeout: float | None = None) -> duckdb.DuckDBPyConnection:
        wait = self._last_write_end + WRITE_GAP - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return self._connect(read_only=False, lock_timeout=lock_timeout)


STUDENT_MODEL_PREFIX = "student:"
# Model names `distill` gives the samples it writes: 'student:<adapter>:<mode>' for a
# trained student, 'base:<model>' for an untrained base model being evaluated.
STUDENT_MODEL_PREFIXES = (STUDENT_MODEL_PREFIX, "base:")


def run_role(kind: str, model: str) -> str:
    """'student' or 'teacher' for a new run (runs.role): kind 'student', or a model name
    starting with 'student:' or 'base:' (as `distill eval` writes them), is a student.
    The view run_roles applies the same rule to runs written without a role."""
    return ("student" if kind == "student" or model.startswith(STUDENT_MODEL_PREFIXES)
            else "teacher")


def _sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The first column of the first row, with the result fully consumed.

    DuckDB 2 keeps a result open after ``fetchone()``; register/unregister on that
    connection then fail with "unfinished result". Always finish results.
    """
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def resolve_runs(con: duckdb.DuckDBPyConnection, names, option: str = "--runs") -> list[str] | None:
    """Run ids for the tokens of a run option (each a run id or a teacher model name,
    which stands for all of that model's runs); None (all runs) when there are none. A
    token that names no run is refused, naming ``option`` and listing the runs."""
    if not names:
        return None
    known = con.execute("SELECT run_id, model FROM runs ORDER BY run_id").fetchall()
    ids: list[str] = []
    for name in names:
        hit = [rid for rid, model in known if name in (rid, model)]
        if not hit:
            listing = "; ".join(f"{rid} ({model})" for rid, model in known) or "none"
            raise CuratorError(f"{option}: no run has id or model {name!r}. Runs: {listing}")
        ids.extend(h for h in hit if h not in ids)
    return ids
