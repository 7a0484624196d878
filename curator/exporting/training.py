"""`curator export`: graded rationales to leak-free training splits.

The pipeline, all inside one read-only connection (one consistent snapshot; the
warehouse is never written except for the one-row record of the finished export):

1. **select**: every sample graded by the current grader, labelled from the
   ``positives`` / ``negatives`` views, joined with its problem and run; then the
   filters in a fixed order: ``--runs``, ``--dataset``, ``--where``, no error,
   not truncated. Each step is counted, so an empty selection names the filter that
   emptied it.
2. **dedupe and cap** (SQL windows): exact duplicate rationales within a problem keep
   the sample with the smallest id; then at most K positives and K negatives per
   problem, chosen by a seeded hash of the sample id (independent of row order).
3. **split** by problem (:mod:`curator.exporting.splits`), stratified by subject and
   level unless told otherwise.
4. **validate and write**: every record checked against
   ``schemas/export_record.schema.json``, written by DuckDB in the chosen format into a
   staging directory together with ``manifest.json``, then renamed to OUT.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from curator import __version__
from curator.errors import CuratorError
from curator.exporting import files, formats, schema, splits
from curator.ids import stable_id
from curator.warehouse import Warehouse

STRATA_COLUMNS = ("dataset", "subject", "level")
# Columns a --where expression may use, besides the record fields of the schema.
EXTRA_COLUMNS = ("problem_split", "sample_index", "grade_status", "finish_reason",
                 "error_class", "prompt_tokens", "completion_tokens", "provider")
# Records are written in (problem_id, sample_id) order: export_records is created in
# that order within each split and the writers keep table order (no second sort).
RECORD_ORDER: list[str] = []


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; recorded verbatim in the manifest."""

    runs: tuple[str, ...] = ()            # run ids or teacher model names; () = all
    datasets: tuple[str, ...] = ()        # () = all
    where: str | None = None              # SQL over the record fields and EXTRA_COLUMNS
    splits: str = splits.DEFAULT_SPLITS
    seed: int = 0
    stratify: tuple[str, ...] = ("subject", "level")
    max_positives: int | None = None      # per problem
    max_negatives: int | None = None      # per problem
    include_truncated: bool = False       # finish_reason = 'length'
    include_errored: bool = False         # error_class set (a failed request has no text anyway)
    dedupe: bool = True
    format: str = "jsonl"


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    warnings: list[str] = field(default_factory=list)

    def split_rows(self) -> list[tuple]:
        """(split, problems, records, positives, negatives) per split, for display."""
        return [(name, t["problems"], t["records"], t.get("positive"), t.get("negative"))
                for name, t in self.manifest["totals"].items()]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_list(values) -> str:
    return "(" + ", ".join(_sql_str(v) for v in values) + ")"


def _base_query() -> str:
    """Graded samples labelled by the ``positives`` / ``negatives`` views, with the
    record fields first and the columns --where may use after them."""
    return """
    WITH labelled AS (
        SELECT sample_id, 'positive' AS label FROM positives
        UNION ALL
        SELECT sample_id, 'negative' AS label FROM negatives
    )
    SELECT g.problem_id, p.dataset, p.subject, p.level, p.question, p.reference_answer,
           g.completion AS rationale, g.extracted_answer, l.label,
           r.model AS teacher_model, g.run_id, g.sample_id, g.grader_version,
           p.split AS problem_split, g.sample_index, g.grade_status, g.finish_reason,
           g.error_class, g.prompt_tokens, g.completion_tokens, r.provider
    FROM labelled l
    -- the views decide the label; the text is read once, from graded_samples
    JOIN graded_samples g ON g.sample_id = l.sample_id
    JOIN problems p ON p.problem_id = g.problem_id
    JOIN runs r ON r.run_id = g.run_id"""


@dataclass(frozen=True)
class _Filter:
    name: str   # how the user names it in an error
    sql: str    # a boolean expression over the base columns


