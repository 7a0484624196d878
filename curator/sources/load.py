"""Store what the readers read: the format table (:data:`READERS`), the problems frame,
inserting new problems, reporting and applying changed reference answers, and
:func:`load_problems`, which runs one load in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from curator import ids
from curator.errors import CuratorError
from curator.sources.context import FieldMap, LoadContext, SplitChoice
from curator.sources.generic import read_jsonl, read_parquet
from curator.sources.math_dataset import read_math
from curator.sources.records import (Collector, Problem, check_source, nothing_valid,
                                     record_rejects)
from curator.sources.word_problems import read_asdiv, read_gsm8k, read_multiarith, read_svamp
from curator.warehouse import Warehouse, scalar


READERS: dict[str, Callable[[LoadContext], Iterator[Problem]]] = {
    "math": read_math,
    "gsm8k": read_gsm8k,
    "svamp": read_svamp,
    "asdiv": read_asdiv,
    "multiarith": read_multiarith,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}
# formats `curator load` generates rather than reads (curator.synthetic.load_synthetic)
GENERATED = ("synthetic",)
LOAD_FORMATS: tuple[str, ...] = (*READERS, *GENERATED)


# -- storing ---------------------------------------------------------------------------

PROBLEM_COLUMNS = ["problem_id", "dataset", "split", "subject", "level", "question",
                   "question_key", "reference_solution", "reference_answer",
                   "reference_answers", "source_id", "source_path", "source_position",
                   "metadata"]


def problems_frame(problems: list[Problem]) -> pl.DataFrame:
    derived = {"question_key": lambda p: p.question_key,
               "metadata": lambda p: (json.dumps(p.metadata, ensure_ascii=False, default=str)
                                      if p.metadata else None)}
    return pl.DataFrame(
        {c: [derived[c](p) if c in derived else getattr(p, c) for p in problems]
         for c in PROBLEM_COLUMNS},
        schema={"problem_id": pl.Utf8, "dataset": pl.Utf8, "split": pl.Utf8,
                "subject": pl.Utf8, "level": pl.Int32, "question": pl.Utf8,
                "question_key": pl.Utf8, "reference_solution": pl.Utf8,
                "reference_answer": pl.Utf8, "reference_answers": pl.List(pl.Utf8),
                "source_id": pl.Utf8, "source_path": pl.Utf8, "source_position": pl.Int32,
                "metadata": pl.Utf8},
    )


def insert_problems(con, frame: pl.DataFrame) -> pl.DataFrame:
    """Insert the problems not yet present; returns per-(dataset, split) counts of
    read / added rows. Runs inside the caller's transaction."""
    con.register("incoming_problems", frame)
    try:
        counts = con.sql("""
            SELECT i.dataset, i.split, count(*) AS read,
                   count(*) FILTER (WHERE p.problem_id IS NULL) AS added
            FROM incoming_problems i LEFT JOIN problems p USING (problem_id)
            GROUP BY ALL ORDER BY ALL""").pl()
        cols = ", ".join(PROBLEM_COLUMNS)
        con.execute(f"""
            INSERT INTO problems ({cols})
            SELECT {cols.replace('metadata', 'metadata::JSON')} FROM incoming_problems i
            WHERE NOT EXISTS (SELECT 1 FROM problems p WHERE p.problem_id = i.problem_id)""")
    finally:
        con.unregister("incoming_problems")
    return counts


@dataclass
class AnswerChange:
    """A problem already stored whose reference answer differs in the file loaded again."""

    problem_id: str
    dataset: str
    split: str
    source_id: str
    stored: str | None
    loaded: str | None
    question: str = ""

    def row(self) -> tuple:
        return (self.dataset, self.split, self.source_id, self.stored, self.loaded)

    def label(self) -> str:
        """How a message names the problem: its source id, or the start of its question
        when the id is the question's hash."""
        if self.source_id != ids.question_key(self.question):
            return self.source_id
        return _short(self.question, 50)

    def as_json(self) -> dict:
        return {"problem_id": self.problem_id, "dataset": self.dataset, "split": self.split,
                "source_id": self.source_id, "stored": self.stored, "loaded": self.loaded}


@dataclass
class LoadReport:
    counts: list[tuple[str, str, int, int]]
    rejected: int = 0
    rejects_path: Path | None = None
    splits: list[SplitChoice] = field(default_factory=list)
    # problems already stored whose answers differ in this file; applied when ``updated``
    changes: list[AnswerChange] = field(default_factory=list)
    updated: bool = False
    verdicts_cleared: int = 0

    def rows(self) -> list[tuple]:
        return [(d, s, r, a, r - a) for d, s, r, a in self.counts]

    @property
    def added(self) -> int:
        return sum(a for *_, a in self.counts)

    @property
    def read(self) -> int:
        return sum(r for _, _, r, _ in self.counts)

    def as_json(self) -> dict:
        return {"splits": [{"dataset": d, "split": s, "read": r, "added": a,
                            "already_present": r - a} for d, s, r, a in self.counts],
                "read": self.read, "added": self.added,
                "split_choices": [c.as_json() for c in self.splits],
                "answer_changes": [c.as_json() for c in self.changes],
                "answers_updated": self.updated, "verdicts_cleared": self.verdicts_cleared,
                "rejected": self.rejected,
                "rejects_path": str(self.rejects_path) if self.rejects_path else None}


