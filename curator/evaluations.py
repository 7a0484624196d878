"""Student evaluations in the warehouse: the API `distill eval` / `distill compare` call.

A student (a base model, optionally with an adapter, sampled with given settings) is a
run of kind ``student`` (role ``student``, so `curator export` never takes it by
default). Its samples go into ``samples`` like any teacher's, are graded by the same
grader (:mod:`curator.grading`, the same ``GRADER_VERSION``) into ``grades``, and each
voting rule's result is a row of ``evaluations`` with a 95% Wilson interval. The view
``method_comparison`` puts the students of one comparison beside the teacher runs of
their training data. Every step is idempotent and safe to interrupt:

====================================  =========================================================
:func:`ensure_student_run`            create or get the run; its id is a hash of (base model,
                                      adapter path, sampling settings), so a re-run resumes it
:func:`add_samples`                   append samples; a (problem, sample index) already stored
                                      is kept as it is, so re-running adds nothing
:func:`grade_student_run`             grade what the current grader has not graded yet
                                      (committed in batches: an interrupt loses nothing graded)
:func:`student_grades`                the verdicts, to vote on
:func:`record_evaluation(s)`          upsert the rules' results (one row per run, eval dataset,
                                      eval split, rule and comparison)
:func:`read_evaluations`              read them back
====================================  =========================================================

See docs/evaluations.md for an example. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from curator.errors import CuratorError
from curator.ids import sample_id as make_sample_id
from curator.ids import stable_id
from curator.warehouse import STUDENT_MODEL_PREFIX, Warehouse

STUDENT_KIND = "student"
Z95 = 1.959963984540054          # two-sided 95% normal quantile
# Rows per write transaction when appending samples (other processes wait meanwhile).
BATCH_ROWS = 5000


def _grader_version() -> str:
    from curator.grading.api import GRADER_VERSION
    return GRADER_VERSION


# -- runs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudentRun:
    run_id: str
    model: str          # 'student:<name>', as shown in run_stats and exports
    created: bool       # False when the run already existed (a re-run)
    metadata: dict


def _canonical(obj) -> str:
    try:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError) as exc:
        raise CuratorError(f"cannot store {obj!r} as JSON: {exc}") from None


def _teacher_runs_of(training_export: Path) -> tuple[dict, list[str]]:
    from curator.exporting import files
    path = training_export / files.MANIFEST if training_export.is_dir() else training_export
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CuratorError(f"training_export: cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != "training":
        raise CuratorError(f"training_export: {path} is not the manifest of a training export")
    runs = (manifest.get("selection") or {}).get("runs") or []
    ids = [r["run_id"] for r in runs if isinstance(r, dict) and r.get("run_id")]
    return ({"manifest": str(path.resolve()), "manifest_sha256": files.sha256_file(path)}, ids)


def student_run_id(base_model: str, adapter_path: str | None, sampling: Mapping) -> str:
    """The run id of a student: a hash of its base model, adapter path (absolute) and
    sampling settings. The same student sampled the same way is the same run."""
    return stable_id("r", STUDENT_KIND, base_model, adapter_path or "", _canonical(dict(sampling)))


def ensure_student_run(wh: Warehouse, *, base_model: str, adapter_path: str | Path | None,
                       method: str, sampling: Mapping, training_config: Mapping | None = None,
                       training_export: str | Path | None = None,
                       name: str | None = None) -> StudentRun:
    """Create the student's run, or get it if it exists.

    ``base_model``: the model id or path the student starts from; ``adapter_path``: its
    trained adapter or model directory (None for the base model itself); ``method``:
    e.g. 'nat', 'nce', 'asc', 'base'; ``sampling``: the settings that change the samples
    (k, temperature, max_new_tokens, seed...), part of the run's identity;
    ``training_config``: the training run's configuration (stored as JSON);
    ``training_export``: the `curator export` directory (or manifest) it was trained
    on, whose teacher runs ``method_comparison`` shows beside it; ``name``: the model
    name after 'student:' (default ``<method>:<adapter directory name or base model>``).
    """
    if not base_model or not method:
        raise CuratorError("a student run needs base_model and method")
    adapter = str(Path(adapter_path).resolve()) if adapter_path else None
    run_id = student_run_id(base_model, adapter, sampling)
    model = STUDENT_MODEL_PREFIX + (name or f"{method}:{Path(adapter).name if adapter else base_model}")
    metadata: dict = {"base_model": base_model, "adapter_path": adapter, "method": method,
                      "training_config": dict(training_config) if training_config else None,
                      "training_export": None, "teacher_run_ids": []}
    if training_export is not None:
        metadata["training_export"], metadata["teacher_run_ids"] = _teacher_runs_of(
            Path(training_export))
    meta_json = _canonical(metadata)
    with wh.write() as con:
        rows = con.execute("SELECT kind, model, metadata FROM runs WHERE run_id = ?",
                           [run_id]).fetchall()
        if rows:
            kind, stored_model, stored = rows[0]
            stored = json.loads(stored) if isinstance(stored, str) else (stored or {})
            if kind != STUDENT_KIND:
                raise CuratorError(f"run {run_id} exists with kind {kind!r}, not a student")
            for key in ("method", "training_config"):
                if stored.get(key) != json.loads(meta_json).get(key):
                    raise CuratorError(
                        f"student run {run_id} ({stored_model}) is recorded with {key} "
                        f"{stored.get(key)!r}, not {metadata.get(key)!r}: the adapter at "
                        f"{adapter} was retrained in place. Evaluate the new adapter from "
                        "another directory, or give other sampling settings")
            return StudentRun(run_id, stored_model, False, stored)
        con.execute("""INSERT INTO runs (run_id, kind, role, provider, model, params, source,
                                         metadata)
                       VALUES (?, 'student', 'student', 'local', ?, ?::JSON, ?, ?::JSON)""",
                    [run_id, model, _canonical(dict(sampling)), adapter or base_model, meta_json])
    return StudentRun(run_id, model, True, json.loads(meta_json))


def _check_student(con, run_id: str) -> None:
    rows = con.execute("SELECT kind FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        raise CuratorError(f"no run {run_id} in the warehouse; create it with "
                           "ensure_student_run first")
    if rows[0][0] != STUDENT_KIND:
        raise CuratorError(f"run {run_id} has kind {rows[0][0]!r}: only student runs are "
                           "written through curator.evaluations")


# -- samples -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StudentSample:
    """One rationale of a student for one problem (``sample_index`` from 0)."""

    problem_id: str
    sample_index: int
    completion: str | None
    finish_reason: str | None = None       # 'stop' | 'length'
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    metadata: Mapping | None = None        # e.g. {"logprob": -12.3, "greedy": true}


@dataclass
class AddReport:
    added: int = 0      # new samples stored
    present: int = 0    # already stored (kept as they were)


def _as_sample(s, where: str) -> StudentSample:
    if isinstance(s, StudentSample):
        obj = s
    elif isinstance(s, Mapping):
        unknown = set(s) - set(StudentSample.__dataclass_fields__)
        if unknown:
            raise CuratorError(f"{where}: unknown field(s) {sorted(unknown)}")
        try:
            obj = StudentSample(**s)
        except TypeError as exc:
            raise CuratorError(f"{where}: {exc}") from None
    else:
        raise CuratorError(f"{where}: expected a StudentSample or a dict, got {type(s).__name__}")
    if not isinstance(obj.problem_id, str) or not obj.problem_id:
        raise CuratorError(f"{where}: problem_id must be a non-empty string")
    if isinstance(obj.sample_index, bool) or not isinstance(obj.sample_index, int) \
            or obj.sample_index < 0:
        raise CuratorError(f"{where}: sample_index must be an integer >= 0, "
                           f"got {obj.sample_index!r}")
    if obj.completion is not None and not isinstance(obj.completion, str):
        raise CuratorError(f"{where}: completion must be a string or None")
    return obj


def add_samples(wh: Warehouse, run_id: str, samples: Iterable) -> AddReport:
    """Store a student's samples (:class:`StudentSample` or dicts with its fields).

    Every problem must be in the warehouse. A (problem, sample index) already stored for
    the run is left as it is (counted in ``present``), so calling again with the same
    or a longer list adds only what is new. Written in transactions of
    ``BATCH_ROWS``: an interrupt keeps every batch already committed.
    """
    import pyarrow as pa

    rows: dict[tuple[str, int], StudentSample] = {}
    for i, s in enumerate(samples):
        obj = _as_sample(s, f"sample {i}")
        key = (obj.problem_id, obj.sample_index)
        if key in rows and rows[key] != obj:
            raise CuratorError(f"sample {i}: problem {obj.problem_id} sample_index "
                               f"{obj.sample_index} is given twice with different contents")
        rows[key] = obj
    report = AddReport()
    items = list(rows.values())
    with wh.read() as con:
        _check_student(con, run_id)
        con.register("incoming_ids", pa.table({"problem_id": sorted({s.problem_id for s in items})}))
        missing = [r[0] for r in con.execute(
            "SELECT problem_id FROM incoming_ids ANTI JOIN problems USING (problem_id) "
            "ORDER BY problem_id").fetchall()]
    if missing:
        raise CuratorError(f"{len(missing)} problem id(s) are not in the warehouse "
                           f"{wh.path}, e.g. {', '.join(missing[:3])}; nothing was stored")
    for start in range(0, len(items), BATCH_ROWS):
        chunk = items[start:start + BATCH_ROWS]
        table = pa.table({
            "sample_id": [make_sample_id(run_id, s.problem_id, s.sample_index) for s in chunk],
            "problem_id": [s.problem_id for s in chunk],
            "sample_index": pa.array([s.sample_index for s in chunk], pa.int32()),
            "completion": [s.completion for s in chunk],
            "finish_reason": [s.finish_reason for s in chunk],
            "prompt_tokens": pa.array([s.prompt_tokens for s in chunk], pa.int64()),
            "completion_tokens": pa.array([s.completion_tokens for s in chunk], pa.int64()),
            "metadata": [_canonical(dict(s.metadata)) if s.metadata else None for s in chunk],
        })
        with wh.write() as con:
            con.register("incoming_samples", table)
            before = con.execute("SELECT count(*) FROM samples WHERE run_id = ?",
                                 [run_id]).fetchall()[0][0]
            con.execute("""
                INSERT INTO samples (sample_id, run_id, problem_id, sample_index, completion,
                                     finish_reason, prompt_tokens, completion_tokens, metadata)
                SELECT i.sample_id, ?, i.problem_id, i.sample_index, i.completion,
                       i.finish_reason, i.prompt_tokens, i.completion_tokens, i.metadata::JSON
                FROM incoming_samples i
                WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.sample_id = i.sample_id)""",
                        [run_id])
            after = con.execute("SELECT count(*) FROM samples WHERE run_id = ?",
                                [run_id]).fetchall()[0][0]
            con.unregister("incoming_samples")
        report.added += after - before
        report.present += len(chunk) - (after - before)
    return report


# -- grading -----------------------------------------------------------------------------

def grade_student_run(wh: Warehouse, run_id: str, *, workers: int | None = None,
                      progress=None):
    """Grade the run's samples that the current grader has not graded yet, exactly as
    `curator grade` grades teachers' (same code, same ``GRADER_VERSION``). Returns the
    :class:`curator.grading.GradeReport`; a second call grades nothing."""
    from curator.grading.batch import grade_pending
    with wh.read() as con:
        _check_student(con, run_id)
    return grade_pending(wh, run_ids=[run_id], workers=workers, progress=progress)


def student_grades(wh: Warehouse, run_id: str, *,
                   grader_version: str | None = None) -> list[dict]:
    """One dict per graded sample of the run, ordered by (problem_id, sample_index):
    problem_id, sample_index, sample_id, completion, correct, status, extracted,
    normalized, metadata (a dict or None). Samples the grader could not grade (no
    reference answer, no completion) are absent."""
    version = grader_version or _grader_version()
    with wh.read() as con:
        _check_student(con, run_id)
        cur = con.execute("""
            SELECT s.problem_id, s.sample_index, s.sample_id, s.completion, g.correct,
                   g.status, g.extracted, g.normalized, s.metadata
            FROM samples s JOIN grades g ON g.sample_id = s.sample_id
            WHERE s.run_id = ? AND g.grader_version = ?
            ORDER BY s.problem_id, s.sample_index""", [run_id, version])
        cols = [d[0] for d in cur.description]
        out = [dict(zip(cols, r)) for r in cur.fetchall()]
    for row in out:
        if isinstance(row["metadata"], str):
            row["metadata"] = json.loads(row["metadata"])
    return out


# -- evaluations -------------------------------------------------------------------------

def wilson_interval(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion correct / n (95% by default)."""
    if n <= 0:
        raise CuratorError(f"an interval needs n > 0, got {n}")
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at p = 0 (p = 1) the bound is exactly 0 (1); rounding would put it a hair inside
    low = 0.0 if correct <= 0 else max(0.0, centre - half)
    high = 1.0 if correct >= n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Evaluation:
    run_id: str
    eval_dataset: str
    eval_split: str
    rule: str
    n: int
    correct: float
    accuracy: float
    ci_low: float
    ci_high: float
    grader_version: str
    comparison_id: str = ""
    label: str | None = None
    metadata: dict | None = field(default=None, compare=False)