def _filters(opts: ExportOptions, run_ids: list[str] | None) -> list[_Filter]:
    out = []
    if run_ids is not None:
        out.append(_Filter("--runs " + ",".join(opts.runs), f"run_id IN {_sql_list(run_ids)}"))
    if opts.datasets:
        out.append(_Filter("--dataset " + ",".join(opts.datasets),
                           f"dataset IN {_sql_list(opts.datasets)}"))
    if opts.where:
        out.append(_Filter(f"--where {opts.where!r}", f"coalesce(({opts.where}), false)"))
    if not opts.include_errored:
        out.append(_Filter("excluding errored samples (--include-errored keeps them)",
                           "error_class IS NULL"))
    # A failed request has no rationale to train on, whatever --include-errored says.
    out.append(_Filter("samples without a rationale (failed requests)",
                       "rationale IS NOT NULL"))
    if not opts.include_truncated:
        out.append(_Filter("excluding truncated samples, finish_reason 'length' "
                           "(--include-truncated keeps them)",
                           "finish_reason IS DISTINCT FROM 'length'"))
    return out


# Where each record field comes from when the records are materialised (aliases as in
# _base_query; ``c`` is the candidates table, which carries the label).
_RECORD_SOURCES = {
    "problem_id": "g.problem_id", "dataset": "p.dataset", "subject": "p.subject",
    "level": "p.level", "question": "p.question", "reference_answer": "p.reference_answer",
    "rationale": "g.completion", "extracted_answer": "g.extracted_answer", "label": "c.label",
    "teacher_model": "r.model", "run_id": "g.run_id", "sample_id": "g.sample_id",
    "grader_version": "g.grader_version",
}


def _record_columns(fields: list[str]) -> str:
    missing = [f for f in fields if f not in _RECORD_SOURCES]
    if missing:
        raise CuratorError(f"internal: export record field(s) {missing} of "
                           f"{schema.TRAINING_SCHEMA} have no source column in the warehouse")
    return ", ".join(f'{_RECORD_SOURCES[f]} AS "{f}"' for f in fields)


