"""Problem-set loaders: read public datasets in their original formats into `problems`.

Each format reader yields :class:`Problem` records and reports bad records to a
:class:`Collector`, which either stops the load with an error naming the file and line
(the default) or keeps going and writes every rejected record with its reason to a rejects
file (``--skip-invalid``). A load writes all its problems in one transaction, so a failed
load stores nothing and a repeated load adds nothing (ids are content hashes).
"""

from __future__ import annotations

import datetime as _dt
import functools
import gzip
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from curator import ids
from curator.errors import CuratorError, InputError
from curator.latex import last_boxed
from curator.paths import REJECTS, atomic_write, guard_output
from curator.warehouse import Warehouse, scalar

MAX_FIELD_CHARS = 1_000_000
SPLIT_NAMES = ("train", "test", "validation", "valid", "dev", "val")


@dataclass
class Problem:
    dataset: str
    split: str
    question: str
    reference_answer: str | None
    source_id: str
    subject: str | None = None
    level: int | None = None
    reference_solution: str | None = None
    reference_answers: list[str] | None = None
    source_path: str | None = None
    source_position: int | None = None
    metadata: dict[str, Any] | None = None

    @property
    def problem_id(self) -> str:
        return ids.problem_id(self.dataset, self.split, self.source_id)


@dataclass
class Rejected:
    path: str
    line: int | None
    record: str | None
    reason: str
    raw: str | None


@dataclass
class Collector:
    """Receives bad records: raises at the first one unless ``skip_invalid``."""

    skip_invalid: bool = False
    rejected: list[Rejected] = field(default_factory=list)

    def reject(self, reason: str, path: Path | str, line: int | None = None,
               record: str | None = None, raw: Any = None) -> None:
        if not self.skip_invalid:
            raise InputError(reason + " (use --skip-invalid to load the other records and "
                             "write the rejected ones to a rejects file)", str(path), line, record)
        if raw is not None and not isinstance(raw, str):
            try:
                raw = json.dumps(raw, ensure_ascii=False, default=str)
            except (TypeError, ValueError):
                raw = repr(raw)
        self.rejected.append(Rejected(str(path), line, record, reason,
                                      raw[:10_000] if raw else raw))

    def write_rejects(self, path: Path, *, warehouse: Path | None = None) -> None:
        guard_rejects(path, warehouse)
        with atomic_write(path) as f:
            for r in self.rejected:
                f.write(json.dumps(r.__dict__, ensure_ascii=False) + "\n")


def guard_rejects(path: Path | None, warehouse: Path | None) -> None:
    """--rejects: never the warehouse, never over a file that is not a rejects file."""
    if path is not None:
        guard_output(path, REJECTS, option="--rejects", warehouse=warehouse)


# -- reading files -----------------------------------------------------------------------

def read_text(path: Path) -> str:
    """Whole file as text: gzip transparently, UTF-8 strictly, with located errors."""
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a directory, expected a file", str(path))
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"corrupt gzip data: {exc}", str(path)) from exc
    if not data.strip():
        raise InputError("file is empty", str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}); re-encode the file as UTF-8", str(path), line) from exc


