"""Grading a JSONL file of (reference, completion) pairs (`curator check --file`): read the
pairs with located errors, grade them, write one verdict per line."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from curator.errors import CuratorError, InputError
from curator.grading import api

REFERENCE_FIELDS = ("reference_answer", "reference", "gold", "answer")
COMPLETION_FIELDS = ("completion", "rationale", "pred", "prediction", "response")


def _field(rec: dict, wanted: str | None, names: tuple[str, ...], what: str, path: Path, line: int):
    if wanted:
        if wanted not in rec:
            raise InputError(f"no field {wanted!r} ({what})", str(path), line)
        return rec[wanted]
    for n in names:
        if n in rec:
            return rec[n]
    raise InputError(f"no {what} field (looked for {', '.join(names)}; set it with "
                     f"--{what}-field)", str(path), line)


def read_pairs(path: Path, reference_field: str | None, completion_field: str | None,
               question_field: str | None) -> Iterator[tuple[int, dict, str | None, str, str | None]]:
    """``(line, record, reference, completion, question)`` for every line of a JSONL
    file; a bad line is an InputError with ``file:line``."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CuratorError(f"cannot read {path}: {exc.strerror}") from exc
    with fh:
        for line, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 ({exc.reason} at byte {exc.start})", str(path), line) from exc
            except json.JSONDecodeError as exc:
                raise InputError(f"bad JSON: {exc.msg} (column {exc.colno})", str(path), line) from exc
            if not isinstance(rec, dict):
                raise InputError("each line must be a JSON object", str(path), line)
            ref = _field(rec, reference_field, REFERENCE_FIELDS, "reference", path, line)
            comp = _field(rec, completion_field, COMPLETION_FIELDS, "completion", path, line)
            if not isinstance(comp, str) or (ref is not None and not isinstance(ref, (str, int, float))):
                raise InputError("reference and completion must be strings (or a number for the "
                                 "reference)", str(path), line)
            q = rec.get(question_field or "question")
            yield line, rec, None if ref is None else str(ref), comp, q if isinstance(q, str) else None


def explain(reference: str, completion: str, question: str | None,
            timeout: float) -> list[tuple[str, object]]:
    """One verdict, with the extracted answer, both normalised forms and the deciding rule."""
    g = api.grade(reference, completion, question=question, timeout=timeout)
    return [("verdict", "correct" if g.correct else "wrong"),
            ("status", g.status),
            ("rule", g.rule),
            ("extraction", g.extraction),
            ("extracted answer", g.extracted),
            ("normalized answer", g.normalized),
            ("reference", reference),
            ("normalized reference", api.normalized_form(reference))]


@dataclass
class CheckFileReport:
    file: Path
    out: Path
    pairs: int = 0
    status: Counter = field(default_factory=Counter)
    agree: int = 0
    disagree: int = 0

    def rows(self) -> list[tuple[str, int]]:
        return sorted(self.status.items(), key=lambda kv: -kv[1])

    def as_json(self) -> dict:
        checked = self.agree + self.disagree
        return {"file": str(self.file), "out": str(self.out), "pairs": self.pairs,
                "status": dict(self.rows()),
                "expected_agree": self.agree if checked else None,
                "expected_checked": checked or None}


def default_out(file: Path) -> Path:
    # The current directory, not beside the input (data folders are often read-only or shared).
    return Path(file.name + ".verdicts.jsonl")


def check_file(file: Path, out: Path | None = None, *, reference_field: str | None = None,
               completion_field: str | None = None, question_field: str | None = None,
               timeout: float = api.DEFAULT_TIMEOUT, workers: int | None = None,
               overwrite: bool = False) -> CheckFileReport:
    """Grade every pair of a JSONL file and write ``{"line", ...record, "verdict"}`` per
    line to ``out`` (whole or not at all: written beside it, then renamed). ``out`` is
    never the warehouse, and an existing file is replaced only if it is an earlier
    verdicts file or with ``overwrite`` (:func:`curator.paths.guard_output`). A record's
    ``expected`` field (0/1) is compared with the verdict."""
    from contextlib import ExitStack

    from curator.grading.batch import check_grade_options, grade_stream
    from curator.paths import VERDICTS, atomic_write, guard_output

    check_grade_options(timeout, workers)
    pairs = list(read_pairs(file, reference_field, completion_field, question_field))
    if not pairs:
        raise InputError("no pairs in the file", str(file))
    out = out or default_out(file)
    if out.is_dir():
        raise CuratorError(f"--out {out} is a directory; name the JSONL file to write")
    if not out.parent.is_dir():
        raise CuratorError(f"--out {out}: directory {out.parent} does not exist")
    if out.resolve() == file.resolve():
        raise CuratorError("--out must not be the input file")
    guard_output(out, VERDICTS, option="--out", overwrite=overwrite, overwrite_flag="--overwrite")
    by_line = {line: (rec, ref) for line, rec, ref, _, _ in pairs}
    grades = dict(grade_stream(((line, ref, comp, q) for line, _, ref, comp, q in pairs),
                               workers=workers, timeout=timeout))
    report = CheckFileReport(file=file, out=out, pairs=len(pairs))
    # again: grading can take a while, and the file may have appeared meanwhile
    guard_output(out, VERDICTS, option="--out", overwrite=overwrite, overwrite_flag="--overwrite")
    writing = ExitStack()
    try:
        fh = writing.enter_context(atomic_write(out))
    except OSError as e:
        raise CuratorError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    with writing:
        for line, (rec, ref) in by_line.items():
            g = grades.get(line)
            verdict = ({"correct": g.correct, "status": g.status, "extracted": g.extracted,
                        "normalized": g.normalized, "rule": g.rule, "extraction": g.extraction}
                       if g is not None else
                       {"correct": None, "status": "no_reference", "extracted": None,
                        "normalized": None, "rule": "no-reference", "extraction": None})
            report.status[verdict["status"]] += 1
            if "expected" in rec and g is not None:
                if bool(rec["expected"]) == g.correct:
                    report.agree += 1
                else:
                    report.disagree += 1
            fh.write(json.dumps({"line": line, **rec, "verdict": verdict}, ensure_ascii=False) + "\n")
    return report
