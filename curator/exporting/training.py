"""`curator export`: graded rationales to leak-free training splits.

The pipeline, all inside one read-only connection (one consistent snapshot; the
warehouse is never written except for the one-row record of the finished export):

1. **records**: the one pass over the text. Every sample graded by the current
   grader, labelled by the ``positives`` / ``negatives`` views, with one flag per
   filter in a fixed order (``--runs``, or teacher runs only when --runs is not given;
   ``--dataset``, ``--where``, no error, has a rationale, not truncated; evaluation
   problems, and problems with the question of one, held back), and, for the samples
   that pass them all, the record
   fields and a 64-bit hash of the rationale; into a temporary table in file order
   (problem, sample). The flags count the funnel, so an empty selection names the
   filter that emptied it. (Reading the text is cheap; what costs is sorting and
   copying it, so it is done once, and only for the samples that pass.)
   Samples of the selected runs that the current grader has not graded cannot be
   labelled: they are counted, per run, into a warning that names `curator grade`.
2. **split** by problem (:mod:`curator.exporting.splits`): by the keyed hash of the
   problem id and the seed, problems that share a question together (the default; an
   earlier export's assignment where
   ``--splits-from`` gives one), or by the balanced, stratified method when asked,
   written into the records' ``export_split`` column (an UPDATE keeps the rows where
   they are). Duplicate removal keeps one rationale of
   each group and a cap of K >= 1 keeps at least one of each label, so neither
   changes which problems are exported and the split can be decided first; a cap of
   0 is a filter.
3. **duplicates and caps**: rationales of one problem with equal hashes are compared
   as text (exactly), and all but the one with the smallest sample id are dropped; then
   at most K positives and K negatives per problem are kept, chosen by a seeded hash of
   the sample id (independent of row order).
4. **validate and write**: every record checked against
   ``schemas/export_record.schema.json``, written by DuckDB in the chosen format into a
   staging directory together with ``manifest.json``, then renamed to OUT. A layout
   other than ``default`` (:mod:`curator.exporting.layouts`: sft, preference, unpaired
   rows for TRL's trainers) is built from these same records in their splits and
   written instead of them.

The manifest records :func:`selection_query`, one SQL statement that selects exactly the
exported records (before the split), for anyone who wants to check or reproduce them
with ``curator sql``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import duckdb

from curator import __version__
from curator.errors import CuratorError
from curator.exporting import files, formats, layouts, schema, splits
from curator.exporting.options import (EXTRA_COLUMNS, ExportOptions, ExportResult, RECORD_ORDER,
                                       STRATA_COLUMNS)
from curator.exporting.selection import (_apply_caps, _assign, _cap_order, _caps, _counts,
                                         _drop_duplicates, _empty_error, _funnel, _held_back,
                                         _left_out_students, _ungraded, records_query,
                                         selection_query, ungraded_line)
from curator.exporting.splits_from import read_earlier_assignment
from curator.ids import stable_id
from curator.warehouse import Warehouse, resolve_runs


def _record_export(wh: Warehouse, kind: str, out: Path, fmt: str, manifest: dict,
                   manifest_sha: str, problem_ids: list[str] | None = None) -> str | None:
    """One row in the exports table (and, for an eval export, its ``problem_ids`` in
    eval_export_problems, in the same transaction); a busy warehouse costs the record,
    not the export."""
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
            if problem_ids:
                import pyarrow as pa
                con.register("eval_exported_ids", pa.table({"problem_id": problem_ids}))
                con.execute("INSERT INTO eval_export_problems (export_id, problem_id) "
                            "SELECT DISTINCT ?, problem_id FROM eval_exported_ids", [export_id])
                con.unregister("eval_exported_ids")
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
    layouts.check(opts.layout_options())
    spec = splits.parse_splits(opts.splits)
    bad = [c for c in opts.stratify or () if c not in STRATA_COLUMNS]
    if bad:
        raise CuratorError(f"--stratify: unknown column(s) {bad}; use any of "
                           f"{', '.join(STRATA_COLUMNS)}, or none")
    if opts.split_method not in splits.SPLIT_METHODS:
        raise CuratorError(f"--split-method: unknown method {opts.split_method!r}; use "
                           f"{' or '.join(splits.SPLIT_METHODS)}")
    if opts.split_method == splits.HASH_METHOD and opts.stratify is not None:
        raise CuratorError("--stratify applies to --split-method balanced only: the keyed-hash "
                           "split places every problem by its own id, so it cannot balance a mix")
    if opts.splits_from and opts.split_method != splits.HASH_METHOD:
        raise CuratorError("--splits-from places new problems by the keyed hash; it cannot be "
                           "combined with --split-method balanced")
    for flag, k in (("--max-positives", opts.max_positives), ("--max-negatives", opts.max_negatives)):
        if k is not None and k < 0:
            raise CuratorError(f"{flag} must be >= 0, got {k}")
    earlier = None
    if opts.splits_from:
        earlier = read_earlier_assignment(opts.splits_from)
        splits.check_split_names(earlier.assignment, spec)
    files.check_out(out, overwrite, wh.path)  # fail before the work, not after
    rec_schema = schema.load_schema(schema.TRAINING_SCHEMA)
    fields = schema.field_names(rec_schema)
    warnings: list[str] = []

    with wh.read() as con, files.staged_dir(out, overwrite, wh.path) as stage:
        grader_rows = con.execute("SELECT grader_version FROM current_grader").fetchall()
        grader = grader_rows[0][0] if grader_rows else None
        run_ids = resolve_runs(con, opts.runs)
        query = selection_query(opts, run_ids)
        try:
            con.execute(f"CREATE TEMP TABLE export_records AS "
                        f"{records_query(opts, run_ids, fields)}")
        except duckdb.Error as exc:
            if opts.where:
                raise CuratorError(f"--where {opts.where!r} failed: {exc}. It may use the "
                                   f"record fields and {', '.join(EXTRA_COLUMNS)}") from exc
            raise
        funnel = _funnel(con, opts, run_ids)
        ungraded = _ungraded(con, opts, run_ids)
        if funnel[-1][1] == 0:
            raise _empty_error(con, funnel, grader, ungraded)
        if ungraded:
            warnings.append(ungraded_line(ungraded, grader))

        held_back, same_question_as = _held_back(con, opts, run_ids)
        students = _left_out_students(con, run_ids)
        assignment, split_block = _assign(con, opts, spec, earlier, warnings)
        sizes = splits.split_sizes(assignment, spec)
        warnings += [f"split {name!r} is empty: {len(assignment)} problems are too few for "
                     f"its fraction" for name, n in sizes.items() if n == 0]
        import pyarrow as pa
        con.register("export_assignment", pa.table({
            "problem_id": list(assignment), "export_split": list(assignment.values())}))
        # In place: the writers then scan the table split by split without sorting
        # the text again.
        con.execute("""UPDATE export_records r SET export_split = a.export_split
                       FROM export_assignment a WHERE a.problem_id = r.problem_id""")
        duplicates = _drop_duplicates(con) if opts.dedupe else 0
        if opts.dedupe:
            funnel.append(("dropping exact duplicate rationales within a problem",
                           funnel[-1][1] - duplicates))
        capped = _apply_caps(con, opts)
        if _caps(opts):
            funnel.append(("--max-positives / --max-negatives", funnel[-1][1] - capped))
        con.execute(f"CREATE TEMP VIEW export_kept AS SELECT export_split, "
                    f"{', '.join(chr(34) + f + chr(34) for f in fields)} "
                    f"FROM export_records WHERE keep")
        con.execute(f"CREATE TEMP VIEW export_record_fields AS "
                    f"SELECT {', '.join(chr(34) + f + chr(34) for f in fields)} FROM export_kept")
        shapes = schema.validate_table(con, "export_record_fields", schema.TRAINING_SCHEMA,
                                       "sample_id")
        layout = None
        table, columns = "export_kept", fields
        description = rec_schema.get("description", "")
        if opts.layout != "default":
            layout = layouts.build(con, "export_kept", opts.layout_options(), opts.seed,
                                   lambda col: _cap_order(opts, col))
            layout["problems_without"] = layouts.unusable_problems(con, "export_kept",
                                                                   list(spec.names))
            line = layouts.report_line(opts.layout, layout["problems_without"])
            if line:
                warnings.append(line)
            table, columns = "export_layout", layout["columns"]
            description = (f"{opts.layout} layout for {layout['trainer']} "
                           f"({layout['trl_dataset_type']}), built from records of "
                           f"{schema.TRAINING_SCHEMA}.")
        # counts: the records written (or that a layout's rows were made from)
        counts, totals = _counts(con, "export_kept" if layout is None
                                 else "export_layout_sources")
        totals = {name: totals.get(name, {"problems": 0, "records": 0, "positive": 0,
                                          "negative": 0}) for name in spec.names}
        if layout is not None:
            rows = dict(con.execute("SELECT export_split, count(*) FROM export_layout "
                                    "GROUP BY ALL").fetchall())
            for name, t in totals.items():
                # records: the rows written; rationales: the records they were made from
                t["rationales"] = t["records"]
                t["records"] = rows.get(name, 0)
        description += f" Exported by dust-curator {__version__}; see manifest.json."
        formats.write_splits(con, table, columns, list(spec.names), RECORD_ORDER,
                             opts.format, stage, description,
                             query + str(opts.seed) +
                             ("" if layout is None else json.dumps(layout, sort_keys=True)))
        sources = "export_kept" if layout is None else "export_layout_sources"
        runs = con.execute(f"""SELECT run_id, model, kind, source FROM runs
                               WHERE run_id IN (SELECT DISTINCT run_id FROM {sources})
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
            "fields": columns,
            "layout": layout or {"name": "default", "columns": fields},
            "warehouse": str(wh.path.resolve()),
            "selection": {
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
                "stratify": split_block.get("stratify", []),
                "splits": spec.as_dict(),
                "grader_version": grader,
                "runs": [{"run_id": r[0], "model": r[1], "kind": r[2], "source": r[3]}
                         for r in runs],
                "query": query.strip(),
            },
            "funnel": [{"step": name, "samples": n} for name, n in funnel],
            "split_assignment": {**split_block, "problems": {
                name: sorted(p for p, s in assignment.items() if s == name)
                for name in spec.names}},
            "held_back": {
                "allow_eval_problems": opts.allow_eval_problems,
                "problems": len({p for ids in held_back.values() for p in ids}),
                "reasons": held_back,
                "student_runs_left_out": students,
                # held back for their question: {problem id: the evaluation problems
                # with that question} (only when there are any)
                **({"same_question_as": same_question_as} if same_question_as else {}),
            },
            # samples of the selected runs without the current grader's verdict
            "ungraded_left_out": ungraded,
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