def iter_jsonl(path: Path, collector: Collector) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad lines go to the collector."""
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            collector.reject(f"invalid JSON: {exc}", path, n, raw=line)
            continue
        if not isinstance(obj, dict):
            collector.reject(f"expected a JSON object, got {type(obj).__name__}", path, n, raw=line)
            continue
        yield n, obj


def read_json_document(path: Path) -> Any:
    text = read_text(path)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson reports "line L column C" in its message; keep it and locate by line.
        m = re.search(r"line (\d+)", str(exc))
        raise InputError(f"invalid JSON: {exc}", str(path), int(m.group(1)) if m else None) from exc


# -- field helpers -----------------------------------------------------------------------

class BadRecord(Exception):
    """Raised inside a record parser; the reader turns it into a located rejection."""


def text_field(obj: dict, name: str, required: bool = True) -> str | None:
    if name not in obj or obj[name] is None:
        if required:
            raise BadRecord(f"missing field '{name}'")
        return None
    v = obj[name]
    if not isinstance(v, str):
        raise BadRecord(f"field '{name}' must be a string, got {type(v).__name__}")
    if len(v) > MAX_FIELD_CHARS:
        raise BadRecord(f"field '{name}' is {len(v):,} characters; the limit is {MAX_FIELD_CHARS:,}")
    if required and not v.strip():
        raise BadRecord(f"field '{name}' is empty")
    return v


def format_number(v: Any) -> str:
    """A numeric answer as the grader compares it: integral floats without '.0'."""
    if isinstance(v, bool):
        raise BadRecord(f"expected a number, got {v!r}")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadRecord(f"answer is not a finite number: {v!r}")
        if v.is_integer():
            return str(int(v))
        return repr(v)
    if isinstance(v, str):
        s = v.strip().replace(",", "")
        try:
            return format_number(float(s)) if re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?", s, re.I) else v.strip()
        except ValueError:
            return v.strip()
    raise BadRecord(f"expected a number, got {type(v).__name__}")


def numeric_answer(v: Any, name: str) -> str:
    """A reference answer that must be a number (SVAMP, MultiArith): a JSON number, or a
    string holding one ('1,250', '-3.5'); anything else is a bad record."""
    if isinstance(v, str) and not re.fullmatch(r"[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?",
                                               v.strip(), re.I):
        raise BadRecord(f"field '{name}' must be a number, got {v!r}")
    if v is None:
        raise BadRecord(f"field '{name}' must be a number, got null")
    try:
        return format_number(v)
    except BadRecord as exc:
        raise BadRecord(f"field '{name}': {exc}") from None


def parse_level(v: Any) -> int | None:
    """'Level 4' -> 4; MATH's 'Level ?' and other non-numbers -> None."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    m = re.search(r"-?\d+", str(v))
    return int(m.group(0)) if m else None


def answer_value(v: Any) -> str | None:
    """A reference answer from a generic record: strings as they are, numbers
    formatted, lists joined with ', '."""
    if v is None:
        return None
    if isinstance(v, str):
        if len(v) > MAX_FIELD_CHARS:
            raise BadRecord(f"answer is {len(v):,} characters; the limit is {MAX_FIELD_CHARS:,}")
        return v.strip()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format_number(v)
    if isinstance(v, list) and v:
        return ", ".join(answer_value(x) or "" for x in v)
    raise BadRecord(f"answer has unsupported type {type(v).__name__}")


def split_from_path(path: Path, default: str) -> str:
    """The split a path names: a folder 'train/', a file 'test.jsonl' or 'gsm8k_test.jsonl'."""
    for part in reversed(path.parts):
        tokens = re.split(r"[^a-z]+", part.split(".")[0].lower())
        for tok in reversed(tokens):
            if tok in SPLIT_NAMES:
                return tok
    return default


def split_from_file_name(path: Path) -> str | None:
    """The split a file's own name names ('test.jsonl', 'gsm8k_test.jsonl'), else its
    folder's when that folder is exactly a split name ('train/data.jsonl'). Other folders
    above it are not looked at: '/tmp/test_runs/gsm.jsonl' names no split."""
    tokens = re.split(r"[^a-z]+", path.name.split(".")[0].lower())
    for tok in reversed(tokens):
        if tok in SPLIT_NAMES:
            return tok
    parent = path.parent.name.lower()
    return parent if parent in SPLIT_NAMES else None


# -- formats -----------------------------------------------------------------------------

@dataclass
class FieldMap:
    """Field names of a generic JSONL/Parquet problem file."""

    question: str = "question"
    answer: str = "answer"
    solution: str | None = None
    id: str | None = None
    subject: str | None = None
    level: str | None = None


