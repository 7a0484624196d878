"""What a loader produces and how it reads: the :class:`Problem` record, bad records
(:class:`BadRecord`, :class:`Rejected`, the :class:`Collector` that stops a load or writes
them to a rejects file), reading text/JSONL/JSON files, and the field helpers every format
reader shares (text fields, numbers, levels, answers, splits named by a path).
"""

from __future__ import annotations

import datetime as _dt
import functools
import gzip
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from curator import ids
from curator.errors import CuratorError, InputError
from curator.paths import REJECTS, atomic_write, guard_output
from curator.warehouse import Warehouse


MAX_FIELD_CHARS = 1_000_000
SPLIT_NAMES = ("train", "test", "validation", "valid", "dev", "val")


@dataclass
class Problem:
    """One problem as a reader read it. ``source_id`` is the record's own id in its source
    (SVAMP's ``ID``, MATH's ``subject/n``, ``--id-field``); a reader whose record has none
    gives ``None``, and the id is then a hash of the (normalised) question, so that the
    same question is the same problem whichever file or line it comes from
    (``id_from_question``). ``line``/``record`` (or ``line_of``, computed when needed)
    locate the record in its file for messages; they are not stored."""


    dataset: str
    split: str
    question: str
    reference_answer: str | None
    source_id: str | None
    subject: str | None = None
    level: int | None = None
    reference_solution: str | None = None
    reference_answers: list[str] | None = None
    source_path: str | None = None
    source_position: int | None = None
    metadata: dict[str, Any] | None = None
    id_from_question: bool = False
    line: int | None = None
    record: str | None = None
    line_of: Callable[[], int | None] | None = field(default=None, repr=False, compare=False)
    # the id under which the warehouse already holds this question (set by a load that
    # finds it stored under an earlier version's line-number id)
    stored_id: str | None = None

    def __post_init__(self) -> None:
        if self.source_id is None:
            self.source_id = self.question_key
            self.id_from_question = True

    @functools.cached_property
    def question_key(self) -> str:
        return ids.question_key(self.question)

    @property
    def problem_id(self) -> str:
        return self.stored_id or ids.problem_id(self.dataset, self.split, self.source_id)

    def where(self) -> tuple[str | None, int | None, str | None]:
        """(path, line, record name) of the record, for a located error."""
        line = self.line if self.line is not None or self.line_of is None else self.line_of()
        return self.source_path, line, self.record

    def located(self) -> str:
        """``path:line`` (or ``path (record 3)``), as an error names a record."""
        return str(InputError("", *self.where()))[:-2]


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


def check_source(wh: Warehouse, fmt: str, known, path: str | Path, rejects_path: Path | None, *,
                 what: str = "format", missing: str = "no such file or directory") -> tuple[str, Path]:
    """The checks a load or an import makes before it reads: a known format (lower-cased
    and returned), an existing path, and a --rejects file it may write."""
    fmt = fmt.lower()
    if fmt not in known:
        raise CuratorError(f"unknown {what} {fmt!r}; choose one of: {', '.join(known)}")
    path = Path(path)
    if not path.exists():
        raise InputError(missing, str(path))
    guard_rejects(rejects_path, wh.path)
    return fmt, path


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


def record_rejects(collector: Collector, report, rejects_path: Path | None, wh: Warehouse,
                   what: str) -> None:
    """When records were rejected, count them on ``report`` and write them to
    ``rejects_path`` (default: :func:`default_rejects_path` for ``what``)."""
    if collector.rejected:
        report.rejected = len(collector.rejected)
        report.rejects_path = rejects_path or default_rejects_path(wh, what)
        collector.write_rejects(report.rejects_path, warehouse=wh.path)


def nothing_valid(what: str, report, path: Path) -> InputError:
    """The error of a file with no valid record, naming the rejects file if any."""
    return InputError(f"no valid {what} found" + (
        f"; {report.rejected} rejected, reasons in {report.rejects_path}"
        if report.rejected else ""), str(path))


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


def _split_named(name: str) -> str | None:
    """The split a file or folder name names: any of its words separated by dots,
    underscores, dashes or digits ('mydata.test.jsonl', 'gsm8k_test.jsonl',
    'data-validation.parquet'), the last one when several do; whole words only
    ('contest.jsonl' names none)."""
    for tok in reversed(re.split(r"[^a-z]+", name.lower())):
        if tok in SPLIT_NAMES:
            return tok
    return None


def split_from_path(path: Path, default: str) -> str:
    """The split a path names: a folder 'train/', a file 'test.jsonl' or 'gsm8k_test.jsonl'."""
    for part in reversed(path.parts):
        found = _split_named(part)
        if found:
            return found
    return default


def split_from_file_name(path: Path) -> str | None:
    """The split a file's own name names ('test.jsonl', 'gsm8k_test.jsonl',
    'mydata.test.jsonl'), else its folder's when that folder is exactly a split name
    ('train/data.jsonl'). Other folders above it are not looked at:
    '/tmp/test_runs/gsm.jsonl' names no split."""
    found = _split_named(path.name)
    if found:
        return found
    parent = path.parent.name.lower()
    return parent if parent in SPLIT_NAMES else None