def answer_changes(con, frame: pl.DataFrame) -> list[AnswerChange]:
    """Problems of ``frame`` already stored with another reference answer (or list of
    answers, or reference solution)."""
    con.register("incoming_problems", frame)
    try:
        rows = con.execute("""
            SELECT p.problem_id, p.dataset, p.split, p.source_id, p.reference_answer,
                   i.reference_answer, p.question
            FROM incoming_problems i JOIN problems p USING (problem_id)
            WHERE p.reference_answer IS DISTINCT FROM i.reference_answer
               OR p.reference_answers IS DISTINCT FROM i.reference_answers
               OR p.reference_solution IS DISTINCT FROM i.reference_solution
            ORDER BY p.dataset, p.split, p.source_position, p.problem_id""").fetchall()
    finally:
        con.unregister("incoming_problems")
    return [AnswerChange(*r) for r in rows]


def apply_answer_changes(con, frame: pl.DataFrame, changes: list[AnswerChange]) -> int:
    """Store the loaded answers of ``changes`` and delete the verdicts graded against the
    old ones (``curator grade`` regrades those samples). Returns the verdicts deleted.
    Runs inside the caller's transaction."""
    ids = pl.DataFrame({"problem_id": [c.problem_id for c in changes]},
                       schema={"problem_id": pl.Utf8})
    con.register("changed_ids", ids)
    con.register("incoming_problems", frame)
    try:
        cleared = scalar(con, """
            SELECT count(*) FROM grades g JOIN samples s USING (sample_id)
            WHERE s.problem_id IN (SELECT problem_id FROM changed_ids)""")
        con.execute("""
            DELETE FROM grades WHERE sample_id IN (
                SELECT sample_id FROM samples
                WHERE problem_id IN (SELECT problem_id FROM changed_ids))""")
        con.execute("""
            UPDATE problems SET reference_answer = i.reference_answer,
                                reference_answers = i.reference_answers,
                                reference_solution = i.reference_solution
            FROM incoming_problems i
            WHERE problems.problem_id = i.problem_id
              AND problems.problem_id IN (SELECT problem_id FROM changed_ids)""")
    finally:
        con.unregister("changed_ids")
        con.unregister("incoming_problems")
    return int(cleared or 0)


def _one_per_id(problems: list[Problem], collector: Collector,
                id_hint: str = "") -> list[Problem]:
    """The problems of one load, a record whose id an earlier record of the load has
    (the same question when ids are question hashes) sent to the collector."""
    first: dict[str, Problem] = {}
    out: list[Problem] = []
    for p in problems:
        seen = first.setdefault(p.problem_id, p)
        if seen is p:
            out.append(p)
            continue
        same = ("the same question as" if p.id_from_question
                else f"the same id {p.source_id!r} as")
        collector.reject(f"{same} {_where_in(seen, p)} ({p.dataset} {p.split}); a problem is "
                         "stored once per dataset split: remove the repeat"
                         + ("" if p.id_from_question else id_hint),
                         *p.where(), raw=_raw(p))
    return out


def _where_in(seen: Problem, p: Problem) -> str:
    """``seen``'s location, without its path when it is in ``p``'s file."""
    path, line, record = seen.where()
    if path == p.source_path and (line is not None or record):
        return f"line {line}" if line is not None else record
    return seen.located()


def _raw(p: Problem) -> dict:
    return {"source_id": p.source_id, "question": p.question,
            "reference_answer": p.reference_answer}


def _short(text: str, n: int = 200) -> str:
    t = " ".join(text.split())
    return repr(t if len(t) <= n else t[:n] + "...")