@dataclass
class SplitChoice:
    """How a load chose a split: ``how`` is 'option' (--split), 'layout' (the format's
    folder layout or record ids), 'named' (the file or its folder is called exactly that,
    e.g. test.jsonl), 'file name' (a guess from a word of the file's name, e.g.
    gsm8k_test.jsonl), 'default' (nothing named one) or 'dataset' (the dataset is one
    evaluation set)."""

    split: str
    how: str
    source: str

    @property
    def guessed(self) -> bool:
        return self.how in ("file name", "default")

    def describe(self) -> str:
        return {
            "option": f"split '{self.split}': given with --split",
            "layout": f"split '{self.split}': from the folder layout / record ids ({self.source})",
            "named": f"split '{self.split}': the file or its folder is named so ({self.source})",
            "file name": f"split '{self.split}': guessed from the file name {self.source}; "
                         "pass --split to choose it",
            "default": f"split '{self.split}': {self.source} names no split "
                       f"({'/'.join(SPLIT_NAMES)}), so the default was used; pass --split to "
                       "choose it",
            "dataset": f"split '{self.split}': {self.source} is an evaluation set, stored as "
                       f"'{self.split}' (pass --split to change it)",
        }[self.how]

    def as_json(self) -> dict:
        return {"split": self.split, "how": self.how, "source": self.source,
                "guessed": self.guessed}


@dataclass
class LoadContext:
    path: Path
    dataset: str
    split: str | None
    subset: str | None
    fields: FieldMap
    collector: Collector
    splits: dict[tuple[str, str], SplitChoice] = field(default_factory=dict)

    def _record(self, split: str, how: str, source: str) -> str:
        self.splits.setdefault((split, how), SplitChoice(split, how, source))
        return split

    def split_for(self, path: Path, default: str, *, layout: bool = False) -> str:
        """--split, else the split the path names (a guess unless ``layout``), else ``default``."""
        if self.split:
            return self._record(self.split, "option", str(path))
        found = split_from_path(path, "") if layout else split_from_file_name(path)
        if found:
            exact = found in (path.name.split(".")[0].lower(), path.parent.name.lower())
            how = "layout" if layout else "named" if exact else "file name"
            return self._record(found, how, str(path))
        return self._record(default, "default", str(path))

    def fixed_split(self, default: str, dataset_name: str) -> str:
        if self.split:
            return self._record(self.split, "option", dataset_name)
        return self._record(default, "dataset", dataset_name)


def _guard(ctx: LoadContext, path: Path, line: int | None, record: str | None, raw: Any,
           build: Callable[[], Problem | None],
           line_of: Callable[[], int | None] | None = None) -> Problem | None:
    """``build()``, with a bad record sent to the collector; ``line_of`` locates a record
    of a JSON document (only computed when one is rejected)."""
    try:
        return build()
    except BadRecord as exc:
        if line is None and line_of is not None:
            line = line_of()
        ctx.collector.reject(str(exc), path, line, record, raw)
        return None


@functools.cache
def errata() -> dict:
    return json.loads((Path(__file__).parent / "errata.json").read_text())


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


def _jsonl_files(ctx: LoadContext, pattern: str = "*.jsonl") -> list[Path]:
    if ctx.path.is_dir():
        files = sorted(ctx.path.glob(pattern))
        if not files:
            raise InputError(f"no {pattern} files in this directory", str(ctx.path))
        return files
    return [ctx.path]


def read_gsm8k(ctx: LoadContext) -> Iterator[Problem]:
    for f in _jsonl_files(ctx):
        split = ctx.split_for(f, "train")
        for n, obj in iter_jsonl(f, ctx.collector):
            def build(obj=obj, n=n, f=f, split=split) -> Problem:
                question = text_field(obj, "question")
                answer = text_field(obj, "answer")
                if "####" not in answer:
                    raise BadRecord("answer has no '#### N' final line")
                reasoning, final = answer.rsplit("####", 1)
                final = final.strip().replace(",", "")
                if not final:
                    raise BadRecord("nothing after '####'")
                return Problem(dataset=ctx.dataset, split=split, question=question,
                               reference_answer=final, reference_solution=reasoning.strip(),
                               source_id=f"line{n}", source_path=str(f), source_position=n)
            p = _guard(ctx, f, n, None, obj, build)
            if p:
                yield p


def element_lines(text: str) -> list[int]:
    """The line (1-based) where each element of a top-level JSON array starts."""
    lines: list[int] = []
    line, depth, in_str, esc = 1, 0, False, False
    expecting = False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch in " \t\r\n":
            continue
        if depth == 1 and expecting and ch not in ",]":
            lines.append(line)
            expecting = False
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth == 1:
                expecting = True
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            expecting = True
    return lines


