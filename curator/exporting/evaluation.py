"""`curator export-eval`: problems without rationales, for evaluating students.

Records follow ``schemas/eval_record.schema.json``. ``--limit N`` keeps N problems
chosen with the same seeded, stratified apportionment as training splits (so a
500-problem subset of MATH test has the subject and level mix of the whole test set).
In Parquet and Hugging Face exports ``metadata`` is a struct with the union of the
selected problems' metadata keys (null where a problem lacks one); in JSONL it is the
object as stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import duckdb

from curator import __version__
from curator.errors import CuratorError
from curator.exporting import files, formats, schema, splits
from curator.exporting.options import STRATA_COLUMNS, ExportResult
from curator.exporting.selection import _sql_list, _sql_str
from curator.exporting.training import _record_export, finish_manifest
from curator.warehouse import Warehouse


@dataclass(frozen=True)
class EvalOptions:
    datasets: tuple[str, ...] = ()   # () = all
    split: str = "test"              # the problems' own split (as loaded)
    where: str | None = None         # SQL over the eval record fields
    limit: int | None = None
    seed: int = 0
    stratify: tuple[str, ...] = ("dataset", "subject", "level")
    format: str = "jsonl"


def _metadata_as_struct(con) -> str:
    """Parquet and datasets need one column type: the metadata objects become a struct
    with the union of their keys (a key a problem lacks is null), so every format reads
    back as an object, as the schema says."""
    structure = con.execute("SELECT json_group_structure(metadata) FROM eval_records"
                            ).fetchall()[0][0]
    if structure is None or json.loads(structure) is None:
        return "metadata"
    return f"json_transform(metadata, {_sql_str(structure)})"


def eval_query(opts: EvalOptions) -> str:
    conds = [f"split = {_sql_str(opts.split)}"]
    if opts.datasets:
        conds.append(f"dataset IN {_sql_list(opts.datasets)}")
    if opts.where:
        conds.append(f"coalesce(({opts.where}), false)")
    return (f"SELECT * FROM (SELECT problem_id, dataset, split, subject, level, question, "
            f"reference_answer, metadata FROM problems) WHERE {' AND '.join(conds)}")


def _empty_error(con, opts: EvalOptions) -> CuratorError:
    total = con.execute("SELECT count(*) FROM problems").fetchall()[0][0]
    if total == 0:
        return CuratorError("nothing to export: the warehouse has no problems; run "
                            "`curator load` first")
    steps = [("--dataset " + ",".join(opts.datasets), f"dataset IN {_sql_list(opts.datasets)}")
             if opts.datasets else None,
             (f"--split {opts.split}", f"split = {_sql_str(opts.split)}"),
             (f"--where {opts.where!r}", f"coalesce(({opts.where}), false)")
             if opts.where else None]
    conds, prev_name, prev = [], "all problems", total
    for step in filter(None, steps):
        conds.append(step[1])
        n = con.execute(f"SELECT count(*) FROM problems WHERE {' AND '.join(conds)}").fetchall()[0][0]
        if n == 0:
            have = con.execute("SELECT dataset, split, count(*) FROM problems GROUP BY ALL "
                               "ORDER BY ALL").fetchall()
            listing = ", ".join(f"{d}/{s} ({c})" for d, s, c in have)
            return CuratorError(f"the selection is empty: {step[0]} left 0 of the {prev} "
                                f"problems that remained after {prev_name}. Loaded: {listing}")
        prev_name, prev = step[0], n
    return CuratorError("the selection is empty")


def export_eval(wh: Warehouse, out: str | Path, opts: EvalOptions | None = None, *,
                overwrite: bool = False, record: bool = True) -> ExportResult:
    """Write the selected problems to ``out/<split>.<format>`` with a manifest."""
    opts = opts or EvalOptions()
    out = Path(out)
    formats.check_format(opts.format)
    if opts.limit is not None and opts.limit <= 0:
        raise CuratorError(f"--limit must be positive, got {opts.limit}")
    bad = [c for c in opts.stratify if c not in STRATA_COLUMNS]
    if bad:
        raise CuratorError(f"--stratify: unknown column(s) {bad}; use any of "
                           f"{', '.join(STRATA_COLUMNS)}, or none")
    files.check_out(out, overwrite, wh.path)
    rec_schema = schema.load_schema(schema.EVAL_SCHEMA)
    fields = schema.field_names(rec_schema)
    query = eval_query(opts)
    warnings: list[str] = []

    with wh.read() as con, files.staged_dir(out, overwrite, wh.path) as stage:
        try:
            con.execute(f"CREATE TEMP TABLE eval_candidates AS {query}")
        except duckdb.Error as exc:
            raise CuratorError(f"--where {opts.where!r} failed: {exc}. It may use the fields "
                               f"{', '.join(fields)}") from exc
        key_sql = ", ".join(opts.stratify) if opts.stratify else "NULL"
        rows = con.execute(f"SELECT problem_id, {key_sql} FROM eval_candidates").fetchall()
        if not rows:
            raise _empty_error(con, opts)
        chosen = [r[0] for r in rows]
        if opts.limit is not None and opts.limit < len(rows):
            spec = splits.SplitSpec(("chosen", "rest"),
                                    (Fraction(opts.limit, len(rows)),
                                     1 - Fraction(opts.limit, len(rows))))
            assignment = splits.assign_splits(((r[0], tuple(r[1:])) for r in rows), spec,
                                              opts.seed)
            chosen = [pid for pid, s in assignment.items() if s == "chosen"]
        elif opts.limit is not None:
            warnings.append(f"--limit {opts.limit} is not below the {len(rows)} problems "
                            "selected: all are exported")
        import pyarrow as pa
        con.register("eval_chosen", pa.table({"problem_id": chosen}))
        cols = ", ".join(f'c."{f}"' for f in fields)
        con.execute(f"""CREATE TEMP TABLE eval_records AS
                        SELECT {_sql_str(opts.split)} AS export_split, {cols}
                        FROM eval_candidates c SEMI JOIN eval_chosen USING (problem_id)
                        ORDER BY c.problem_id""")
        con.execute(f"CREATE TEMP VIEW eval_record_fields AS SELECT "
                    f"{', '.join(chr(34) + f + chr(34) for f in fields)} FROM eval_records")
        shapes = schema.validate_table(con, "eval_record_fields", schema.EVAL_SCHEMA,
                                       "problem_id")
        write_table = "eval_records"
        if opts.format != "jsonl":
            con.execute(f"CREATE TEMP VIEW eval_records_struct AS SELECT * REPLACE "
                        f"({_metadata_as_struct(con)} AS metadata) FROM eval_records")
            write_table = "eval_records_struct"
        description = (rec_schema.get("description", "") +
                       f" Exported by dust-curator {__version__}; see manifest.json.")
        formats.write_splits(con, write_table, fields, [opts.split], ["problem_id"],
                             opts.format, stage, description, query + str(opts.seed))
        count_rows = con.execute("""SELECT dataset, coalesce(subject, '(none)'), count(*)
                                    FROM eval_records GROUP BY ALL ORDER BY ALL""").fetchall()
        counts: dict = {opts.split: {}}
        for d, s, n in count_rows:
            counts[opts.split].setdefault(d, {})[s] = n
        n_chosen = sum(n for _, _, n in count_rows)
        manifest = {
            "kind": "eval",
            "tool": "dust-curator",
            "tool_version": __version__,
            "created_at": None,
            "format": opts.format,
            "record_schema": schema.EVAL_SCHEMA,
            "record_schema_sha256": hashlib.sha256(
                schema.schema_text(schema.EVAL_SCHEMA).encode()).hexdigest(),
            "fields": fields,
            "warehouse": str(wh.path.resolve()),
            "selection": {**{k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in asdict(opts).items()},
                          "grader_version": None, "query": query,
                          "candidates": len(rows)},
            "schema_shapes_validated": shapes,
            "totals": {opts.split: {"problems": n_chosen, "records": n_chosen}},
            "counts": counts,
        }
        finish_manifest(stage, manifest, warnings)
    result = ExportResult(out=out, manifest=manifest, warnings=warnings)
    unrecorded = ("later training exports hold back only the problems of a test split, not "
                  "the other problems of this eval set")
    if record:
        if _record_export(wh, "eval", out, opts.format, manifest,
                          files.sha256_file(out / files.MANIFEST), problem_ids=chosen) is None:
            warnings.append("the warehouse stayed busy: this export is not recorded in the "
                            f"exports table (the files are complete); {unrecorded}")
    elif opts.split != "test":
        warnings.append(f"not recorded in the warehouse (record=False): {unrecorded}")
    return result
