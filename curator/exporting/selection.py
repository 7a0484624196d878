"""The SQL of a training export (steps 1 to 3 of :mod:`curator.exporting.training`):
the records query with one flag per filter and the funnel it counts, the one-statement
:func:`selection_query` the manifest records, evaluation problems held back, the split
assignment, duplicate removal, the per-problem caps and the counts of what was written.
"""

from __future__ import annotations

from dataclasses import dataclass

from curator.errors import CuratorError
from curator.exporting import layouts, schema, splits
from curator.exporting.options import (DEFAULT_STRATIFY, ExportOptions, HELD_EVAL_EXPORT,
                                       HELD_SAME_QUESTION, HELD_TEST_SPLIT)


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
HELD_BACK_FILTER = ("holding back evaluation problems: a dataset's test split, problems "
                    "written by curator export-eval and problems with the same question as "
                    "one of those (--allow-eval-problems takes them)")
# The evaluation problems themselves (a problem of a test split as loaded, or one that
# an eval export wrote), over the problems table.
_EVAL_PROBLEMS_SQL = ("SELECT problem_id, question_key FROM problems WHERE split = 'test' "
                      "OR problem_id IN (SELECT problem_id FROM eval_export_problems)")
# ... and every problem with the question of one of them: the same question under
# another id (imported before its dataset was loaded, loaded under two datasets or
# splits) must not reach training either. Questions are compared by the stored
# problems.question_key (curator.ids.question_key: the text NFKC-normalised, a leading
# "Problem:" / trailing "Solution:" label dropped, whitespace runs collapsed, case kept),
# the key `curator import` links rationales to problems by.
_HELD_BACK_SQL = ("problem_split IS DISTINCT FROM 'test' AND problem_id NOT IN "
                  "(SELECT problem_id FROM eval_export_problems) AND problem_id NOT IN "
                  "(SELECT problem_id FROM problems WHERE question_key IN "
                  f"(SELECT question_key FROM ({_EVAL_PROBLEMS_SQL})))")


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


def _held_back(con, opts: ExportOptions, run_ids) -> tuple[dict, dict]:
    """The problems the held-back filter kept out of this export (that every other
    filter let through), by reason: ``{reason: sorted problem ids}``; and, for those held
    back only for their question, the evaluation problems with that question
    (``{problem id: [evaluation problem ids]}``)."""
    flist = _filters(opts, run_ids)
    if opts.allow_eval_problems:
        return {}, {}
    h = next(i for i, f in enumerate(flist) if f.name == HELD_BACK_FILTER)
    others = " AND ".join(f"f{i}" for i in range(len(flist)) if i != h) or "true"
    rows = con.execute(f"""
        WITH held AS (SELECT DISTINCT problem_id FROM export_records
                      WHERE {others} AND NOT f{h}),
             evals AS ({_EVAL_PROBLEMS_SQL})
        SELECT h.problem_id,
               p.split IS NOT DISTINCT FROM 'test' AS in_test,
               h.problem_id IN (SELECT problem_id FROM eval_export_problems) AS eval_exported,
               (SELECT list(e.problem_id ORDER BY e.problem_id) FROM evals e
                WHERE e.question_key = p.question_key AND e.problem_id <> h.problem_id) AS twins
        FROM held h JOIN problems p ON p.problem_id = h.problem_id
        ORDER BY h.problem_id""").fetchall()
    out: dict[str, list[str]] = {HELD_TEST_SPLIT: [], HELD_EVAL_EXPORT: [],
                                 HELD_SAME_QUESTION: []}
    same_question: dict[str, list[str]] = {}
    for pid, in_test, exported, twins in rows:
        if in_test:
            out[HELD_TEST_SPLIT].append(pid)
        if exported:
            out[HELD_EVAL_EXPORT].append(pid)
        if not in_test and not exported:
            out[HELD_SAME_QUESTION].append(pid)
            same_question[pid] = list(twins or [])
    return {reason: ids for reason, ids in out.items() if ids}, same_question


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
    representative = _question_representatives(con)
    block["same_question"] = {
        "rule": "problems with the same question (problems.question_key) share a split: "
                "the one the smallest problem_id with that question is placed in",
        # selected problems whose question another problem of the warehouse has, and
        # those of them placed by another problem's id than their own
        "problems": len(representative),
        "placed_by_another_id": sum(p != r for p, r in representative.items())}
    if opts.split_method == splits.BALANCED_METHOD:
        stratify = opts.stratify if opts.stratify is not None else DEFAULT_STRATIFY
        key_sql = ", ".join(stratify) if stratify else "NULL"
        problems = con.execute(f"SELECT DISTINCT problem_id, {key_sql} FROM export_records "
                               f"WHERE passes ORDER BY problem_id").fetchall()
        block["stratify"] = list(stratify)
        block["warning"] = ("balanced splits depend on the whole selection: another "
                            "selection moves problems between splits")
        # One item per question, with the stratum of its smallest selected problem.
        stratum = {r[0]: tuple(r[1:]) for r in problems}
        groups = splits.question_groups(stratum, representative)
        dealt = splits.assign_splits(((rep, stratum[members[0]])
                                      for rep, members in groups.items()), spec, opts.seed)
        return {m: dealt[rep] for rep, members in groups.items() for m in members}, block
    ids = [r[0] for r in con.execute("SELECT DISTINCT problem_id FROM export_records "
                                     "WHERE passes ORDER BY problem_id").fetchall()]
    result = splits.stable_assignment(ids, spec, opts.seed,
                                      earlier.assignment if earlier else None, representative)
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
        if result.moved:
            warnings.append(
                f"--splits-from: the earlier export put problems with the same question in "
                f"different splits; {len(result.moved)} problem(s) moved to the split of the "
                f"smallest problem_id of their question that it placed (ids in manifest.json "
                f"split_assignment.moved)")
    block["reused"], block["hashed"] = result.reused, result.hashed
    block["moved"] = sorted(result.moved)
    return result.assignment, block


