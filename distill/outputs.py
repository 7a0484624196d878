"""The output folders of ``distill`` commands, as :func:`curator.paths.guard_output` sees
them (docs/output-paths.md): how each command recognises a folder it wrote before (and
may therefore resume, add to or replace), so that it never writes into a folder of
someone else's or one that holds a DuckDB database. Imports no torch: the commands check
their output before any model loads."""

from __future__ import annotations

import os
from pathlib import Path

from curator.paths import OutputKind

# A training command records what it was started with here, before it trains (see
# distill.cli_options.guard_out); it also marks the folder as a training output.
RUN_RECORD = "distill-run.json"
# What `distill compare` writes into every stage folder it prepares.
STAGE_STAMP = ".stage-fingerprint"


def _entries(path: Path) -> list[str]:
    """What ``path`` holds, but the stamp `distill compare` puts in a stage folder before
    the stage's command runs (a folder holding only that is as good as empty)."""
    return sorted(e.name for e in os.scandir(path) if e.name != STAGE_STAMP)


def _folder_kind(what: str, command: str, names: set[str], markers: set[str],
                 hidden_prefixes: tuple[str, ...] = ()) -> OutputKind:
    """A folder that is ours when it holds at least one of ``markers`` and nothing but
    ``names`` (and hidden temporary files starting with ``hidden_prefixes``)."""
    def foreign(path: Path) -> str | None:
        entries = _entries(path)
        if not entries:
            return None
        strange = [n for n in entries if n not in names and not n.startswith(hidden_prefixes)]
        if strange:
            return f"it holds {strange[0]!r}, which `{command}` does not write"
        if not markers & set(entries):
            return f"it holds none of {', '.join(sorted(markers))}"
        return None
    return OutputKind(what, command, foreign, directory=True)


# train / nat / nce: the adapter(s), their records, checkpoints, trackers' folders.
TRAINING_NAMES = {
    "adapter_config.json", "adapter_model.safetensors", "README.md", "distill.json",
    RUN_RECORD, "training_args.json", "loss_curve.json", "loss_curve.png", "checkpoints",
    "neg", "pos", "runs", "mlruns", "wandb", "trackio", "betas.jsonl", "beta_summary.json",
    "betas.meta.json", "beta_hist.png", "nat_gate.json"}
TRAINING_OUT = _folder_kind(
    "training output", "distill train|nat|nce", TRAINING_NAMES,
    {RUN_RECORD, "distill.json", "checkpoints", "neg", "pos"},
    (".",))   # hidden: files being written (.saving-<adapter>, .<name>.<random>.part)

RANKER_OUT = _folder_kind(
    "ranker", "distill ranker",
    {"adapter_config.json", "adapter_model.safetensors", "README.md", "ranker.json",
     "training_args.json", "loss_curve.json", "loss_curve.png", "model", "runs", "mlruns",
     "wandb", "trackio"},
    {"ranker.json", "adapter_config.json", "model"})

EVAL_NAMES = {"eval.json", "samples.jsonl", "greedy.jsonl", "grades.jsonl", "scores.jsonl",
              "votes.jsonl", "votes.jsonl.tmp", "report.json", "report.md", "report.png"}


def _eval_foreign(path: Path) -> str | None:
    entries = set(_entries(path))
    strange = sorted(n for n in entries if n not in EVAL_NAMES)
    if strange:
        return f"it holds {strange[0]!r}, which `distill eval` does not write"
    if entries and "eval.json" not in entries:
        return "it holds no eval.json (the settings of the evaluation)"
    return None


EVAL_OUT = OutputKind("evaluation", "distill eval", _eval_foreign, directory=True)

# init-tiny replaces its own tiny model (never a pre-trained or converted one).
TINY_NAMES = {"chat_template.jinja", "config.json", "generation_config.json",
              "model.safetensors", "tiny_shape.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json"}
TINY_OUT = _folder_kind("tiny model", "distill init-tiny", TINY_NAMES, {"tiny_shape.json"})


def _never(path: Path) -> str | None:
    entries = _entries(path)
    if not entries:
        return None
    return f"it holds {entries[0]!r}; the command writes only into an absent or empty " \
           f"directory"


PRETRAIN_OUT = OutputKind("pre-trained model", "distill pretrain", _never, directory=True)


COMPARE_FILES = ("comparison.json", "comparison.md", "comparison.png", "runs.jsonl")


def _compare_foreign(path: Path) -> str | None:
    """Compare writes its own stage folders (each refuses to be one it did not prepare,
    distill.compare.stages) and these files beside them: a folder holding one of them
    that is not a comparison's is refused."""
    entries = set(_entries(path))
    clash = [n for n in COMPARE_FILES if n in entries]
    if clash and "stages" not in entries:
        return f"it holds {clash[0]} but no stages/ of a comparison"
    return None


COMPARE_OUT = OutputKind("comparison", "distill compare", _compare_foreign, directory=True)