def _json_list(ctx: LoadContext, name: str) -> tuple[Path, list, Callable[[int], int | None]]:
    f = ctx.path
    if f.is_dir():
        cands = sorted(f.glob("*.json"))
        if len(cands) != 1:
            raise InputError(f"expected one {name} .json file in this directory, found "
                             f"{len(cands)}", str(f))
        f = cands[0]
    data = read_json_document(f)
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of {name} problems, got {type(data).__name__}", str(f))
    starts: list[int] = []

    def line_of(i: int) -> int | None:
        if not starts:
            starts.extend(element_lines(read_text(f)))
        return starts[i] if i < len(starts) else None
    return f, data, line_of


def read_svamp(ctx: LoadContext) -> Iterator[Problem]:
    f, data, line_of = _json_list(ctx, "SVAMP")
    split = ctx.fixed_split("test", "SVAMP")
    for i, obj in enumerate(data):
        rec = f"record {i}"
        if isinstance(obj, dict) and obj.get("ID") is not None:
            rec += f" (ID {obj.get('ID')})"

        def build(obj=obj, i=i) -> Problem:
            if not isinstance(obj, dict):
                raise BadRecord(f"expected an object, got {type(obj).__name__}")
            body = text_field(obj, "Body")
            q = text_field(obj, "Question")
            if "Answer" not in obj:
                raise BadRecord("missing field 'Answer'")
            sid = obj.get("ID")
            return Problem(dataset=ctx.dataset, split=split,
                           question=f"{body.strip()} {q.strip()}",
                           reference_answer=numeric_answer(obj["Answer"], "Answer"),
                           subject=obj.get("Type"), source_id=str(sid if sid is not None else i),
                           source_path=str(f), source_position=i,
                           metadata={"equation": obj.get("Equation")})
        p = _guard(ctx, f, None, rec, obj, build, line_of=lambda i=i: line_of(i))
        if p:
            yield p


def read_multiarith(ctx: LoadContext) -> Iterator[Problem]:
    f, data, line_of = _json_list(ctx, "MultiArith")
    split = ctx.fixed_split("test", "MultiArith")
    for i, obj in enumerate(data):
        rec = f"record {i}"
        if isinstance(obj, dict) and obj.get("iIndex") is not None:
            rec += f" (iIndex {obj.get('iIndex')})"

        def build(obj=obj, i=i) -> Problem:
            if not isinstance(obj, dict):
                raise BadRecord(f"expected an object, got {type(obj).__name__}")
            question = text_field(obj, "sQuestion").strip()
            sols = obj.get("lSolutions")
            if not isinstance(sols, list) or not sols:
                raise BadRecord("field 'lSolutions' must be a non-empty list of numbers")
            answers = [numeric_answer(s, "lSolutions") for s in sols]
            sid = obj.get("iIndex")
            return Problem(dataset=ctx.dataset, split=split, question=question,
                           reference_answer=", ".join(answers),
                           reference_answers=answers if len(answers) > 1 else None,
                           source_id=str(sid if sid is not None else i), source_path=str(f),
                           source_position=i, metadata={"equations": obj.get("lEquations")})
        p = _guard(ctx, f, None, rec, obj, build, line_of=lambda i=i: line_of(i))
        if p:
            yield p


# a trailing "(apples)" is the unit; "-(1/3)" is a value: a unit has letters, no digits
_ASDIV_UNIT = re.compile(r"^(.*?)\s*\(([^()\d]*[A-Za-z][^()\d]*)\)\s*$")


def asdiv_answers(text: str) -> list[str]:
    """'9 (apples)' -> ['9']; '5 (years old); 15 (years old)' -> ['5', '15'];
    text answers ('Mrs. Hilt', '3:30 p.m.') are kept as they are."""
    out = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        m = _ASDIV_UNIT.match(part)
        value = m.group(1).strip() if m and m.group(1).strip() else part
        out.append(value)
    return out