def _question_representatives(con) -> dict[str, str]:
    """problem_id -> the smallest problem_id in the warehouse with the same question
    (problems.question_key), for the passing problems whose question another problem
    shares; a problem absent here has a question of its own."""
    rows = con.execute("""
        WITH shared AS (SELECT question_key, min(problem_id) AS representative
                        FROM problems GROUP BY question_key HAVING count(*) > 1)
        SELECT p.problem_id, s.representative
        FROM problems p JOIN shared s USING (question_key)
        WHERE p.problem_id IN (SELECT problem_id FROM export_records WHERE passes)
        ORDER BY p.problem_id""").fetchall()
    return dict(rows)


def _ungraded(con, opts: ExportOptions, run_ids: list[str] | None) -> list[dict]:
    """Samples of the selected runs (--runs, or the teacher runs; and --dataset) that have
    a rationale but no verdict of the current grader, per run: the export cannot label
    them, so they are left out, and `curator grade` is what brings them in."""
    runs = (f"s.run_id IN {_sql_list(run_ids)}" if run_ids is not None
            else "r.role = 'teacher'")
    datasets = (f" AND s.problem_id IN (SELECT problem_id FROM problems WHERE dataset IN "
                f"{_sql_list(opts.datasets)})" if opts.datasets else "")
    rows = con.execute(f"""
        SELECT r.run_id, r.model, count(*)
        FROM samples s JOIN run_roles r ON r.run_id = s.run_id
        WHERE {runs}{datasets} AND s.completion IS NOT NULL
          AND s.sample_id NOT IN (SELECT sample_id FROM current_grades)
        GROUP BY ALL ORDER BY r.run_id""").fetchall()
    return [{"run_id": rid, "model": model, "samples": n} for rid, model, n in rows]


def ungraded_line(ungraded: list[dict], grader: str | None) -> str:
    """The sentence that names the ungraded samples left out, and the command to run."""
    n = sum(u["samples"] for u in ungraded)
    runs = ", ".join(f"{u['run_id']} ({u['model']}) {u['samples']}" for u in ungraded)
    by = f"the current grader {grader}" if grader else "any grader"
    return (f"{n} sample(s) of the selected runs are not graded by {by} and are "
            f"not exported: {runs}; run `curator grade` to grade them")


def _empty_error(con, funnel: list[tuple[str, int]], grader: str | None,
                 ungraded: list[dict] = ()) -> CuratorError:
    if grader is None:
        return CuratorError("nothing to export: no sample has been graded yet; run "
                            "`curator grade` first")
    if funnel[0][1] == 0:
        return CuratorError(f"nothing to export: no sample is graded by the current grader "
                            f"{grader}; run `curator grade`")
    hint = f". {ungraded_line(ungraded, grader)}" if ungraded else ""
    for (prev_name, prev), (name, n) in zip(funnel, funnel[1:]):
        if n == 0:
            if name.startswith("--runs") and ungraded:
                # the runs are there, only not graded: say so, not "--runs is wrong"
                total = sum(u["samples"] for u in ungraded)
                runs = ", ".join(f"{u['run_id']} ({u['model']}): {u['samples']}"
                                 for u in ungraded)
                return CuratorError(f"nothing to export: {name} has no sample graded by the "
                                    f"current grader {grader}, and {total} not graded "
                                    f"({runs}); run `curator grade` first")
            return CuratorError(f"the selection is empty: {name} left 0 of the {prev} "
                                f"samples that remained after {prev_name}{hint}")
    return CuratorError("the selection is empty" + hint)


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