def _evaluation(run_id: str, eval_dataset: str, eval_split: str, rule: str, n: int,
                correct: float, grader_version: str | None, comparison_id: str | None,
                label: str | None, metadata: Mapping | None) -> Evaluation:
    where = f"evaluation of run {run_id} ({eval_dataset}/{eval_split}, rule {rule!r})"
    for name, value in (("eval_dataset", eval_dataset), ("eval_split", eval_split),
                        ("rule", rule)):
        if not isinstance(value, str) or not value:
            raise CuratorError(f"{where}: {name} must be a non-empty string")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise CuratorError(f"{where}: n must be a positive integer, got {n!r}")
    if not isinstance(correct, (int, float)) or isinstance(correct, bool) \
            or not 0 <= correct <= n:
        raise CuratorError(f"{where}: correct must be a number in [0, n={n}], got {correct!r}")
    low, high = wilson_interval(correct, n)
    return Evaluation(run_id, eval_dataset, eval_split, rule, n, float(correct), correct / n,
                      low, high, grader_version or _grader_version(), comparison_id or "",
                      label, dict(metadata) if metadata else None)


def record_evaluations(wh: Warehouse, run_id: str, results: Iterable[Mapping], *,
                       eval_dataset: str, eval_split: str, comparison_id: str | None = None,
                       label: str | None = None,
                       grader_version: str | None = None) -> list[Evaluation]:
    """Upsert one ``evaluations`` row per result (a mapping with ``rule``, ``n``,
    ``correct`` and optionally ``metadata``), all in one transaction. A row with the
    same (run, eval dataset, eval split, rule, comparison) is replaced, so re-running
    an evaluation updates its rows instead of adding more. ``correct`` may be
    fractional (partial credit for a tied vote). ``grader_version`` defaults to the
    current grader's."""
    rows = []
    for i, r in enumerate(results):
        if not isinstance(r, Mapping) or not {"rule", "n", "correct"} <= set(r):
            raise CuratorError(f"result {i}: expected a mapping with rule, n and correct, "
                               f"got {r!r}")
        rows.append(_evaluation(run_id, eval_dataset, eval_split, r["rule"], r["n"],
                                r["correct"], grader_version, comparison_id, label,
                                r.get("metadata")))
    rules = [e.rule for e in rows]
    if len(set(rules)) != len(rules):
        raise CuratorError(f"evaluation of run {run_id}: a rule is given twice in {rules}")
    with wh.write() as con:
        _check_student(con, run_id)
        for e in rows:
            con.execute("""
                INSERT INTO evaluations (run_id, eval_dataset, eval_split, rule, comparison_id,
                                         label, n, correct, accuracy, ci_low, ci_high,
                                         grader_version, metadata)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)
                ON CONFLICT (run_id, eval_dataset, eval_split, rule, comparison_id) DO UPDATE
                SET label = excluded.label, n = excluded.n, correct = excluded.correct,
                    accuracy = excluded.accuracy, ci_low = excluded.ci_low,
                    ci_high = excluded.ci_high, grader_version = excluded.grader_version,
                    metadata = excluded.metadata, updated_at = now()""",
                        [e.run_id, e.eval_dataset, e.eval_split, e.rule, e.comparison_id,
                         e.label, e.n, e.correct, e.accuracy, e.ci_low, e.ci_high,
                         e.grader_version, _canonical(e.metadata) if e.metadata else None])
    return rows


