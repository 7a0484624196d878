"""`curator sql` and `curator stats`: answers to the user's own questions, with SQL."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from curator.errors import CuratorError
from curator.warehouse import Warehouse, scalar

# Statement types that only read. Anything else needs --write.
_READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA", "SET", "VARIABLE_SET", "RELATION", "LOGICAL_PLAN"}


def statement_kinds(query: str) -> list[str]:
    try:
        stmts = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise CuratorError(f"cannot parse the SQL: {exc}") from exc
    if not stmts:
        raise CuratorError("no SQL statement given")
    return [st.type.name for st in stmts]


def run_sql(wh: Warehouse, query: str, *, write: bool = False) -> tuple[list[str], list[tuple]]:
    """Run one or more statements; returns the columns and rows of the last one.

    Without ``write`` the warehouse is opened read-only and statements that modify it
    are refused before they run.
    """
    kinds = statement_kinds(query)
    modifying = [k for k in kinds if k not in _READ_ONLY]
    if modifying and not write:
        raise CuratorError(
            f"refusing to run {_article(modifying[0])} {modifying[0]} statement: "
            "`curator sql` is read-only by default. Re-run with --write to allow statements that modify the warehouse.")
    ctx = wh.write() if write else wh.read()
    with ctx as con:
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
            msg = str(exc)
            if "read-only" in msg.lower():
                raise CuratorError(f"{msg}. Re-run with --write to allow it.") from exc
            raise CuratorError(f"SQL error: {msg}") from exc


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
