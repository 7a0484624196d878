"""`curator export`: graded rationales to leak-free training splits.

The pipeline, all inside one read-only connection (one consistent snapshot; the
warehouse is never written except for the one-row record of the finished export):

1. **records**: the one pass over the text. Every sample graded by the current
   grader, labelled by the ``positives`` / ``negatives`` views, with one flag per
   filter in a fixed order (``--runs``, or teacher runs only when --runs is not given;
   ``--dataset``, ``--where``, no error, has a rationale, not truncated; evaluation
   problems held back), and, for the samples that pass them all, the record
   fields and a 64-bit hash of the rationale; into a temporary table in file order
   (problem, sample). The flags count the funnel, so an empty selection names the
   filter that emptied it. (Reading the text is cheap; what costs is sorting and
   copying it, so it is done once, and only for the samples that pass.)
2. **split** by problem (:mod:`curator.exporting.splits`): by the keyed hash of the
   problem id and the seed (the default; an earlier export's assignment where
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from curator import __version__
from curator.errors import CuratorError
from curator.exporting import files, formats, layouts, schema, splits
from curator.exporting.splits_from import read_earlier_assignment
from curator.ids import stable_id
from curator.warehouse import Warehouse

STRATA_COLUMNS = ("dataset", "subject", "level")
DEFAULT_STRATIFY = ("subject", "level")   # of the balanced split method
_HASH = splits.HASH_METHOD
# Why a problem is held back from a training export: manifest held_back.reasons keys,
# and what they mean.
HELD_TEST_SPLIT = "dataset_test_split"
HELD_EVAL_EXPORT = "eval_export"
HELD_BACK_REASONS = {HELD_TEST_SPLIT: "in the test split of their dataset",
                     HELD_EVAL_EXPORT: "written by curator export-eval"}
# Columns a --where expression may use, besides the record fields of the schema.
EXTRA_COLUMNS = ("problem_split", "sample_index", "grade_status", "finish_reason",
                 "error_class", "prompt_tokens", "completion_tokens", "provider")
# Records are written in (problem_id, sample_id) order: export_records is created in
# that order and the writers keep table order (no second sort of the text).
RECORD_ORDER: list[str] = []


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; recorded verbatim in the manifest."""

    runs: tuple[str, ...] = ()            # run ids or teacher model names; () = all
    datasets: tuple[str, ...] = ()        # () = all
    where: str | None = None              # SQL over the record fields and EXTRA_COLUMNS
    splits: str = splits.DEFAULT_SPLITS
    seed: int = 0
    split_method: str = _HASH  # 'keyed-hash' (stable) | 'balanced'
    splits_from: str | None = None        # an earlier export's directory or manifest
    # balanced method only: columns whose mix every split keeps (None = subject, level)
    stratify: tuple[str, ...] | None = None
    max_positives: int | None = None      # per problem
    max_negatives: int | None = None      # per problem
    include_truncated: bool = False       # finish_reason = 'length'
    include_errored: bool = False         # error_class set (a failed request has no text anyway)
    dedupe: bool = True
    # Put problems of a dataset's test split and problems written by `curator
    # export-eval` into the splits too (they are held back by default).
    allow_eval_problems: bool = False
    format: str = "jsonl"
    # The rows written (curator.exporting.layouts); "default" = the export records.
    layout: str = "default"
    style: str | None = None              # standard | conversational | messages
    prompt_template: str | None = None    # standard style: text with {question}
    chat_prompt: str | None = None        # chat styles: a prompt template's turns
    pairs_per_problem: int | None = None  # preference: None = all pairs

    def layout_options(self) -> layouts.LayoutOptions:
        return layouts.LayoutOptions(layout=self.layout, style=self.style,
                                     prompt_template=self.prompt_template,
                                     chat_prompt=self.chat_prompt,
                                     pairs_per_problem=self.pairs_per_problem)


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
        SELECT *, 'positive' AS label FROM positives
        UNION ALL BY NAME
        SELECT *, 'negative' AS label FROM negatives
    )
    SELECT l.problem_id, p.dataset, p.subject, p.level, p.question, p.reference_answer,
           l.completion AS rationale, l.extracted_answer, l.label,
           r.model AS teacher_model, l.run_id, l.sample_id, l.grader_version,
           p.split AS problem_split, l.sample_index, l.grade_status, l.finish_reason,
           l.error_class, l.prompt_tokens, l.completion_tokens, r.provider
    FROM labelled l
    JOIN problems p ON p.problem_id = l.problem_id
    JOIN runs r ON r.run_id = l.run_id"""


@dataclass(frozen=True)
class _Filter:
    name: str   # how the user names it in an error
    sql: str    # a boolean expression over the base columns


TEACHER_FILTER = "teacher runs only: student runs are left out (name them in --runs to take them)"
HELD_BACK_FILTER = ("holding back evaluation problems: a dataset's test split and problems "
                    "written by curator export-eval (--allow-eval-problems takes them)")
_HELD_BACK_SQL = ("problem_split IS DISTINCT FROM 'test' AND problem_id NOT IN "
                  "(SELECT problem_id FROM eval_export_problems)")


def _filters(opts: ExportOptions, run_ids: list[str] | None) -> list[_Filter]:
    out = []
    if run_ids is not None:
        out.append(_Filter("--runs " + ",".join(opts.runs), f"run_id IN {_sql_list(run_ids)}"))
    else:
        out.append(_Filter(TEACHER_FILTER, "run_id IN (SELECT run_id FROM run_roles "
                                           "WHERE role = 'teacher')"))
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
    for label, k in (("positive", opts.max_positives), ("negative", opts.max_negatives)):
        if k == 0:
            out.append(_Filter(f"--max-{label}s 0", f"label <> '{label}'"))
    if not opts.allow_eval_problems:
        out.append(_Filter(HELD_BACK_FILTER, _HELD_BACK_SQL))
    return out


# The record fields the base query provides (the schema's fields must all be here).
_BASE_FIELDS = ("problem_id", "dataset", "subject", "level", "question", "reference_answer",
                "rationale", "extracted_answer", "label", "teacher_model", "run_id",
                "sample_id", "grader_version")
# Kept for every sample, passing or not: the split, the strata, the funnel and the caps
# need them. The other fields (the text) only for the samples that pass.
_KEY_FIELDS = ("problem_id", "dataset", "subject", "level", "label", "run_id", "sample_id")


def _record_columns(fields: list[str]) -> str:
    missing = [f for f in fields if f not in _BASE_FIELDS]
    if missing:
        raise CuratorError(f"internal: export record field(s) {missing} of "
                           f"{schema.TRAINING_SCHEMA} have no source column in the warehouse")
    return ", ".join(f'"{f}"' if f in _KEY_FIELDS else f'CASE WHEN passes THEN "{f}" END AS "{f}"'
                     for f in fields)


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


def records_query(opts: ExportOptions, run_ids: list[str] | None, fields: list[str]) -> str:
    """One row per graded sample, in file order: a flag per filter (``f0``, ``f1``, ...
    in :func:`_filters` order), ``passes`` (all of them), ``keep`` (passes, until the
    duplicates and caps say otherwise), the record fields (text only where it passes),
    the rationale's hash, and an empty ``export_split``."""
    flist = _filters(opts, run_ids)
    flags = "".join(f", ({f.sql}) AS f{i}" for i, f in enumerate(flist))
    flag_cols = "".join(f", f{i}" for i in range(len(flist)))
    passes = " AND ".join(f"f{i}" for i in range(len(flist))) or "true"
    return f"""
SELECT NULL::VARCHAR AS export_split, {_record_columns(fields)}{flag_cols}, passes,
       passes AS keep, CASE WHEN passes THEN hash(rationale) END AS rationale_hash
FROM (SELECT *, {passes} AS passes
      FROM (SELECT *{flags} FROM ({_base_query()}
)))
ORDER BY problem_id, sample_id"""


