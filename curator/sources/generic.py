"""Loaders for any problem set given as JSONL or Parquet, with its field names mapped by a
:class:`~curator.sources.context.FieldMap` (``--question-field`` and the like).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from curator.errors import InputError
from curator.latex import last_boxed
from curator.sources.context import LoadContext, _guard, _jsonl_files
from curator.sources.records import (BadRecord, Problem, answer_value, iter_jsonl, parse_level,
                                     text_field)


def _generic_problem(obj: dict, ctx: LoadContext, split: str, f: Path, n: int,
                     line: int | None = None, record: str | None = None) -> Problem:
    fm = ctx.fields
    question = text_field(obj, fm.question)
    solution = text_field(obj, fm.solution, required=False) if fm.solution else None
    answer = answer_value(obj.get(fm.answer)) if fm.answer in obj else None
    if answer is None and solution:
        answer = last_boxed(solution)
    if not answer:
        raise BadRecord(f"no reference answer: field '{fm.answer}' is missing or empty"
                        + (f" and '{fm.solution}' has no \\boxed{{}}" if fm.solution else
                           " (map it with --answer-field, or give --solution-field)"))
    if fm.id:
        if obj.get(fm.id) is None:
            raise BadRecord(f"missing id field '{fm.id}'")
        source_id = str(obj[fm.id])
    else:
        source_id = None  # the question's hash
    known = {fm.question, fm.answer, fm.solution, fm.id, fm.subject, fm.level}
    extra = {k: v for k, v in obj.items() if k not in known}
    subject = obj.get(fm.subject) if fm.subject else None
    return Problem(dataset=ctx.dataset, split=split, question=question, reference_answer=answer,
                   reference_solution=solution,
                   subject=str(subject) if subject is not None else None,
                   level=parse_level(obj.get(fm.level)) if fm.level else None,
                   source_id=source_id, source_path=str(f), source_position=n,
                   line=line, record=record, metadata=extra or None)


def read_jsonl(ctx: LoadContext) -> Iterator[Problem]:
    for f in _jsonl_files(ctx):
        split = ctx.split_for(f, "train")
        for n, obj in iter_jsonl(f, ctx.collector):
            p = _guard(ctx, f, n, None, obj, lambda obj=obj, n=n, f=f, split=split:
                       _generic_problem(obj, ctx, split, f, n, line=n))
            if p:
                yield p


def read_parquet(ctx: LoadContext) -> Iterator[Problem]:
    for f in _jsonl_files(ctx, "*.parquet"):
        split = ctx.split_for(f, "train")
        try:
            df = pl.read_parquet(f)
        except Exception as exc:  # polars raises several error types for bad files
            raise InputError(f"cannot read Parquet: {exc}", str(f)) from exc
        if df.height == 0:
            raise InputError("file has no rows", str(f))
        for n, obj in enumerate(df.iter_rows(named=True)):
            p = _guard(ctx, f, None, f"row {n}", obj, lambda obj=obj, n=n, f=f, split=split:
                       _generic_problem(obj, ctx, split, f, n, record=f"row {n}"))
            if p:
                yield p
