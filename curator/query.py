"""`curator sql` and `curator stats`: answers to the user's own questions, with SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from curator.errors import CuratorError
from curator.warehouse import Warehouse, scalar

# Statement types that always modify something. They are refused up front, before any
# statement of the query runs, only to give a clear message: what actually keeps a
# query without --write from changing anything is the sealed connection
# (Warehouse.read_sealed), not this list. Everything else (SELECT, PIVOT, EXPLAIN, SET,
# PRAGMA, CALL, ...) goes to DuckDB, which refuses what would write or reconfigure.
_MODIFYING = {"INSERT", "UPDATE", "DELETE", "MERGE_INTO", "DROP", "ALTER", "ATTACH", "DETACH",
              "EXPORT", "COPY", "COPY_DATABASE", "LOAD", "EXTENSION", "VACUUM"}

# `--file NAME=PATH`: files copied into temporary tables before the connection is sealed.
_READERS = {".parquet": "read_parquet", ".json": "read_json_auto", ".jsonl": "read_json_auto",
            ".ndjson": "read_json_auto", ".csv": "read_csv_auto", ".tsv": "read_csv_auto"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def statement_kinds(query: str) -> list[str]:
    try:
        stmts = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise CuratorError(f"cannot parse the SQL: {exc}") from exc
    if not stmts:
        raise CuratorError("no SQL statement given")
    return [st.type.name for st in stmts]


def parse_file_tables(specs: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """``["name=path", ...]`` -> {name: path}, checked: a plain table name, an existing
    file of a format DuckDB reads."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip()
        if not sep or not raw:
            raise CuratorError(f"--file {spec!r}: write NAME=PATH, e.g. --file "
                               "preds=predictions.jsonl")
        if not _NAME.match(name):
            raise CuratorError(f"--file {spec!r}: {name!r} is not a plain table name "
                               "(letters, digits, _)")
        if name in out:
            raise CuratorError(f"--file: the name {name!r} is given twice")
        path = Path(raw)
        if not path.is_file():
            raise CuratorError(f"--file {spec!r}: {path} is not a file")
        if _reader(path) is None:
            raise CuratorError(f"--file {spec!r}: {path.name} is not one of "
                               f"{', '.join(sorted(_READERS))} (optionally .gz)")
        out[name] = path
    return out


def _reader(path: Path) -> str | None:
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst"):
        suffixes = suffixes[:-1]
    return _READERS.get(suffixes[-1]) if suffixes else None


def _load_files(con, files: dict[str, Path]) -> None:
    for name, path in files.items():
        lit = "'" + str(path).replace("'", "''") + "'"
        try:
            con.execute(f'CREATE TEMP TABLE "{name}" AS SELECT * FROM {_reader(path)}({lit})')
        except duckdb.Error as exc:
            raise CuratorError(f"--file {name}={path}: cannot read it: {exc}") from exc


