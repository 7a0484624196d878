"""Loaders for the arithmetic word-problem sets in their original formats: GSM8K (JSONL,
``#### N`` answers), SVAMP and MultiArith (one JSON array each) and ASDiv (XML).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

from curator.errors import CuratorError, InputError
from curator.sources.context import LoadContext, _guard, _jsonl_files
from curator.sources.records import (BadRecord, MAX_FIELD_CHARS, Problem, iter_jsonl,
                                     numeric_answer, parse_level, read_json_document, read_text,
                                     text_field)


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
                               source_id=None, source_path=str(f), source_position=n, line=n)
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
    return f, data, element_line_finder(f)


def element_line_finder(f: Path) -> Callable[[int], int | None]:
    """``line_of(i)``: the line where element ``i`` of the JSON array in ``f`` starts
    (the file is scanned the first time it is asked, so only for a bad record)."""
    starts: list[int] = []

    def line_of(i: int) -> int | None:
        if not starts:
            starts.extend(element_lines(read_text(f)))
        return starts[i] if i < len(starts) else None
    return line_of


def _record_name(i: int, obj, id_field: str) -> str:
    """How a rejected element of a JSON array is named: ``record 3 (ID chal-4)``."""
    rec = f"record {i}"
    if isinstance(obj, dict) and obj.get(id_field) is not None:
        rec += f" ({id_field} {obj.get(id_field)})"
    return rec


def _read_json_array(ctx: LoadContext, name: str, id_field: str,
                     build: Callable[[dict, int, Path, str], Problem]) -> Iterator[Problem]:
    """The problems of a one-JSON-array evaluation set (SVAMP, MultiArith), one element
    each, built by ``build(obj, index, file, split)``; a bad element goes to the collector
    named by its index and ``id_field``."""
    f, data, line_of = _json_list(ctx, name)
    split = ctx.fixed_split("test", name)
    for i, obj in enumerate(data):
        def one(obj=obj, i=i) -> Problem:
            if not isinstance(obj, dict):
                raise BadRecord(f"expected an object, got {type(obj).__name__}")
            p = build(obj, i, f, split)
            p.record, p.line_of = _record_name(i, obj, id_field), lambda i=i: line_of(i)
            return p
        p = _guard(ctx, f, None, _record_name(i, obj, id_field), obj, one,
                   line_of=lambda i=i: line_of(i))
        if p:
            yield p


def read_svamp(ctx: LoadContext) -> Iterator[Problem]:
    def build(obj: dict, i: int, f: Path, split: str) -> Problem:
        body = text_field(obj, "Body")
        q = text_field(obj, "Question")
        if "Answer" not in obj:
            raise BadRecord("missing field 'Answer'")
        sid = obj.get("ID")
        return Problem(dataset=ctx.dataset, split=split,
                       question=f"{body.strip()} {q.strip()}",
                       reference_answer=numeric_answer(obj["Answer"], "Answer"),
                       subject=obj.get("Type"), source_id=None if sid is None else str(sid),
                       source_path=str(f), source_position=i,
                       metadata={"equation": obj.get("Equation")})
    return _read_json_array(ctx, "SVAMP", "ID", build)


def read_multiarith(ctx: LoadContext) -> Iterator[Problem]:
    def build(obj: dict, i: int, f: Path, split: str) -> Problem:
        question = text_field(obj, "sQuestion").strip()
        sols = obj.get("lSolutions")
        if not isinstance(sols, list) or not sols:
            raise BadRecord("field 'lSolutions' must be a non-empty list of numbers")
        answers = [numeric_answer(s, "lSolutions") for s in sols]
        sid = obj.get("iIndex")
        return Problem(dataset=ctx.dataset, split=split, question=question,
                       reference_answer=", ".join(answers),
                       reference_answers=answers if len(answers) > 1 else None,
                       source_id=None if sid is None else str(sid), source_path=str(f),
                       source_position=i, metadata={"equations": obj.get("lEquations")})
    return _read_json_array(ctx, "MultiArith", "iIndex", build)


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

        def build(el=el, i=i, pid=pid, rec=rec) -> Problem:
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
                           source_path=str(f), source_position=i, record=rec,
                           metadata={"answer_raw": raw_answer, "grade": el.get("Grade"),
                                     "source": el.get("Source"),
                                     "formula": formula.text if formula is not None else None})
        p = _guard(ctx, f, None, rec, None, build)
        if p:
            yield p