def _caps(opts: ExportOptions) -> list[tuple[str, int]]:
    """(label, K) for the caps that keep some of a label (K = 0 is a filter)."""
    return [(label, int(k)) for label, k in (("positive", opts.max_positives),
                                             ("negative", opts.max_negatives)) if k]


def _cap_order(opts: ExportOptions, column: str = "sample_id") -> str:
    return layouts.seeded_order(opts.seed, column)


def selection_query(opts: ExportOptions, run_ids: list[str] | None) -> str:
    """One SQL statement that selects exactly the exported records (before the split):
    the filters, duplicate removal and the caps, written plainly. Recorded in the
    manifest; the export computes the same set in cheaper steps."""
    where = " AND ".join(f"({f.sql})" for f in _filters(opts, run_ids)) or "true"
    sql = f"""WITH base AS ({_base_query()}
),
kept AS (SELECT * FROM base WHERE {where}),
deduped AS (
    SELECT * FROM kept
    {"QUALIFY row_number() OVER (PARTITION BY problem_id, rationale ORDER BY sample_id) = 1"
     if opts.dedupe else ""}
)
SELECT * EXCLUDE (problem_split, sample_index, grade_status, finish_reason, error_class,
                  prompt_tokens, completion_tokens, provider)
FROM deduped"""
    caps = _caps(opts)
    if caps:
        limit = " ".join(f"WHEN '{label}' THEN {k}" for label, k in caps)
        sql += (f"\nQUALIFY row_number() OVER (PARTITION BY problem_id, label ORDER BY "
                f"{_cap_order(opts)}) <= CASE label {limit} ELSE 2147483647 END")
    return sql


