"""What a format reader is given: the :class:`LoadContext` (path, dataset, split, field
map, collector) and the split it chose (:class:`SplitChoice`), plus the pieces all readers
use on it: :func:`_guard` (a bad record goes to the collector), the files a path names, and
the errata of known bad reference answers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import InputError
from curator.sources.records import (BadRecord, Collector, Problem, SPLIT_NAMES,
                                     split_from_file_name, split_from_path)


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
    return json.loads((Path(__file__).parent.parent / "errata.json").read_text())


def _jsonl_files(ctx: LoadContext, pattern: str = "*.jsonl") -> list[Path]:
    if ctx.path.is_dir():
        files = sorted(ctx.path.glob(pattern))
        if not files:
            raise InputError(f"no {pattern} files in this directory", str(ctx.path))
        return files
    return [ctx.path]
