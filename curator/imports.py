"""Import rationales that already exist (released teacher data, a student's samples) as runs.

Imported rationales link to loaded problems by normalised question text
(:func:`curator.ids.normalize_question`), which folds the formatting differences real files
have: the GPT-3.5 TDG file prefixes every question with "Problem:\\n", the GPT-4 one does
not. Problems that are not loaded yet are created from the record. The run id is a hash
of (format, model, file content), so importing the same file again adds nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curator import ids
from curator.durable import sha256_file
from curator.errors import CuratorError
from curator.latex import last_boxed
from curator.sources import (
    MAX_FIELD_CHARS,
    BadRecord,
    Collector,
    Problem,
    answer_value,
    check_source,
    insert_problems,
    iter_jsonl,
    parse_level,
    nothing_valid,
    problems_frame,
    record_rejects,
    text_field,
)
from curator.warehouse import Warehouse, run_role, scalar

FORMATS = ("tdg", "jsonl")


@dataclass
class Rationale:
    """One rationale of the file, before linking."""

    line: int
    model: str
    completion: str
    sample_index: int | None
    problem_id: str | None = None          # given explicitly by the record
    question: str | None = None
    reference_answer: str | None = None
    reference_solution: str | None = None
    subject: str | None = None
    level: int | None = None
    dataset: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class RunImport:
    run_id: str
    model: str
    records: int = 0
    linked: int = 0
    created: int = 0
    added: int = 0
    present: int = 0


@dataclass
class ImportReport:
    runs: list[RunImport] = field(default_factory=list)
    rejected: int = 0
    rejects_path: Path | None = None

    def rows(self) -> list[tuple]:
        return [(r.run_id, r.model, r.records, r.linked, r.created, r.added, r.present)
                for r in self.runs]

    def row(self) -> tuple:
        # A TDG import is one run; the CLI shows the first (or only) one.
        return self.rows()[0]


def _opt_int(obj: dict, name: str) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRecord(f"field '{name}' must be an integer, got {type(v).__name__}")
    return v


def read_tdg(path: Path, model: str, collector: Collector) -> list[Rationale]:
    out: list[Rationale] = []
    for n, obj in iter_jsonl(path, collector):
        try:
            question = text_field(obj, "question")
            gens = obj.get("generated_answer")
            if not isinstance(gens, list):
                raise BadRecord("field 'generated_answer' must be a list of strings")
            for i, g in enumerate(gens):
                if not isinstance(g, str):
                    raise BadRecord(f"generated_answer[{i}] must be a string, got {type(g).__name__}")
                if len(g) > MAX_FIELD_CHARS:
                    raise BadRecord(f"generated_answer[{i}] is {len(g):,} characters; "
                                    f"the limit is {MAX_FIELD_CHARS:,}")
            solution = text_field(obj, "answer", required=False)
            subject = obj.get("type")
        except BadRecord as exc:
            collector.reject(str(exc), path, n, raw=obj)
            continue
        ref = last_boxed(solution) if solution else None
        ref = ref.strip() if ref else None
        level = parse_level(obj.get("level"))
        subject = subject if isinstance(subject, str) else None
        out.extend(Rationale(line=n, model=model, completion=g, sample_index=i,
                             question=question, reference_solution=solution,
                             reference_answer=ref, subject=subject, level=level)
                   for i, g in enumerate(gens))
    return out


_JSONL_KNOWN = {"problem_id", "question", "completion", "sample_index", "model",
                "reference_answer", "dataset", "subject", "level", "finish_reason",
                "prompt_tokens", "completion_tokens"}


def read_jsonl_rationales(path: Path, model: str | None, collector: Collector) -> list[Rationale]:
    out: list[Rationale] = []
    for n, obj in iter_jsonl(path, collector):
        try:
            completion = text_field(obj, "completion")
            pid = obj.get("problem_id")
            if pid is not None and not isinstance(pid, str):
                raise BadRecord("field 'problem_id' must be a string")
            question = text_field(obj, "question", required=pid is None)
            m = obj.get("model", model)
            if not m or not isinstance(m, str):
                raise BadRecord("no model: give --model or a 'model' field")
            r = Rationale(
                line=n, model=m, completion=completion,
                sample_index=_opt_int(obj, "sample_index"), problem_id=pid, question=question,
                reference_answer=answer_value(obj.get("reference_answer")),
                subject=obj.get("subject") if isinstance(obj.get("subject"), str) else None,
                level=parse_level(obj.get("level")),
                dataset=obj.get("dataset") if isinstance(obj.get("dataset"), str) else None,
                finish_reason=obj.get("finish_reason") if isinstance(obj.get("finish_reason"), str) else None,
                prompt_tokens=_opt_int(obj, "prompt_tokens"),
                completion_tokens=_opt_int(obj, "completion_tokens"),
                metadata={k: v for k, v in obj.items() if k not in _JSONL_KNOWN} or None)
        except BadRecord as exc:
            collector.reject(str(exc), path, n, raw=obj)
            continue
        out.append(r)
    return out


def _link(con, rationales: list[Rationale], dataset: str, split: str,
          path: Path, collector: Collector) -> tuple[list[tuple[Rationale, str]], list[Problem], int]:
    """Resolve each rationale's problem id. Returns (rationale, problem id) pairs, the
    problems to create, and how many rationales linked to existing problems.

    Matching goes from strict to lenient, because real sets contain near-duplicates
    (MATH train has pairs of problems that differ only in whitespace): the exact text,
    then the text without a leading "Problem:" label, then the normalised key, where a
    candidate that no other question of this file matched more strictly wins.
    """
    known = con.execute("""
        SELECT problem_id, question, question_key FROM problems
        ORDER BY (dataset = ?) DESC, (split = ?) DESC, source_position NULLS LAST, problem_id
    """, [dataset, split]).fetchall()
    exact: dict[str, str] = {}
    by_key: dict[str, list[str]] = defaultdict(list)
    for pid, question, key in known:
        exact.setdefault(question, pid)      # first = preferred dataset/split
        by_key[key].append(pid)
    explicit = {r.problem_id for r in rationales if r.problem_id}
    existing = set()
    if explicit:
        existing = {row[0] for row in con.execute(
            "SELECT problem_id FROM problems WHERE problem_id IN (SELECT unnest(?))",
            [sorted(explicit)]).fetchall()}

    # Strict tiers first, for every distinct question of the file.
    resolved: dict[str, str] = {}
    questions = list(dict.fromkeys(r.question for r in rationales
                                   if r.question and not (r.problem_id in existing)))
    for q in questions:
        pid = exact.get(q) or exact.get(ids.LEADING_LABEL.sub("", q, count=1))
        if pid:
            resolved[q] = pid
    claimed = set(resolved.values())
    for q in questions:
        if q in resolved:
            continue
        cands = by_key.get(ids.question_key(q), [])
        free = [c for c in cands if c not in claimed]
        if cands:
            resolved[q] = (free or cands)[0]
            claimed.add(resolved[q])

    pairs: list[tuple[Rationale, str]] = []
    created: dict[str, Problem] = {}
    linked = 0
    for r in rationales:
        if r.problem_id:
            if r.problem_id in existing:
                pairs.append((r, r.problem_id))
                linked += 1
                continue
            if not r.question:
                collector.reject(f"problem_id {r.problem_id!r} is not in the warehouse and "
                                 "the record has no 'question' to create it from", path, r.line)
                continue
        pid = resolved.get(r.question)
        if pid is not None:
            pairs.append((r, pid))
            linked += 1
            continue
        key = ids.question_key(r.question)
        p = Problem(dataset=r.dataset or dataset, split=split,
                    question=ids.strip_question_label(r.question),
                    reference_answer=r.reference_answer, reference_solution=r.reference_solution,
                    subject=r.subject, level=r.level, source_id=f"imported:{key}",
                    source_path=str(path), source_position=r.line)
        resolved[r.question] = p.problem_id
        created[p.problem_id] = p
        pairs.append((r, p.problem_id))
    return pairs, list(created.values()), linked


def import_samples(wh: Warehouse, fmt: str, path: str | Path, *, model: str | None = None,
                   dataset: str = "math", split: str = "train", provider: str | None = None,
                   skip_invalid: bool = False, rejects_path: Path | None = None) -> ImportReport:
    """Import a file of rationales as one run per teacher model, in one transaction."""
    fmt, path = check_source(wh, fmt, FORMATS, path, rejects_path, what="import format",
                             missing="no such file")
    collector = Collector(skip_invalid=skip_invalid)
    if fmt == "tdg":
        if not model:
            raise CuratorError("`curator import tdg` needs --model (the teacher that wrote the "
                               "rationales, e.g. --model gpt-4)")
        rationales = read_tdg(path, model, collector)
    else:
        rationales = read_jsonl_rationales(path, model, collector)
    digest = sha256_file(path)
    report = ImportReport()
    with wh.write() as con:
        pairs, new_problems, _ = _link(con, rationales, dataset, split, path, collector)
        record_rejects(collector, report, rejects_path, wh, f"import-{fmt}")
        if not pairs:
            raise nothing_valid("rationales", report, path)
        if new_problems:
            insert_problems(con, problems_frame(new_problems))
        created_ids = {p.problem_id for p in new_problems}
        by_model: dict[str, list[tuple[Rationale, str]]] = defaultdict(list)
        for r, pid in pairs:
            by_model[r.model].append((r, pid))
        for m, items in by_model.items():
            report.runs.append(_store_run(con, fmt, m, provider, path, digest, items, created_ids))
    return report


def _store_run(con, fmt: str, model: str, provider: str | None, path: Path, digest: str,
               items: list[tuple[Rationale, str]], created_ids: set[str]) -> RunImport:
    run_id = ids.stable_id("r", "import", fmt, model, digest)
    con.execute("""
        INSERT INTO runs (run_id, kind, provider, model, source, metadata, role)
        SELECT ?, 'import', ?, ?, ?, ?::JSON, ?
        WHERE NOT EXISTS (SELECT 1 FROM runs WHERE run_id = ?)""",
                [run_id, provider, model, str(path),
                 json.dumps({"format": fmt, "file_sha256": digest}),
                 run_role("import", model), run_id])
    # Records without a sample_index are numbered per problem in file order; a repeated
    # (problem, index) keeps its first record.
    next_index: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, int]] = set()
    keep: list[tuple[Rationale, str, int]] = []
    for r, pid in items:
        idx = r.sample_index
        if idx is None:
            idx = next_index[pid]
        next_index[pid] = max(next_index[pid], idx + 1)
        if (pid, idx) not in seen:
            seen.add((pid, idx))
            keep.append((r, pid, idx))
    problems_seen = {pid for _, pid, _ in keep}
    frame = pl.DataFrame({
        "problem_id": [pid for _, pid, _ in keep],
        "sample_index": [idx for _, _, idx in keep],
        "completion": [r.completion for r, _, _ in keep],
        "finish_reason": [r.finish_reason for r, _, _ in keep],
        "prompt_tokens": [r.prompt_tokens for r, _, _ in keep],
        "completion_tokens": [r.completion_tokens for r, _, _ in keep],
        "metadata": [json.dumps(r.metadata, ensure_ascii=False, default=str) if r.metadata
                     else None for r, _, _ in keep],
    }, schema={"problem_id": pl.Utf8, "sample_index": pl.Int32, "completion": pl.Utf8,
               "finish_reason": pl.Utf8, "prompt_tokens": pl.Int64,
               "completion_tokens": pl.Int64, "metadata": pl.Utf8})
    con.register("incoming_samples", frame)
    try:
        before = scalar(con, "SELECT count(*) FROM samples WHERE run_id = ?", [run_id])
        con.execute(f"""
            INSERT INTO samples (sample_id, run_id, problem_id, sample_index, completion,
                                 finish_reason, prompt_tokens, completion_tokens, metadata)
            SELECT * FROM (
                SELECT {ids.sample_id_sql("$run", "problem_id", "sample_index")} AS sample_id,
                       $run, problem_id, sample_index, completion, finish_reason,
                       prompt_tokens, completion_tokens, metadata::JSON
                FROM incoming_samples) i
            WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.sample_id = i.sample_id)""",
                    {"run": run_id})
        after = scalar(con, "SELECT count(*) FROM samples WHERE run_id = ?", [run_id])
    finally:
        con.unregister("incoming_samples")
    return RunImport(run_id=run_id, model=model, records=len(items),
                     linked=len(problems_seen - created_ids),
                     created=len(problems_seen & created_ids),
                     added=after - before, present=len(keep) - (after - before))