def _funnel(con, opts: ExportOptions, run_ids) -> list[tuple[str, int]]:
    """Rows left after each filter, in order, starting from all graded samples."""
    flist = _filters(opts, run_ids)
    aggs = ["count(*)"] + [
        f"count(*) FILTER (WHERE {' AND '.join(f'f{j}' for j in range(i + 1))})"
        for i in range(len(flist))]
    row = con.execute(f"SELECT {', '.join(aggs)} FROM export_records").fetchall()[0]
    return [("graded samples", row[0])] + [(f.name, n) for f, n in zip(flist, row[1:])]


def _drop_duplicates(con) -> int:
    """Mark all but the first (smallest sample id) of each group of identical
    rationales within a problem as not kept; returns how many. Equal hashes only
    nominate candidates: the texts themselves are compared."""
    con.execute("""
        CREATE TEMP TABLE export_duplicates AS
        WITH groups AS (
            SELECT problem_id, rationale_hash FROM export_records WHERE keep
            GROUP BY ALL HAVING count(*) > 1
        )
        SELECT r.sample_id
        FROM export_records r SEMI JOIN groups g
             ON g.problem_id = r.problem_id AND g.rationale_hash = r.rationale_hash
        WHERE r.keep
        QUALIFY row_number() OVER (PARTITION BY r.problem_id, r.rationale
                                   ORDER BY r.sample_id) > 1""")
    n = con.execute("SELECT count(*) FROM export_duplicates").fetchall()[0][0]
    if n:
        # An UPDATE keeps the rows where they are, so the file order stays as sorted.
        con.execute("UPDATE export_records SET keep = false "
                    "WHERE sample_id IN (SELECT sample_id FROM export_duplicates)")
    return n


def _apply_caps(con, opts: ExportOptions) -> int:
    caps = _caps(opts)
    if not caps:
        return 0
    limit = " ".join(f"WHEN '{label}' THEN {k}" for label, k in caps)
    con.execute(f"""
        CREATE TEMP TABLE export_over_cap AS
        SELECT sample_id FROM export_records WHERE keep
        QUALIFY row_number() OVER (PARTITION BY problem_id, label ORDER BY {_cap_order(opts)})
                > CASE label {limit} ELSE 2147483647 END""")
    n = con.execute("SELECT count(*) FROM export_over_cap").fetchall()[0][0]
    if n:
        con.execute("UPDATE export_records SET keep = false "
                    "WHERE sample_id IN (SELECT sample_id FROM export_over_cap)")
    return n


