"""The numbers behind `curator report`: one read of the warehouse, returned as small
polars frames (at most a few rows per run, subject and level; lengths as one column).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from curator.errors import CuratorError
from curator.warehouse import Warehouse


@dataclass
class ReportData:
    grader_version: str | None
    runs: pl.DataFrame            # run_id, label, model, kind, samples, graded, positives, errors, tokens, cost
    by_subject: pl.DataFrame      # label, subject, graded, positives, pass_rate
    by_level: pl.DataFrame        # label, level, graded, positives, pass_rate
    positives_per_problem: pl.DataFrame  # label, positives (0..K), problems
    statuses: pl.DataFrame        # label, status, samples
    lengths: pl.DataFrame         # label, verdict ('positive'|'negative'), chars
    exports: pl.DataFrame         # name, kind, format, created_at, split, records, positive, negative
    notes: list[str] = field(default_factory=list)


def _run_labels(runs: pl.DataFrame) -> pl.DataFrame:
    """Display name per run: the model, plus a short run id where a model has several runs."""
    dup = runs.group_by("model").len().filter(pl.col("len") > 1)["model"].to_list()
    return runs.with_columns(
        pl.when(pl.col("model").is_in(dup))
        .then(pl.col("model") + " (" + pl.col("run_id").str.slice(0, 10) + ")")
        .otherwise(pl.col("model")).alias("label"))


def _manifest_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for p in paths:
        f = p / "manifest.json" if p.is_dir() else p
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise CuratorError(f"--manifest {f}: cannot read an export manifest: {exc}") from exc
        if "totals" not in m:
            raise CuratorError(f"--manifest {f}: not a curator export manifest (no 'totals')")
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        for split, t in m["totals"].items():
            rows.append({"name": str(f.parent.resolve()), "kind": m.get("kind"),
                         "format": m.get("format"),
                         "created_at": (m.get("created_at") or "")[:19],
                         "manifest_sha256": sha, "split": split,
                         "records": t.get("records", 0), "positive": t.get("positive"),
                         "negative": t.get("negative")})
    return rows


def collect(wh: Warehouse, manifests: list[Path] = ()) -> ReportData:
    with wh.read() as con:
        grader = con.execute("SELECT grader_version FROM current_grader").fetchall()
        grader = grader[0][0] if grader else None
        runs = con.sql("""
            SELECT r.run_id, r.model, r.kind, r.created_at,
                   count(s.sample_id) AS samples,
                   count(g.sample_id) AS graded,
                   count(*) FILTER (WHERE g.correct) AS positives,
                   count(s.error_class) AS errors,
                   count(*) FILTER (WHERE s.finish_reason = 'length') AS truncated,
                   sum(s.prompt_tokens) AS prompt_tokens,
                   sum(s.completion_tokens) AS completion_tokens,
                   sum(s.cost_usd) AS cost_usd
            FROM runs r
            LEFT JOIN samples s ON s.run_id = r.run_id
            LEFT JOIN graded_samples g ON g.sample_id = s.sample_id
            GROUP BY ALL ORDER BY r.model, r.run_id""").pl()
        per_subject = con.sql("""
            SELECT g.run_id, coalesce(p.subject, '(none)') AS subject, count(*) AS graded,
                   count(*) FILTER (WHERE g.correct) AS positives
            FROM graded_samples g JOIN problems p USING (problem_id)
            GROUP BY ALL ORDER BY ALL""").pl()
        per_level = con.sql("""
            SELECT g.run_id, p.level, count(*) AS graded,
                   count(*) FILTER (WHERE g.correct) AS positives
            FROM graded_samples g JOIN problems p USING (problem_id)
            WHERE p.level IS NOT NULL
            GROUP BY ALL ORDER BY ALL""").pl()
        per_problem = con.sql("""
            WITH pp AS (SELECT run_id, problem_id, count(*) FILTER (WHERE correct) AS positives
                        FROM graded_samples GROUP BY ALL)
            SELECT run_id, positives, count(*) AS problems FROM pp
            GROUP BY ALL ORDER BY ALL""").pl()
        statuses = con.sql("""
            SELECT run_id, grade_status AS status, count(*) AS samples
            FROM graded_samples GROUP BY ALL ORDER BY ALL""").pl()
        lengths = con.sql("""
            SELECT run_id, CASE WHEN correct THEN 'positive' ELSE 'negative' END AS verdict,
                   length(completion) AS chars
            FROM graded_samples WHERE completion IS NOT NULL""").pl()
        has_exports = con.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_name = 'exports'").fetchall()[0][0] > 0
        exports = con.sql("""
            SELECT out_path AS name, kind, format,
                   strftime(created_at, '%Y-%m-%dT%H:%M:%S') AS created_at,
                   manifest_sha256, t.key AS split, (t.value->>'records')::BIGINT AS records,
                   (t.value->>'positive')::BIGINT AS positive,
                   (t.value->>'negative')::BIGINT AS negative
            FROM exports, json_each(totals) AS t
            ORDER BY exports.created_at, name, t.id""").pl() if has_exports else None

    runs = _run_labels(runs)
    label = runs.select("run_id", "label")

    def with_label(df: pl.DataFrame) -> pl.DataFrame:
        return df.join(label, on="run_id", how="left")

    def rate(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns((pl.col("positives") / pl.col("graded")).alias("pass_rate"))

    schema = {"name": pl.Utf8, "kind": pl.Utf8, "format": pl.Utf8, "created_at": pl.Utf8,
              "manifest_sha256": pl.Utf8, "split": pl.Utf8, "records": pl.Int64, "positive": pl.Int64, "negative": pl.Int64}
    frames = [pl.DataFrame(_manifest_rows(list(manifests)), schema=schema)]
    if exports is not None:
        frames.insert(0, exports.cast(schema))
    # A --manifest of an export the table already records is the same export.
    exports_df = pl.concat(frames).unique(subset=["manifest_sha256", "split"],
                                          maintain_order=True).drop("manifest_sha256")
    notes = []
    if runs.is_empty():
        notes.append("the warehouse has no runs yet: load problems and import or generate "
                      "rationales first")
    elif grader is None:
        notes.append("nothing is graded yet: run `curator grade` for pass rates")
    return ReportData(grader_version=grader, runs=runs, by_subject=rate(with_label(per_subject)),
                      by_level=rate(with_label(per_level)),
                      positives_per_problem=with_label(per_problem),
                      statuses=with_label(statuses), lengths=with_label(lengths),
                      exports=exports_df, notes=notes)