def read_asdiv(ctx: LoadContext) -> Iterator[Problem]:
    f = ctx.path
    if f.is_dir():
        f = f / "ASDiv.xml"
    if not f.exists():
        raise InputError("no such file (expected ASDiv.xml)", str(f))
    text = read_text(f)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        raise InputError(f"broken XML: {exc}", str(f), line) from exc
    keep: set[str] | None = None
    if ctx.subset:
        if ctx.subset.lower() != "asdiv-a":
            raise CuratorError(f"unknown ASDiv subset {ctx.subset!r}; the known one is 'asdiv-a'")
        folds = sorted((f.parent / "nfolds" / "asdiv-a").glob("fold*.txt"))
        if not folds:
            raise InputError("--subset asdiv-a needs the fold files nfolds/asdiv-a/fold*.txt "
                             "next to ASDiv.xml", str(f.parent / "nfolds" / "asdiv-a"))
        keep = {ln.strip() for fold in folds for ln in read_text(fold).splitlines() if ln.strip()}
    split = ctx.fixed_split("test", "ASDiv")
    problems = root.findall(".//Problem")
    if not problems:
        raise InputError("no <Problem> elements found", str(f))
    for i, el in enumerate(problems):
        pid = el.get("ID")
        if keep is not None and pid not in keep:
            continue
        rec = f"Problem ID={pid}" if pid else f"Problem #{i + 1}"

        def build(el=el, i=i, pid=pid) -> Problem:
            def child(tag: str) -> str:
                c = el.find(tag)
                if c is None or c.text is None or not c.text.strip():
                    raise BadRecord(f"missing <{tag}>")
                if len(c.text) > MAX_FIELD_CHARS:
                    raise BadRecord(f"<{tag}> is {len(c.text):,} characters; the limit is {MAX_FIELD_CHARS:,}")
                return c.text.strip()
            if not pid:
                raise BadRecord("missing ID attribute")
            body, question, raw_answer = child("Body"), child("Question"), child("Answer")
            answers = asdiv_answers(raw_answer)
            if not answers:
                raise BadRecord(f"<Answer> {raw_answer!r} has no value")
            st = el.find("Solution-Type")
            formula = el.find("Formula")
            return Problem(dataset=ctx.dataset, split=split, question=f"{body} {question}",
                           reference_answer=", ".join(answers),
                           reference_answers=answers if len(answers) > 1 else None,
                           subject=st.text.strip() if st is not None and st.text else None,
                           level=parse_level(el.get("Grade")), source_id=pid,
                           source_path=str(f), source_position=i,
                           metadata={"answer_raw": raw_answer, "grade": el.get("Grade"),
                                     "source": el.get("Source"),
                                     "formula": formula.text if formula is not None else None})
        p = _guard(ctx, f, None, rec, None, build)
        if p:
            yield p


def _generic_problem(obj: dict, ctx: LoadContext, split: str, f: Path, n: int) -> Problem:
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
        source_id = f"line{n}"
    known = {fm.question, fm.answer, fm.solution, fm.id, fm.subject, fm.level}
    extra = {k: v for k, v in obj.items() if k not in known}
    subject = obj.get(fm.subject) if fm.subject else None
    return Problem(dataset=ctx.dataset, split=split, question=question, reference_answer=answer,
                   reference_solution=solution,
                   subject=str(subject) if subject is not None else None,
                   level=parse_level(obj.get(fm.level)) if fm.level else None,
                   source_id=source_id, source_path=str(f), source_position=n,
                   metadata=extra or None)


def read_jsonl(ctx: LoadContext) -> Iterator[Problem]:
    for f in _jsonl_files(ctx):
        split = ctx.split_for(f, "train")
        for n, obj in iter_jsonl(f, ctx.collector):
            p = _guard(ctx, f, n, None, obj, lambda obj=obj, n=n, f=f, split=split:
                       _generic_problem(obj, ctx, split, f, n))
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
                       _generic_problem(obj, ctx, split, f, n))
            if p:
                yield p


READERS: dict[str, Callable[[LoadContext], Iterator[Problem]]] = {
    "math": read_math,
    "gsm8k": read_gsm8k,
    "svamp": read_svamp,
    "asdiv": read_asdiv,
    "multiarith": read_multiarith,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}


# -- storing ---------------------------------------------------------------------------