def _held_back(con, opts: ExportOptions, run_ids) -> dict:
    """The problems the held-back filter kept out of this export (that every other
    filter let through), by reason: ``{reason: sorted problem ids}``."""
    flist = _filters(opts, run_ids)
    if opts.allow_eval_problems:
        return {}
    h = next(i for i, f in enumerate(flist) if f.name == HELD_BACK_FILTER)
    others = " AND ".join(f"f{i}" for i in range(len(flist)) if i != h) or "true"
    rows = con.execute(f"""
        SELECT DISTINCT problem_id,
               problem_split IS NOT DISTINCT FROM 'test' AS in_test,
               problem_id IN (SELECT problem_id FROM eval_export_problems) AS eval_exported
        FROM (SELECT r.*, p.split AS problem_split
              FROM export_records r JOIN problems p ON p.problem_id = r.problem_id)
        WHERE {others} AND NOT f{h}
        ORDER BY problem_id""").fetchall()
    out: dict[str, list[str]] = {HELD_TEST_SPLIT: [], HELD_EVAL_EXPORT: []}
    for pid, in_test, exported in rows:
        if in_test:
            out[HELD_TEST_SPLIT].append(pid)
        if exported:
            out[HELD_EVAL_EXPORT].append(pid)
    return {reason: ids for reason, ids in out.items() if ids}


def _left_out_students(con, run_ids) -> list[dict]:
    """Student runs with graded samples that the default (teacher-only) selection left
    out; [] when --runs chose the runs."""
    if run_ids is not None:
        return []
    rows = con.execute("""
        SELECT r.run_id, r.model, count(*)
        FROM export_records e JOIN run_roles r USING (run_id)
        WHERE r.role = 'student' GROUP BY ALL ORDER BY r.run_id""").fetchall()
    return [{"run_id": rid, "model": model, "graded_samples": n} for rid, model, n in rows]


def _assign(con, opts: ExportOptions, spec: splits.SplitSpec, earlier,
            warnings: list[str]) -> tuple[dict[str, str], dict]:
    """problem_id -> split for the passing problems (``earlier``: the
    :class:`~curator.exporting.splits_from.EarlierAssignment` of --splits-from, or None),
    and the manifest's ``split_assignment`` block (without the problem lists)."""
    block: dict = {"method": opts.split_method, "seed": opts.seed,
                   "fractions": spec.as_dict()}
    if opts.split_method == splits.BALANCED_METHOD:
        stratify = opts.stratify if opts.stratify is not None else DEFAULT_STRATIFY
        key_sql = ", ".join(stratify) if stratify else "NULL"
        problems = con.execute(f"SELECT DISTINCT problem_id, {key_sql} FROM export_records "
                               f"WHERE passes").fetchall()
        block["stratify"] = list(stratify)
        block["warning"] = ("balanced splits depend on the whole selection: another "
                            "selection moves problems between splits")
        return splits.assign_splits(((r[0], tuple(r[1:])) for r in problems), spec,
                                    opts.seed), block
    ids = [r[0] for r in con.execute("SELECT DISTINCT problem_id FROM export_records "
                                     "WHERE passes ORDER BY problem_id").fetchall()]
    result = splits.stable_assignment(ids, spec, opts.seed,
                                      earlier.assignment if earlier else None)
    block["hash"] = splits.HASH_DESCRIPTION
    block["splits_from"] = None
    if earlier is not None:
        block["splits_from"] = {
            "manifest": str(earlier.path.resolve()), "manifest_sha256": earlier.manifest_sha256,
            "read_from": earlier.source, "method": earlier.method, "seed": earlier.seed,
            "problems": len(earlier.assignment)}
        if result.hashed and (earlier.seed != opts.seed or earlier.splits != spec.as_dict()
                              or earlier.method != splits.HASH_METHOD):
            warnings.append(
                f"--splits-from: {result.hashed} problem(s) new since that export are placed "
                f"by the keyed hash with seed {opts.seed} and {opts.splits}; the earlier "
                f"export used method {earlier.method}, seed {earlier.seed}, {earlier.splits}")
    block["reused"], block["hashed"] = result.reused, result.hashed
    return result.assignment, block


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
        run_ids = _resolve_runs(con, opts.runs)
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
        if funnel[-1][1] == 0:
            raise _empty_error(con, funnel, grader)

        held_back = _held_back(con, opts, run_ids)
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
            },
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
