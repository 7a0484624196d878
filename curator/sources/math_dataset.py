"""The MATH (Hendrycks et al.) loader: a folder tree of one-problem JSON files, or the
same records as JSONL; the reference answer is the solution's last ``\\boxed{}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curator.errors import InputError
from curator.latex import last_boxed
from curator.sources.context import LoadContext, _guard, errata
from curator.sources.records import (BadRecord, Problem, SPLIT_NAMES, iter_jsonl, parse_level,
                                     read_json_document, split_from_path, text_field)


def _math_problem(obj: dict, ctx: LoadContext, split: str, source_id: str, path: Path,
                  pos: int) -> Problem:
    question = text_field(obj, "problem")
    solution = text_field(obj, "solution")
    answer = last_boxed(solution)
    fix = errata()["math"].get(source_id)
    erratum = None
    if fix and fix.get("split") == split and not (answer or "").strip():
        answer, erratum = fix["reference_answer"], fix["reason"]
    if answer is None or not answer.strip():
        raise BadRecord("solution has no \\boxed{...} final answer")
    subject = obj.get("type")
    if subject is not None and not isinstance(subject, str):
        raise BadRecord(f"field 'type' must be a string, got {type(subject).__name__}")
    return Problem(dataset=ctx.dataset, split=split, question=question,
                   reference_answer=answer.strip(), reference_solution=solution,
                   subject=subject, level=parse_level(obj.get("level")),
                   source_id=source_id, source_path=str(path), source_position=pos,
                   metadata={k: v for k, v in (("level", obj.get("level")),
                                               ("erratum", erratum)) if v is not None} or None)


def _math_unique_id(uid: str) -> str:
    """'test/precalculus/807.json' -> 'precalculus/807' (the id a directory load gives)."""
    parts = [p for p in uid.replace("\\", "/").split("/") if p]
    if parts and parts[0].lower() in SPLIT_NAMES:
        parts = parts[1:]
    if parts and parts[-1].endswith(".json"):
        parts[-1] = parts[-1][:-5]
    return "/".join(parts)


def read_math(ctx: LoadContext) -> Iterator[Problem]:
    root = ctx.path
    if root.is_dir():
        files = sorted(root.rglob("*.json"))
        if not files:
            raise InputError("no *.json problem files under this directory (expected the "
                             "MATH layout <split>/<subject>/<n>.json)", str(root))
        for pos, f in enumerate(files):
            split = ctx.split_for(f.relative_to(root.parent), "train", layout=True)
            try:
                obj = read_json_document(f)
            except InputError as exc:
                ctx.collector.reject(exc.problem, f, exc.line)
                continue
            if not isinstance(obj, dict):
                ctx.collector.reject("expected a JSON object with 'problem' and 'solution'", f)
                continue
            source_id = f"{f.parent.name}/{f.stem}"
            p = _guard(ctx, f, None, None, obj,
                       lambda: _math_problem(obj, ctx, split, source_id, f, pos))
            if p:
                yield p
        return
    for n, obj in iter_jsonl(root, ctx.collector):
        uid = obj.get("unique_id")
        source_id = _math_unique_id(uid) if isinstance(uid, str) and uid else f"line{n}"
        from_uid = split_from_path(Path(uid), "") if isinstance(uid, str) and not ctx.split else ""
        split = (ctx._record(from_uid, "layout", f"{root.name}: unique_id {uid}") if from_uid
                 else ctx.split_for(root, "train"))
        p = _guard(ctx, root, n, None, obj,
                   lambda: _math_problem(obj, ctx, split, source_id, root, n))
        if p:
            yield p