def _resolve_runs(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> list[str] | None:
    """Run ids for --runs tokens (a run id or a teacher model name); None = all runs."""
    if not names:
        return None
    known = con.execute("SELECT run_id, model FROM runs ORDER BY run_id").fetchall()
    ids: list[str] = []
    for name in names:
        hit = [rid for rid, model in known if name in (rid, model)]
        if not hit:
            listing = "; ".join(f"{rid} ({model})" for rid, model in known) or "none"
            raise CuratorError(f"--runs: no run has id or model {name!r}. Runs: {listing}")
        ids.extend(h for h in hit if h not in ids)
    return ids


def _keep_condition(opts: ExportOptions) -> str:
    """Over candidates: passes the filters, not a duplicate, within the caps."""
    cond = ["passes", "NOT duplicate"]
    if opts.max_positives is not None:
        cond.append(f"(label <> 'positive' OR cap_rank <= {int(opts.max_positives)})")
    if opts.max_negatives is not None:
        cond.append(f"(label <> 'negative' OR cap_rank <= {int(opts.max_negatives)})")
    return " AND ".join(cond)


def candidates_query(opts: ExportOptions, run_ids: list[str] | None) -> str:
    """One narrow row per graded sample (no text): a flag per filter (``f0``, ``f1``,
    ... in :func:`_filters` order), ``passes`` (all of them), and for the samples that
    pass, ``duplicate`` (an exact repeat of the rationale of a sample of the same
    problem with a smaller id) and ``cap_rank`` (order within problem and label by a
    seeded hash of the sample id, for --max-positives / --max-negatives)."""
    flist = _filters(opts, run_ids)
    flags = "".join(f", ({f.sql}) AS f{i}" for i, f in enumerate(flist))
    passes = " AND ".join(f"f{i}" for i in range(len(flist))) or "true"
    # A hash aggregate over (problem, text) finds the first of each group of exact
    # duplicates several times faster than a window partitioned by the text.
    duplicate = ("sample_id NOT IN (SELECT min(sample_id) FROM flagged WHERE passes "
                 "GROUP BY problem_id, rationale)") if opts.dedupe else "false"
    cap_order = f"md5({_sql_str(str(opts.seed))} || ':' || sample_id)"
    # The ranking costs a sort of every sample: only when a cap asks for it.
    capped = opts.max_positives is not None or opts.max_negatives is not None
    cap_rank = f"""CASE WHEN passes AND NOT duplicate THEN row_number() OVER (
              PARTITION BY problem_id, label, passes AND NOT duplicate ORDER BY {cap_order})
          END""" if capped else "NULL::BIGINT"
    # NOT MATERIALIZED: flagged is read twice, and materialising it would copy all
    # the text; inlined, only the duplicate search reads the text.
    return f"""
WITH base AS NOT MATERIALIZED ({_base_query()}
),
flagged AS NOT MATERIALIZED (
    SELECT *, {passes} AS passes
    FROM (SELECT sample_id, problem_id, label, dataset, subject, level, rationale{flags}
          FROM base)
),
deduped AS (
    SELECT * EXCLUDE (rationale), CASE WHEN passes THEN {duplicate} END AS duplicate
    FROM flagged
)
SELECT *, {cap_rank} AS cap_rank
FROM deduped"""


def selection_query(opts: ExportOptions, run_ids: list[str] | None) -> str:
    """The exact SQL that yields the exported records (before the split): filters,
    duplicate removal and per-problem caps. Recorded in the manifest; the export runs
    the same text with the ``candidates`` CTE materialised as a temporary table."""
    return (f"WITH candidates AS ({candidates_query(opts, run_ids)}\n)\n"
            f"SELECT b.* FROM ({_base_query()}\n) b\n"
            f"JOIN candidates c ON c.sample_id = b.sample_id\n"
            f"WHERE {_keep_condition(opts)}")


def _funnel(con, opts: ExportOptions, run_ids) -> list[tuple[str, int]]:
    """Rows left after each filter, in order, starting from all graded samples."""
    flist = _filters(opts, run_ids)
    aggs = ["count(*)"] + [
        f"count(*) FILTER (WHERE {' AND '.join(f'f{j}' for j in range(i + 1))})"
        for i in range(len(flist))]
    row = con.execute(f"SELECT {', '.join(aggs)} FROM export_candidates").fetchall()[0]
    return [("graded samples", row[0])] + [(f.name, n) for f, n in zip(flist, row[1:])]


def _empty_error(con, funnel: list[tuple[str, int]], grader: str | None) -> CuratorError:
    if grader is None:
        return CuratorError("nothing to export: no sample has been graded yet; run "
                            "`curator grade` first")
    if funnel[0][1] == 0:
        return CuratorError(f"nothing to export: no sample is graded by the current grader "
                            f"{grader}; run `curator grade`")
    for (prev_name, prev), (name, n) in zip(funnel, funnel[1:]):
        if n == 0:
            return CuratorError(f"the selection is empty: {name} left 0 of the {prev} "
                                f"samples that remained after {prev_name}")
    return CuratorError("the selection is empty")


def _counts(con, table: str) -> tuple[dict, dict]:
    """(counts[split][label][subject], totals[split]) of the written records."""
    rows = con.execute(f"""
        SELECT export_split, label, coalesce(subject, '(none)'), count(*)
        FROM {table} GROUP BY ALL ORDER BY ALL""").fetchall()
    counts: dict = {}
    for split, label, subject, n in rows:
        counts.setdefault(split, {}).setdefault(label, {})[subject] = n
    tot_rows = con.execute(f"""
        SELECT export_split, count(DISTINCT problem_id), count(*),
               count(*) FILTER (WHERE label = 'positive'),
               count(*) FILTER (WHERE label = 'negative')
        FROM {table} GROUP BY ALL""").fetchall()
    totals = {s: {"problems": p, "records": r, "positive": a, "negative": b}
              for s, p, r, a, b in tot_rows}
    return counts, totals


def _record_export(wh: Warehouse, kind: str, out: Path, fmt: str, manifest: dict,
                   manifest_sha: str) -> str | None:
    """One row in the exports table; a busy warehouse costs the record, not the export."""
    from curator.errors import WarehouseBusy

    export_id = stable_id("x", str(out.resolve()), manifest["created_at"], manifest_sha)
    data_sha = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
    try:
        with wh.write() as con:
            con.execute(
                """INSERT INTO exports (export_id, kind, out_path, format, seed, selection,
                                        totals, counts, grader_version, manifest_sha256,
                                        data_sha256, tool_version)
                   VALUES (?, ?, ?, ?, ?, ?::JSON, ?::JSON, ?::JSON, ?, ?, ?, ?)""",
                [export_id, kind, str(out.resolve()), fmt, manifest["selection"].get("seed"),
                 json.dumps(manifest["selection"]), json.dumps(manifest["totals"]),
                 json.dumps(manifest["counts"]), manifest["selection"].get("grader_version"),
                 manifest_sha, data_sha, manifest["tool_version"]])
    except WarehouseBusy:
        return None
    return export_id


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def finish_manifest(stage: Path, manifest: dict, warnings: list[str]) -> None:
    """Hash the files, write manifest.json into the staging dir (called before publish)."""
    manifest["files"] = files.file_hashes(stage)
    manifest["warnings"] = warnings
    manifest["created_at"] = now_iso()
    files.write_json(stage / files.MANIFEST, manifest)


def export_training(wh: Warehouse, out: str | Path, opts: ExportOptions | None = None,
                    *, overwrite: bool = False, record: bool = True) -> ExportResult:
    """Export graded rationales to ``out`` as problem-level splits (see module doc)."""
    opts = opts or ExportOptions()
    out = Path(out)
    formats.check_format(opts.format)
    spec = splits.parse_splits(opts.splits)
    bad = [c for c in opts.stratify if c not in STRATA_COLUMNS]
    if bad:
        raise CuratorError(f"--stratify: unknown column(s) {bad}; use any of "
                           f"{', '.join(STRATA_COLUMNS)}, or none")
    for flag, k in (("--max-positives", opts.max_positives), ("--max-negatives", opts.max_negatives)):
        if k is not None and k < 0:
            raise CuratorError(f"{flag} must be >= 0, got {k}")
    files.check_out(out, overwrite)  # fail before the work, not after
    rec_schema = schema.load_schema(schema.TRAINING_SCHEMA)
    fields = schema.field_names(rec_schema)
    warnings: list[str] = []

    with wh.read() as con, files.staged_dir(out, overwrite) as stage:
        grader_rows = con.execute("SELECT grader_version FROM current_grader").fetchall()
        grader = grader_rows[0][0] if grader_rows else None
        run_ids = _resolve_runs(con, opts.runs)
        query = selection_query(opts, run_ids)
        try:
            con.execute(f"CREATE TEMP TABLE export_candidates AS "
                        f"{candidates_query(opts, run_ids)}")
        except duckdb.Error as exc:
            if opts.where:
                raise CuratorError(f"--where {opts.where!r} failed: {exc}. It may use the "
                                   f"record fields and {', '.join(EXTRA_COLUMNS)}") from exc
            raise
        keep = _keep_condition(opts)
        con.execute(f"CREATE TEMP VIEW export_selected AS SELECT * FROM export_candidates "
                    f"WHERE {keep}")
        funnel = _funnel(con, opts, run_ids)
        n_dedup, n_selected = con.execute(
            f"SELECT count(*) FILTER (WHERE passes AND NOT duplicate), "
            f"count(*) FILTER (WHERE {keep}) FROM export_candidates").fetchall()[0]
        duplicates = funnel[-1][1] - n_dedup
        capped = n_dedup - n_selected
        if opts.dedupe:
            funnel.append(("dropping exact duplicate rationales within a problem", n_dedup))
        if opts.max_positives is not None or opts.max_negatives is not None:
            funnel.append(("--max-positives / --max-negatives", n_selected))
        if n_selected == 0:
            raise _empty_error(con, funnel, grader)

        strata_cols = list(opts.stratify)
        key_sql = ", ".join(strata_cols) if strata_cols else "NULL"
        problems = con.execute(
            f"SELECT DISTINCT problem_id, {key_sql} FROM export_selected").fetchall()
        assignment = splits.assign_splits(((r[0], tuple(r[1:])) for r in problems), spec,
                                          opts.seed)
        sizes = splits.split_sizes(assignment, spec)
        warnings += [f"split {name!r} is empty: {len(assignment)} problems are too few for "
                     f"its fraction" for name, n in sizes.items() if n == 0]
        import pyarrow as pa
        con.register("export_assignment", pa.table({
            "problem_id": list(assignment), "export_split": list(assignment.values())}))
        # The one pass over the text: the selected samples (labels from the candidates,
        # i.e. from the positives/negatives views), in file order (split, problem,
        # sample); the writers then scan this table split by split.
        con.execute(f"""CREATE TEMP TABLE export_records AS
                        SELECT a.export_split, {_record_columns(fields)}
                        FROM graded_samples g
                        JOIN export_selected c ON c.sample_id = g.sample_id
                        JOIN problems p ON p.problem_id = g.problem_id
                        JOIN runs r ON r.run_id = g.run_id
                        JOIN export_assignment a ON a.problem_id = g.problem_id
                        ORDER BY a.export_split, g.problem_id, g.sample_id""")
        con.execute(f"CREATE TEMP VIEW export_record_fields AS "
                    f"SELECT {', '.join(chr(34) + f + chr(34) for f in fields)} FROM export_records")
        shapes = schema.validate_table(con, "export_record_fields", schema.TRAINING_SCHEMA,
                                       "sample_id")
        counts, totals = _counts(con, "export_records")
        totals = {name: totals.get(name, {"problems": 0, "records": 0, "positive": 0,
                                          "negative": 0}) for name in spec.names}
        description = (rec_schema.get("description", "") +
                       f" Exported by dust-curator {__version__}; see manifest.json.")
        formats.write_splits(con, "export_records", fields, list(spec.names), RECORD_ORDER,
                             opts.format, stage, description, query + str(opts.seed))
        runs = con.execute(f"""SELECT run_id, model, kind, source FROM runs
                               WHERE run_id IN (SELECT DISTINCT run_id FROM export_records)
                               ORDER BY run_id""").fetchall()
        manifest = {
            "kind": "training",
            "tool": "dust-curator",
            "tool_version": __version__,
            "created_at": None,
            "format": opts.format,
            "record_schema": schema.TRAINING_SCHEMA,
            "record_schema_sha256": hashlib.sha256(
                schema.schema_text(schema.TRAINING_SCHEMA).encode()).hexdigest(),
            "fields": fields,
            "warehouse": str(wh.path.resolve()),
            "selection": {
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
                "splits": spec.as_dict(),
                "grader_version": grader,
                "runs": [{"run_id": r[0], "model": r[1], "kind": r[2], "source": r[3]}
                         for r in runs],
                "query": query.strip(),
            },
            "funnel": [{"step": name, "samples": n} for name, n in funnel],
            "duplicates_dropped": duplicates,
            "capped": capped,
            "schema_shapes_validated": shapes,
            "totals": totals,
            "counts": counts,
        }
        finish_manifest(stage, manifest, warnings)
    result = ExportResult(out=out, manifest=manifest, warnings=warnings)
    if record:
        if _record_export(wh, "training", out, opts.format, manifest,
                          files.sha256_file(out / files.MANIFEST)) is None:
            warnings.append("the warehouse stayed busy: this export is not recorded in the "
                            "exports table (the files are complete)")
    return result