PROBLEM_COLUMNS = ["problem_id", "dataset", "split", "subject", "level", "question",
                   "question_key", "reference_solution", "reference_answer",
                   "reference_answers", "source_id", "source_path", "source_position",
                   "metadata"]


def problems_frame(problems: list[Problem]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "problem_id": [p.problem_id for p in problems],
            "dataset": [p.dataset for p in problems],
            "split": [p.split for p in problems],
            "subject": [p.subject for p in problems],
            "level": [p.level for p in problems],
            "question": [p.question for p in problems],
            "question_key": [ids.question_key(p.question) for p in problems],
            "reference_solution": [p.reference_solution for p in problems],
            "reference_answer": [p.reference_answer for p in problems],
            "reference_answers": [p.reference_answers for p in problems],
            "source_id": [p.source_id for p in problems],
            "source_path": [p.source_path for p in problems],
            "source_position": [p.source_position for p in problems],
            "metadata": [json.dumps(p.metadata, ensure_ascii=False, default=str)
                         if p.metadata else None for p in problems],
        },
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

    def row(self) -> tuple:
        return (self.dataset, self.split, self.source_id, self.stored, self.loaded)

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
                   i.reference_answer
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


def default_rejects_path(wh: Warehouse, what: str) -> Path:
    """``rejects/WHAT-STAMP.jsonl`` beside the warehouse; never an existing file (two
    loads in the same second get -2, -3, ...)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = wh.path.parent / "rejects" / f"{what}-{stamp}"
    path, n = base.with_name(base.name + ".jsonl"), 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}.jsonl")
    return path


def load_problems(wh: Warehouse, fmt: str, path: str | Path, *, split: str | None = None,
                  dataset: str | None = None, subset: str | None = None,
                  fields: FieldMap | None = None, skip_invalid: bool = False,
                  rejects_path: Path | None = None, update: bool = False) -> LoadReport:
    """Read a problem set and add its new problems to the warehouse in one transaction.

    Problems already stored are left as they are; those whose reference answer differs
    in the file are listed in ``report.changes``. With ``update`` their answers are
    replaced by the file's, and the verdicts graded against the old answers are deleted
    so that `curator grade` regrades those samples (in the same transaction)."""
    fmt = fmt.lower()
    if fmt not in READERS:
        raise CuratorError(f"unknown format {fmt!r}; choose one of: {', '.join(READERS)}")
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", str(path))
    guard_rejects(rejects_path, wh.path)
    if subset and fmt != "asdiv":
        raise CuratorError("--subset applies to the asdiv format only")
    if dataset is None:
        dataset = path.stem.split(".")[0].lower() if fmt in ("jsonl", "parquet") else fmt
    collector = Collector(skip_invalid=skip_invalid)
    ctx = LoadContext(path=path, dataset=dataset, split=split, subset=subset,
                      fields=fields or FieldMap(), collector=collector)
    problems = list(READERS[fmt](ctx))
    dup = Counter(p.problem_id for p in problems)
    dups = [pid for pid, c in dup.items() if c > 1]
    if dups:
        first = next(p for p in problems if p.problem_id == dups[0])
        raise InputError(f"{len(dups)} records share an id (e.g. source id {first.source_id!r}); "
                         "ids must be unique within a dataset split (use --id-field)", str(path))
    report = LoadReport(counts=[], splits=list(ctx.splits.values()))
    if collector.rejected:
        report.rejected = len(collector.rejected)
        report.rejects_path = rejects_path or default_rejects_path(wh, f"load-{fmt}")
        collector.write_rejects(report.rejects_path, warehouse=wh.path)
    if not problems:
        raise InputError("no valid problems found" + (
            f"; {report.rejected} rejected, reasons in {report.rejects_path}" if report.rejected else ""),
            str(path))
    frame = problems_frame(problems)
    with wh.write() as con:
        report.changes = answer_changes(con, frame)
        counts = insert_problems(con, frame)
        if update and report.changes:
            report.verdicts_cleared = apply_answer_changes(con, frame, report.changes)
            report.updated = True
    report.counts = [tuple(r) for r in counts.iter_rows()]
    return report