def record_evaluation(wh: Warehouse, run_id: str, *, eval_dataset: str, eval_split: str,
                      rule: str, n: int, correct: float, comparison_id: str | None = None,
                      label: str | None = None, grader_version: str | None = None,
                      metadata: Mapping | None = None) -> Evaluation:
    """One rule's result; see :func:`record_evaluations`."""
    return record_evaluations(
        wh, run_id, [{"rule": rule, "n": n, "correct": correct, "metadata": metadata}],
        eval_dataset=eval_dataset, eval_split=eval_split, comparison_id=comparison_id,
        label=label, grader_version=grader_version)[0]


def read_evaluations(wh: Warehouse, *, run_id: str | None = None,
                     comparison_id: str | None = None) -> list[Evaluation]:
    """Stored evaluations (of one run and/or one comparison), ordered by comparison,
    label, run, dataset, split and rule."""
    conds, params = [], []
    if run_id is not None:
        conds.append("run_id = ?")
        params.append(run_id)
    if comparison_id is not None:
        conds.append("comparison_id = ?")
        params.append(comparison_id)
    cols = [f for f in Evaluation.__dataclass_fields__]
    with wh.read() as con:
        rows = con.execute(f"""SELECT {', '.join(cols)} FROM evaluations
                               {'WHERE ' + ' AND '.join(conds) if conds else ''}
                               ORDER BY comparison_id, label, run_id, eval_dataset, eval_split,
                                        rule""", params).fetchall()
    out = []
    for r in rows:
        d = dict(zip(cols, r))
        if isinstance(d["metadata"], str):
            d["metadata"] = json.loads(d["metadata"])
        out.append(Evaluation(**d))
    return out


__all__ = ["AddReport", "Evaluation", "StudentRun", "StudentSample", "add_samples",
           "ensure_student_run", "grade_student_run", "read_evaluations",
           "record_evaluation", "record_evaluations", "student_grades", "student_run_id",
           "wilson_interval"]
