"""The MATH (Hendrycks et al.) loader: a folder tree of one-problem JSON files, one such
file, a JSON list of such records, or the same records as JSONL; the reference answer is
the solution's last ``\\boxed{}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from curator.errors import InputError
from curator.latex import last_boxed
from curator.sources.context import LoadContext, _guard, errata
from curator.sources.records import (BadRecord, Problem, SPLIT_NAMES, iter_jsonl, parse_level,
                                     read_json_document, read_text, split_from_path,
                                     text_field)
from curator.sources.word_problems import element_line_finder


def _math_problem(obj: dict, ctx: LoadContext, split: str, source_id: str | None, path: Path,
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


def _math_record(ctx: LoadContext, obj: dict, path: Path, pos: int, line: int | None,
                 record: str | None = None) -> Problem | None:
    """A MATH record of a JSONL file or JSON list: its id and split from its ``unique_id``
    ('test/precalculus/807.json') when it has one, else the question's hash and the split
    the file names."""
    uid = obj.get("unique_id")
    source_id = _math_unique_id(uid) if isinstance(uid, str) and uid else None
    from_uid = split_from_path(Path(uid), "") if isinstance(uid, str) and not ctx.split else ""
    split = (ctx._record(from_uid, "layout", f"{path.name}: unique_id {uid}") if from_uid
             else ctx.split_for(path, "train"))

    def build() -> Problem:
        p = _math_problem(obj, ctx, split, source_id, path, pos)
        p.line, p.record = line, record
        return p
    return _guard(ctx, path, line, record, obj, build)


def _math_file(ctx: LoadContext, f: Path, pos: int, split: str, obj) -> Problem | None:
    """The problem of one MATH problem file (``<split>/<subject>/<n>.json``), id
    ``<subject>/<n>`` whether it is loaded alone or with its folder."""
    if not isinstance(obj, dict):
        ctx.collector.reject("expected a JSON object with 'problem' and 'solution'", f)
        return None
    stem = f.name[:-len(".json.gz")] if f.name.lower().endswith(".json.gz") else f.stem
    source_id = f"{f.parent.name}/{stem}"
    return _guard(ctx, f, None, None, obj,
                  lambda: _math_problem(obj, ctx, split, source_id, f, pos))


def _json_document_or_lines(f: Path):
    """A ``.json`` file's one JSON document, or None when it is JSON lines after all
    (its first line alone is a JSON object); a broken document is a located error."""
    try:
        return read_json_document(f)
    except InputError:
        first = next((ln for ln in read_text(f).splitlines() if ln.strip()), "")
        try:
            if isinstance(orjson.loads(first), dict):
                return None
        except orjson.JSONDecodeError:
            pass
        raise


def _read_math_file(ctx: LoadContext, f: Path) -> Iterator[Problem]:
    """A single ``.json`` file: one MATH problem (split from its ``<split>/<subject>/``
    folders, as in a folder load), or a JSON list of MATH records."""
    doc = _json_document_or_lines(f)
    if doc is None:
        yield from _read_math_jsonl(ctx, f)
        return
    if isinstance(doc, dict):
        grand = f.parent.parent.name.lower()
        split = (ctx._record(grand, "layout", str(f)) if not ctx.split and grand in SPLIT_NAMES
                 else ctx.split_for(f, "train"))
        p = _math_file(ctx, f, 0, split, doc)
        if p:
            yield p
        return
    if not isinstance(doc, list):
        raise InputError("expected a MATH problem (a JSON object with 'problem' and "
                         f"'solution') or a list of them, got {type(doc).__name__}", str(f))
    line_of = element_line_finder(f)
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict):
            ctx.collector.reject(f"expected a JSON object, got {type(obj).__name__}", f,
                                 line_of(i), f"record {i}")
            continue
        p = _math_record(ctx, obj, f, i, None, f"record {i}")
        if p:
            p.line_of = lambda i=i: line_of(i)
            yield p


def _read_math_jsonl(ctx: LoadContext, f: Path) -> Iterator[Problem]:
    for n, obj in iter_jsonl(f, ctx.collector):
        p = _math_record(ctx, obj, f, n, n)
        if p:
            yield p


def read_math(ctx: LoadContext) -> Iterator[Problem]:
    root = ctx.path
    if not root.is_dir():
        name = root.name.lower()
        if name.endswith(".json") or name.endswith(".json.gz"):
            yield from _read_math_file(ctx, root)
        else:
            yield from _read_math_jsonl(ctx, root)
        return
    files = sorted(root.rglob("*.json"))
    if not files:
        raise InputError("no *.json problem files under this directory (expected the "
                         "MATH layout <split>/<subject>/<n>.json)", str(root))
    for pos, f in enumerate(files):
        # <split>/<subject>/<n>.json: a subject folder loaded alone (MATH/test/algebra)
        # still takes its split from the folder above it
        rel = f.relative_to(root.parent)
        if (not ctx.split and not split_from_path(rel, "")
                and f.parent.parent.name.lower() in SPLIT_NAMES):
            rel = f.relative_to(f.parent.parent.parent)
        split = ctx.split_for(rel, "train", layout=True)
        try:
            obj = read_json_document(f)
        except InputError as exc:
            ctx.collector.reject(exc.problem, f, exc.line)
            continue
        p = _math_file(ctx, f, pos, split, obj)
        if p:
            yield p
