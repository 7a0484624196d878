"""What a training export is asked for (:class:`ExportOptions`, recorded verbatim in the
manifest) and what it returns (:class:`ExportResult`), with the names the manifest uses
for held-back problems and the extra columns ``--where`` may use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curator.exporting import layouts, splits


STRATA_COLUMNS = ("dataset", "subject", "level")
DEFAULT_STRATIFY = ("subject", "level")   # of the balanced split method
_HASH = splits.HASH_METHOD
# Why a problem is held back from a training export: manifest held_back.reasons keys,
# and what they mean.
HELD_TEST_SPLIT = "dataset_test_split"
HELD_EVAL_EXPORT = "eval_export"
HELD_SAME_QUESTION = "same_question"
HELD_BACK_REASONS = {HELD_TEST_SPLIT: "in the test split of their dataset",
                     HELD_EVAL_EXPORT: "written by curator export-eval",
                     HELD_SAME_QUESTION: "with the same question as an evaluation problem"}
# Columns a --where expression may use, besides the record fields of the schema.
EXTRA_COLUMNS = ("problem_split", "sample_index", "grade_status", "finish_reason",
                 "error_class", "prompt_tokens", "completion_tokens", "provider")
# Records are written in (problem_id, sample_id) order: export_records is created in
# that order and the writers keep table order (no second sort of the text).
RECORD_ORDER: list[str] = []


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; recorded verbatim in the manifest."""

    runs: tuple[str, ...] = ()            # run ids or teacher model names; () = all
    datasets: tuple[str, ...] = ()        # () = all
    where: str | None = None              # SQL over the record fields and EXTRA_COLUMNS
    splits: str = splits.DEFAULT_SPLITS
    seed: int = 0
    split_method: str = _HASH  # 'keyed-hash' (stable) | 'balanced'
    splits_from: str | None = None        # an earlier export's directory or manifest
    # balanced method only: columns whose mix every split keeps (None = subject, level)
    stratify: tuple[str, ...] | None = None
    max_positives: int | None = None      # per problem
    max_negatives: int | None = None      # per problem
    include_truncated: bool = False       # finish_reason = 'length'
    include_errored: bool = False         # error_class set (a failed request has no text anyway)
    dedupe: bool = True
    # Put problems of a dataset's test split and problems written by `curator
    # export-eval` into the splits too (they are held back by default).
    allow_eval_problems: bool = False
    format: str = "jsonl"
    # The rows written (curator.exporting.layouts); "default" = the export records.
    layout: str = "default"
    style: str | None = None              # standard | conversational | messages
    prompt_template: str | None = None    # standard style: text with {question}
    chat_prompt: str | None = None        # chat styles: a prompt template's turns
    pairs_per_problem: int | None = None  # preference: None = all pairs

    def layout_options(self) -> layouts.LayoutOptions:
        return layouts.LayoutOptions(layout=self.layout, style=self.style,
                                     prompt_template=self.prompt_template,
                                     chat_prompt=self.chat_prompt,
                                     pairs_per_problem=self.pairs_per_problem)


@dataclass
class ExportResult:
    out: Path
    manifest: dict
    warnings: list[str] = field(default_factory=list)

    def split_rows(self) -> list[tuple]:
        """(split, problems, records, positives, negatives) per split, for display."""
        return [(name, t["problems"], t["records"], t.get("positive"), t.get("negative"))
                for name, t in self.manifest["totals"].items()]