def match_stored(con, problems: list[Problem], collector: Collector,
                 id_hint: str = "") -> list[Problem]:
    """Line up the problems of a load with those stored, inside the load's transaction.

    * A problem whose id is its question's hash, not stored under that id, is the problem
      of the same dataset split already stored with the same question, if any (earlier
      versions gave such records their line number as id): it takes that problem's id, so
      re-loading an old file adds nothing and --update reaches the stored problem. Problems
      `curator import` created are not matched (a load adds its own, as it always did).
    * A problem whose id is stored for *another* question (a second file reusing ids) is
      a bad record: never counted as already present, never given the other's answer."""
    if not problems:
        return problems
    keys = pl.DataFrame({
        "idx": list(range(len(problems))),
        "problem_id": [p.problem_id for p in problems],
        "dataset": [p.dataset for p in problems], "split": [p.split for p in problems],
        "question_key": [p.question_key for p in problems],
        "by_question": [p.id_from_question for p in problems],
        "source_path": [p.source_path for p in problems],
        "source_position": [p.source_position for p in problems]},
        schema_overrides={"source_path": pl.Utf8, "source_position": pl.Int64})
    con.register("incoming_keys", keys)
    try:
        earlier = con.execute("""
            SELECT i.idx, p.problem_id FROM incoming_keys i JOIN problems p
              ON p.dataset = i.dataset AND p.split = i.split AND p.question_key = i.question_key
            WHERE i.by_question AND p.source_id NOT LIKE 'imported:%'  -- not curator import's
              AND NOT EXISTS (SELECT 1 FROM problems s WHERE s.problem_id = i.problem_id)
            QUALIFY row_number() OVER (
                PARTITION BY i.idx
                ORDER BY (p.source_path IS NOT DISTINCT FROM i.source_path
                          AND p.source_position IS NOT DISTINCT FROM i.source_position) DESC,
                         p.source_position, p.problem_id) = 1""").fetchall()
        for idx, pid in earlier:
            problems[idx].stored_id = pid
        keys = keys.with_columns(pl.Series("problem_id", [p.problem_id for p in problems]))
        con.unregister("incoming_keys")
        con.register("incoming_keys", keys)
        clashes = con.execute("""
            SELECT i.idx, p.question, p.source_id, p.source_path, p.source_position
            FROM incoming_keys i JOIN problems p USING (problem_id)
            WHERE p.question_key <> i.question_key ORDER BY i.idx""").fetchall()
    finally:
        con.unregister("incoming_keys")
    bad: set[int] = set()
    for idx, question, source_id, path, pos in clashes:
        p = problems[idx]
        if ids.normalize_question(question) == ids.normalize_question(p.question):
            continue
        bad.add(idx)
        where = f" (loaded from {path}" + (f", position {pos})" if pos is not None else ")")
        collector.reject(
            f"{p.dataset} {p.split} already holds a problem with id {source_id!r} for another "
            f"question: stored {_short(question)}{where if path else ''}; this record "
            f"{_short(p.question)}. It was not loaded, and the stored problem is unchanged; "
            "load this file under another --dataset" + ("" if p.id_from_question else id_hint),
            *p.where(), raw=_raw(p))
    return [p for i, p in enumerate(problems) if i not in bad]


def load_problems(wh: Warehouse, fmt: str, path: str | Path, *, split: str | None = None,
                  dataset: str | None = None, subset: str | None = None,
                  fields: FieldMap | None = None, skip_invalid: bool = False,
                  rejects_path: Path | None = None, update: bool = False) -> LoadReport:
    """Read a problem set and add its new problems to the warehouse in one transaction.

    Problems already stored are left as they are; those whose reference answer differs
    in the file are listed in ``report.changes``. With ``update`` their answers are
    replaced by the file's, and the verdicts graded against the old answers are deleted
    so that `curator grade` regrades those samples (in the same transaction). A record
    is only ever matched with a stored problem of the same question (:func:`match_stored`)."""
    fmt, path = check_source(wh, fmt, LOAD_FORMATS, path, rejects_path)
    if fmt in GENERATED:
        raise CuratorError(f"{fmt} problems are generated, not read from a file: "
                           f"`curator load {fmt} --family NAME --n N`")
    if subset and fmt != "asdiv":
        raise CuratorError("--subset applies to the asdiv format only")
    if dataset is None:
        dataset = path.stem.split(".")[0].lower() if fmt in ("jsonl", "parquet") else fmt
    collector = Collector(skip_invalid=skip_invalid)
    ctx = LoadContext(path=path, dataset=dataset, split=split, subset=subset,
                      fields=fields or FieldMap(), collector=collector)
    id_hint = (" or with an --id-field that tells them apart"
               if fmt in ("jsonl", "parquet") else "")
    problems = _one_per_id(list(READERS[fmt](ctx)), collector, id_hint)
    report = LoadReport(counts=[], splits=list(ctx.splits.values()))
    if problems:
        with wh.write() as con:
            problems = match_stored(con, problems, collector, id_hint)
            if problems:
                frame = problems_frame(problems)
                report.changes = answer_changes(con, frame)
                counts = insert_problems(con, frame)
                report.counts = [tuple(r) for r in counts.iter_rows()]
                if update and report.changes:
                    report.verdicts_cleared = apply_answer_changes(con, frame, report.changes)
                    report.updated = True
    record_rejects(collector, report, rejects_path, wh, f"load-{fmt}")
    if not problems:
        raise nothing_valid("problems", report, path)
    return report
