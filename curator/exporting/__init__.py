"""Exports: the handover from curation to training.

* :func:`export_training` (`curator export`): graded rationales, labelled positive or
  negative by the current grader, in problem-level splits (no problem in two splits),
  as JSONL, Parquet or a Hugging Face ``DatasetDict``, with ``manifest.json``.
  With ``--layout sft|preference|unpaired`` (:mod:`.layouts`) the same records, in the
  same splits, are written as the rows TRL's SFT, DPO and KTO trainers read.
* :func:`export_eval` (`curator export-eval`): problems only, for evaluating students.

Records follow ``schemas/export_record.schema.json`` / ``schemas/eval_record.schema.json``,
the only contract `distill` relies on. Modules: :mod:`.splits` (pure split assignment:
the keyed hash that never moves a problem, and the balanced method), :mod:`.splits_from`
(an earlier export's assignment, for ``--splits-from``),
:mod:`.schema` (the contracts and validation), :mod:`.formats` (writers), :mod:`.files`
(staged output directory, hashes), :mod:`.layouts` (TRL layouts), :mod:`.training`,
:mod:`.evaluation`, :mod:`.cli`.
"""

from curator.exporting.evaluation import EvalOptions, export_eval
from curator.exporting.formats import FORMATS
from curator.exporting.splits import (DEFAULT_SPLITS, SplitSpec, assign_splits, hash_split,
                                      parse_splits, stable_assignment)
from curator.exporting.training import ExportOptions, ExportResult, export_training

__all__ = ["DEFAULT_SPLITS", "EvalOptions", "ExportOptions", "ExportResult", "FORMATS",
           "SplitSpec", "assign_splits", "export_eval", "export_training", "hash_split",
           "parse_splits", "stable_assignment"]