def run_sql(wh: Warehouse, query: str, *, write: bool = False,
            files: dict[str, Path] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one or more statements; returns the columns and rows of the last one.

    Without ``write`` the statements run on a sealed connection
    (:meth:`Warehouse.read_sealed`): they can read the warehouse, and the ``files``
    copied into temporary tables beforehand, and can write no file and change no
    setting, however they are written. See docs/sql.md.
    """
    kinds = statement_kinds(query)
    modifying = [k for k in kinds if k in _MODIFYING]
    if modifying and not write:
        raise CuratorError(
            f"refusing to run {_article(modifying[0])} {modifying[0]} statement: "
            "`curator sql` is read-only by default. Re-run with --write to allow statements that modify the warehouse.")
    if write:
        ctx = wh.write()
    else:
        ctx = wh.read_sealed(prepare=(lambda con: _load_files(con, files)) if files else None)
    with ctx as con:
        if write and files:
            _load_files(con, files)
        try:
            stmts = duckdb.extract_statements(query)
            for st in stmts[:-1]:
                con.execute(st).fetchall()
            cur = con.execute(stmts[-1])
            if cur.description is None:
                return [], []
            columns = [d[0] for d in cur.description]
            return columns, cur.fetchall()
        except duckdb.Error as exc:
            raise _sql_error(exc, write) from exc


def _sql_error(exc: duckdb.Error, write: bool) -> CuratorError:
    msg = str(exc)
    low = msg.lower()
    if not write and isinstance(exc, duckdb.PermissionException):
        return CuratorError(
            f"{msg}. Without --write, `curator sql` reads the warehouse only: no file can be "
            "read or written (load one with --file NAME=PATH to join with it); see docs/sql.md")
    if not write and "configuration has been locked" in low:
        return CuratorError(
            f"{msg}. Without --write, `curator sql` cannot change settings (SET, PRAGMA, "
            "profiling, logging); re-run with --write if you must")
    if "read-only" in low:
        return CuratorError(f"{msg}. Re-run with --write to allow it.")
    return CuratorError(f"SQL error: {msg}")


@dataclass
class Stats:
    problems: tuple[list[str], list[tuple]]
    runs: tuple[list[str], list[tuple]]
    grader: str | None

    def tables(self) -> dict[str, tuple[list[str], list[tuple]]]:
        return {"problems": self.problems,
                f"runs (grader {self.grader or 'none yet'})": self.runs}

    def as_json(self) -> dict:
        def objs(t):
            cols, rows = t
            return [dict(zip(cols, r)) for r in rows]
        return {"problems": objs(self.problems), "runs": objs(self.runs),
                "grader_version": self.grader}


def _fetch(con, q: str) -> tuple[list[str], list[tuple]]:
    cur = con.execute(q)
    return [d[0] for d in cur.description], cur.fetchall()


def _pivot_levels(counts: list[tuple]) -> tuple[list[str], list[tuple]]:
    """(dataset, split, subject, level, n) rows -> one row per dataset/split/subject with
    a column per level, so the table stays readable (MATH: 7 subjects x 5 levels)."""
    levels = sorted({lv for *_, lv, _ in counts if lv is not None})
    has_none = any(lv is None for *_, lv, _ in counts)
    cols = ["dataset", "split", "subject", "problems"] + [f"level {lv}" for lv in levels]
    if has_none and levels:
        cols.append("no level")
    rows: dict[tuple, dict] = {}
    for ds, sp, subj, lv, n in counts:
        r = rows.setdefault((ds, sp, subj), {})
        r[lv] = r.get(lv, 0) + n
    out = []
    for key, by_level in rows.items():
        row = [*key, sum(by_level.values())] + [by_level.get(lv, 0) for lv in levels]
        if has_none and levels:
            row.append(by_level.get(None, 0))
        out.append(tuple(row))
    return cols, out


def warehouse_stats(wh: Warehouse) -> Stats:
    with wh.read() as con:
        counts = con.execute("""
            SELECT dataset, split, coalesce(subject, '') AS subject, level, count(*)
            FROM problems GROUP BY ALL ORDER BY ALL""").fetchall()
        problems = _pivot_levels(counts)
        runs = _fetch(con, """
            SELECT run_id, kind, coalesce(provider, '') AS provider, model, samples, errors,
                   truncated, prompt_tokens, completion_tokens, round(cost_usd, 4) AS cost_usd,
                   graded, positives, negatives,
                   round(pass_rate, 4) AS pass_rate
            FROM run_stats ORDER BY created_at, run_id""")
        grader = scalar(con, "SELECT grader_version FROM current_grader")
    return Stats(problems=problems, runs=runs, grader=grader)


def _article(word: str) -> str:
    """'a' or 'an' before a statement kind as it is spelt out (an EXPORT, an UPDATE, a SELECT)."""
    return "an" if word[:1].upper() in "AEIOU" else "a"
