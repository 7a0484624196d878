"""Warehouse side of generation: choosing problems, recording prompts and runs, finding
the samples still missing, and storing responses idempotently.

Storing is idempotent so that the journal can be replayed any number of times: a
response never overwrites a better one for the same sample (a complete rationale beats
a truncated one, which beats an error), and a paid response that is replaced moves to
``sample_attempts`` instead of disappearing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import polars as pl

from curator.errors import CuratorError
from curator.warehouse import Warehouse, run_role

SAMPLE_COLUMNS = {
    "sample_id": pl.Utf8, "run_id": pl.Utf8, "problem_id": pl.Utf8, "sample_index": pl.Int32,
    "completion": pl.Utf8, "finish_reason": pl.Utf8, "prompt_tokens": pl.Int32,
    "completion_tokens": pl.Int32, "cost_usd": pl.Float64, "latency_ms": pl.Float64,
    "error_class": pl.Utf8, "error": pl.Utf8, "request_id": pl.Utf8, "metadata": pl.Utf8,
}
ATTEMPT_COLUMNS = {
    "attempt_id": pl.Utf8, "sample_id": pl.Utf8, "run_id": pl.Utf8, "problem_id": pl.Utf8,
    "sample_index": pl.Int32, "attempt": pl.Int32, "completion": pl.Utf8,
    "finish_reason": pl.Utf8, "prompt_tokens": pl.Int32, "completion_tokens": pl.Int32,
    "cost_usd": pl.Float64, "latency_ms": pl.Float64, "error_class": pl.Utf8,
    "error": pl.Utf8, "request_id": pl.Utf8, "endpoint": pl.Utf8,
}

# 2: a complete rationale, 1: a truncated one (paid, kept, flagged), 0: an error.
RANK_SQL = ("CASE WHEN {t}.completion IS NULL THEN 0 "
            "WHEN {t}.finish_reason = 'length' THEN 1 ELSE 2 END")


def _frame(rows: list[dict], schema: dict) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema,
                        orient="row")


def write_records(con: duckdb.DuckDBPyConnection, records: list[dict]) -> int:
    """Store journal records (samples and attempts) inside the caller's transaction.
    Returns the number of sample rows inserted or improved."""
    samples = [r for r in records if r.get("table") == "samples"]
    attempts = [r for r in records if r.get("table") == "attempts"]
    changed = 0
    if attempts:
        con.register("incoming_attempts", _frame(attempts, ATTEMPT_COLUMNS))
        cols = ", ".join(ATTEMPT_COLUMNS)
        con.execute(f"INSERT INTO sample_attempts ({cols}) SELECT DISTINCT ON (attempt_id) {cols} "
                    f"FROM incoming_attempts ON CONFLICT DO NOTHING")
        con.unregister("incoming_attempts")
    if samples:
        frame = _frame(samples, SAMPLE_COLUMNS)
        con.register("incoming_raw", frame)
        rank_i = RANK_SQL.format(t="i")
        rank_s = RANK_SQL.format(t="s")
        # One row per sample: the best, and among equals the last received.
        con.execute(f"""CREATE OR REPLACE TEMP TABLE incoming AS
            SELECT * EXCLUDE (rn) FROM (
              SELECT i.*, {rank_i} AS rank,
                     row_number() OVER (PARTITION BY sample_id ORDER BY {rank_i} DESC, pos DESC) AS rn
              FROM (SELECT *, row_number() OVER () AS pos FROM incoming_raw) i)
            WHERE rn = 1""")
        con.unregister("incoming_raw")
        # A paid truncated rationale about to be replaced is kept as an attempt.
        con.execute(f"""INSERT INTO sample_attempts (attempt_id, sample_id, run_id, problem_id,
                sample_index, completion, finish_reason, prompt_tokens, completion_tokens,
                cost_usd, latency_ms, error_class, error, request_id)
            SELECT 'a_replaced_' || s.sample_id || '_' || coalesce(s.request_id, ''),
                   s.sample_id, s.run_id, s.problem_id, s.sample_index, s.completion,
                   s.finish_reason, s.prompt_tokens, s.completion_tokens, s.cost_usd,
                   s.latency_ms, 'truncated', 'replaced by a later response', s.request_id
            FROM samples s JOIN incoming i USING (sample_id)
            WHERE {rank_s} = 1 AND i.rank > 1
            ON CONFLICT DO NOTHING""")
        improved = con.execute(f"""UPDATE samples s SET
                completion = i.completion, finish_reason = i.finish_reason,
                prompt_tokens = i.prompt_tokens, completion_tokens = i.completion_tokens,
                cost_usd = i.cost_usd, latency_ms = i.latency_ms, error_class = i.error_class,
                error = i.error, request_id = i.request_id, metadata = i.metadata::JSON,
                created_at = current_timestamp
            FROM incoming i
            WHERE s.sample_id = i.sample_id AND (i.rank > {rank_s} OR (i.rank = 0 AND {rank_s} = 0))
            """).fetchone()
        inserted = con.execute("""INSERT INTO samples (sample_id, run_id, problem_id, sample_index,
                completion, finish_reason, prompt_tokens, completion_tokens, cost_usd, latency_ms,
                error_class, error, request_id, metadata)
            SELECT sample_id, run_id, problem_id, sample_index, completion, finish_reason,
                   prompt_tokens, completion_tokens, cost_usd, latency_ms, error_class, error,
                   request_id, metadata::JSON
            FROM incoming i WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.sample_id = i.sample_id)
            """).fetchone()
        con.execute("DROP TABLE incoming")
        changed = (improved[0] if improved else 0) + (inserted[0] if inserted else 0)
    return changed


# -- problems, prompts, runs ---------------------------------------------------------

@dataclass
class Selection:
    dataset: str | None = None
    split: str | None = None
    where: str | None = None
    limit: int | None = None
    problem_ids: list[str] | None = None


def select_problems(wh: Warehouse, sel: Selection) -> list[dict]:
    """Problems to generate for, in load order."""
    clauses, params = [], []
    if sel.dataset:
        clauses.append("dataset = ?")
        params.append(sel.dataset)
    if sel.split:
        clauses.append("split = ?")
        params.append(sel.split)
    if sel.problem_ids is not None:
        clauses.append("list_contains(?, problem_id)")
        params.append(sel.problem_ids)
    if sel.where:
        clauses.append(f"({sel.where})")
    sql = ("SELECT problem_id, dataset, split, subject, level, question FROM problems"
           + (" WHERE " + " AND ".join(clauses) if clauses else "")
           + " ORDER BY dataset, split, source_position NULLS LAST, problem_id")
    if sel.limit is not None:
        if sel.limit < 0:
            raise CuratorError("--limit must be >= 0")
        sql += f" LIMIT {int(sel.limit)}"
    with wh.read() as con:
        try:
            cur = con.execute(sql, params)
        except duckdb.Error as exc:
            raise CuratorError(f"cannot select problems (check --where {sel.where!r}): {exc}") from exc
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def ensure_run(con: duckdb.DuckDBPyConnection, *, run_id: str, provider: str, model: str,
               prompt_id: str, prompt_name: str, template: str, params: dict,
               metadata: dict | None = None) -> None:
    con.execute("INSERT INTO prompts (prompt_id, name, template) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING", [prompt_id, prompt_name, template])
    con.execute("INSERT INTO runs (run_id, kind, provider, model, prompt_id, params, metadata, "
                "role) VALUES (?, 'generate', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [run_id, provider, model, prompt_id, json.dumps(params, sort_keys=True),
                 json.dumps(metadata or {}, sort_keys=True), run_role("generate", model)])


def stored_samples(con: duckdb.DuckDBPyConnection, run_id: str,
                   truncated_counts: bool) -> dict[str, set[int]]:
    """problem_id -> sample indexes that need no request: complete rationales, and
    truncated ones too unless the policy retries them."""
    min_rank = 1 if truncated_counts else 2
    rows = con.execute(f"SELECT problem_id, sample_index FROM samples s WHERE run_id = ? "
                       f"AND {RANK_SQL.format(t='s')} >= ?", [run_id, min_rank]).fetchall()
    out: dict[str, set[int]] = {}
    for pid, idx in rows:
        out.setdefault(pid, set()).add(idx)
    return out


def pending_batch_samples(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, set[int]]:
    """problem_id -> sample indexes inside batches not yet collected (already paid for
    or about to be: never requested twice)."""
    rows = con.execute("""SELECT i.problem_id, unnest(i.sample_indexes)
        FROM batch_items i JOIN batches b USING (batch_id)
        WHERE i.run_id = ? AND b.collected_at IS NULL AND i.status = 'submitted'""",
                       [run_id]).fetchall()
    out: dict[str, set[int]] = {}
    for pid, idx in rows:
        out.setdefault(pid, set()).add(idx)
    return out
