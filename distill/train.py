"""The training jobs behind ``distill train`` (baselines) and ``distill nat`` (NAT).

Each job: read and validate the export, encode rationales, load the base model, attach
LoRA adapter(s), train with the method's ``Trainer``, and write the output directory
described in :mod:`distill.student`. Works unchanged under ``torchrun``/``accelerate
launch`` (only the main process writes files).

The ``build_*`` functions return a ready ``Trainer`` without training it, for tests,
benchmarks and methods built on top (NCE trains a third adapter on the same model).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from curator.errors import CuratorError
from distill import data as D
from distill.adapters import (NEG, POS, GateConfig, add_gates, save_adapter,
                              set_gate_recompute, train_only)
from distill.collate import GroupCollator, RationaleCollator
from distill.models import attach_lora, load_model, load_peft, load_tokenizer
from distill.student import DEFAULT_ADAPTER, write_manifest
from distill.trainers import TRAINERS, DistillConfig, NATConfig, NATTrainer, NegTrainer

log = logging.getLogger(__name__)

METHODS = ("sft", "mix", "nt", "ul", "cl")
CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    out: Path
    examples: int
    steps: int
    final_loss: float | None
    curve: list[dict] = field(default_factory=list)
    encode: D.EncodeReport = field(default_factory=D.EncodeReport)


def model_dtype(config: DistillConfig) -> str:
    return "bfloat16" if config.bf16 else "float16" if config.fp16 else "float32"


def load_base(base: str | Path, config: DistillConfig):
    """The base model for training, in the dtype the config asks for."""
    torch.manual_seed(config.seed)
    # Activation checkpointing, when asked for, is switched on by Trainer itself.
    return load_model(base, model_dtype(config))


# -- baselines -----------------------------------------------------------------------------

def method_records(method: str, records: list[dict]) -> list[dict]:
    """The records ``method`` trains on: positives for sft, everything otherwise."""
    chosen = D.select(records, ("positive",)) if method == "sft" else records
    if method in ("sft", "cl") and not D.select(chosen, ("positive",)):
        raise CuratorError(f"--method {method} needs positive rationales; the export has none")
    if not chosen:
        raise CuratorError("the export has no records for this method")
    return chosen


def build_baseline(method: str, records: list[dict], base: str | Path, config: DistillConfig,
                   fmt: D.PromptFormat = D.PromptFormat(), model=None):
    """``(trainer, encode report)`` for one baseline on validated export records. ``model``
    (a loaded base) is loaded from ``base`` when not given."""
    if method not in TRAINERS:
        raise CuratorError(f"unknown --method {method!r}: choose one of {', '.join(METHODS)}")
    trainer_cls, config_cls = TRAINERS[method]
    if not isinstance(config, config_cls):
        raise TypeError(f"{method} needs a {config_cls.__name__}, got {type(config).__name__}")
    records = method_records(method, records)
    tokenizer = load_tokenizer(base)
    report = D.EncodeReport()
    if method == "cl":
        dataset = D.group_dataset(records, tokenizer, fmt, config.max_length,
                                  config.cl_group_size, config.seed, report)
        collator = GroupCollator(tokenizer.pad_token_id, config.train_on_prompt)
    else:
        dataset = D.rationale_dataset(records, tokenizer, fmt, config.max_length, report)
        collator = RationaleCollator(tokenizer.pad_token_id, config.train_on_prompt)
    model = model if model is not None else load_base(base, config)
    model = attach_lora(model, DEFAULT_ADAPTER, config.lora_r, config.lora_alpha,
                        config.lora_dropout, config.target_modules)
    train_only(model, [DEFAULT_ADAPTER])
    trainer = trainer_cls(model=model, args=config, train_dataset=dataset,
                          data_collator=collator)
    return trainer, report


def checkpointing(config: DistillConfig, out: Path) -> DistillConfig:
    """``config`` writing its checkpoints (``--save-steps``) to ``out/checkpoints``."""
    config = copy.copy(config)
    config.output_dir = str(out / CHECKPOINTS)
    return config


def fit(trainer, resume: bool) -> None:
    """Train, continuing from the last checkpoint in the trainer's output directory when
    ``resume`` and one exists."""
    from transformers.trainer_utils import get_last_checkpoint
    last = None
    if resume and Path(trainer.args.output_dir).is_dir():
        last = get_last_checkpoint(trainer.args.output_dir)
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)


def _finish(trainer, adapter: str, out: Path, title: str, report: D.EncodeReport) -> TrainResult:
    """Save the trained adapter, its hyper-parameters and loss curve, and drop the
    intermediate checkpoints (main process only)."""
    points = trainer.curve.points
    if trainer.is_world_process_zero():
        save_adapter(trainer.model, adapter, out)
        (out / "training_args.json").write_text(trainer.args.to_json_string())
        trainer.curve.write(out, title)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return TrainResult(out, len(trainer.train_dataset), trainer.state.global_step,
                       points[-1]["loss"] if points else None, points, report)


def train_baseline(method: str, data: str | Path, base: str | Path, out: str | Path,
                   config: DistillConfig, fmt: D.PromptFormat = D.PromptFormat(),
                   split: str = "train", resume: bool = False) -> TrainResult:
    """Train one LoRA adapter with ``method`` (sft, mix, nt, ul, cl) on an export;
    ``resume`` continues from the last ``--save-steps`` checkpoint in ``out``."""
    out = Path(out)
    trainer, report = build_baseline(method, D.read_export(data, split), base,
                                     checkpointing(config, out), fmt)
    fit(trainer, resume)
    res = _finish(trainer, DEFAULT_ADAPTER, out, f"{method}: {Path(str(base)).name}", report)
    if trainer.is_world_process_zero():
        write_manifest(out, kind="lora", method=method, base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), examples=res.examples,
                       encode=dataclasses.asdict(report), steps=res.steps,
                       final_loss=res.final_loss)
    return res


# -- NAT -----------------------------------------------------------------------------------

def build_nat_stage1(model, negatives: list[dict], tokenizer, config: DistillConfig,
                     fmt: D.PromptFormat = D.PromptFormat()):
    """``(trainer, report)``: a fresh ``neg`` adapter on ``model``, only it trainable,
    trained on the negatives with the next-token loss."""
    if not negatives:
        raise CuratorError("no negative rationales: NAT stage 1 trains on them")
    report = D.EncodeReport()
    ds = D.rationale_dataset(negatives, tokenizer, fmt, config.max_length, report)
    model = attach_lora(model, NEG, config.lora_r, config.lora_alpha, config.lora_dropout,
                        config.target_modules)
    train_only(model, [NEG])
    collator = RationaleCollator(tokenizer.pad_token_id, config.train_on_prompt)
    return NegTrainer(model=model, args=config, train_dataset=ds, data_collator=collator), report


def build_nat_stage2(model, positives: list[dict], tokenizer, config: NATConfig,
                     fmt: D.PromptFormat = D.PromptFormat()):
    """``(trainer, report)``: on a model holding a trained ``neg`` adapter, add ``pos`` and
    the integration gates; only they are trainable (``neg`` frozen); positives, "nat" mode."""
    if not positives:
        raise CuratorError("no positive rationales: NAT stage 2 trains on them")
    report = D.EncodeReport()
    ds = D.rationale_dataset(positives, tokenizer, fmt, config.max_length, report)
    model = attach_lora(model, POS, config.lora_r, config.lora_alpha, config.lora_dropout,
                        config.target_modules)
    add_gates(model, POS, GateConfig(width=config.gate_width, beta=config.gate_beta,
                                     temperature=config.gate_temperature, partner=NEG))
    train_only(model, [POS])
    set_gate_recompute(model, config.gate_recompute)
    collator = RationaleCollator(tokenizer.pad_token_id, config.train_on_prompt)
    return NATTrainer(model=model, args=config, train_dataset=ds, data_collator=collator), report


def resolve_neg_dir(path: str | Path) -> Path:
    """A finished stage 1: a NAT output directory (its ``neg/``) or the adapter itself."""
    p = Path(path)
    for cand in (p / NEG, p):
        if (cand / "adapter_config.json").is_file() and (cand / "adapter_model.safetensors").is_file():
            return cand
    raise CuratorError(f"--neg {p}: no finished stage-1 adapter there (expected "
                       f"{p / NEG}/adapter_config.json and adapter_model.safetensors)")


def snapshot(model, adapter: str) -> dict[str, torch.Tensor]:
    """Copies of ``adapter``'s parameters, to check later that they did not change."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{adapter}." in n}


def train_nat(data: str | Path, base: str | Path, out: str | Path, config: NATConfig,
              fmt: D.PromptFormat = D.PromptFormat(), neg: str | Path | None = None,
              neg_config: DistillConfig | None = None,
              split: str = "train", resume: bool = False) -> dict[str, TrainResult]:
    """NAT (METHOD.md step 1). Stage 1 trains ``neg`` on the negatives (skipped when
    ``neg`` names a finished stage 1); stage 2 freezes it and trains ``pos`` + the
    integration gates on the positives, on the same model instance. ``neg_config``
    overrides stage 1's knobs (default: ``config``'s). ``resume``: reuse ``out/neg`` if it
    is finished, and continue each stage from its last ``--save-steps`` checkpoint."""
    out = Path(out)
    if resume and neg is None and (out / NEG / "adapter_model.safetensors").is_file():
        neg = out / NEG
    records = D.read_export(data, split)
    positives = D.select(records, ("positive",))
    negatives = D.select(records, ("negative",))
    if not positives:
        raise CuratorError(f"{data}: no positive rationales; NAT stage 2 trains on positives")
    name = Path(str(base)).name
    tokenizer = load_tokenizer(base)
    model = load_base(base, config)
    results: dict[str, TrainResult] = {}

    if neg is not None:
        neg_dir = resolve_neg_dir(neg)
        log.info("stage 1: using the finished neg adapter at %s", neg_dir)
        model = load_peft(model, neg_dir, NEG, trainable=False)
        if neg_dir.resolve() != (out / NEG).resolve() and _is_main():
            shutil.copytree(neg_dir, out / NEG, dirs_exist_ok=True)
    else:
        if not negatives:
            raise CuratorError(f"{data}: no negative rationales; NAT stage 1 trains on them")
        trainer, report = build_nat_stage1(model, negatives, tokenizer,
                                           checkpointing(neg_config or config, out / NEG), fmt)
        fit(trainer, resume)
        results[NEG] = _finish(trainer, NEG, out / NEG, f"NAT stage 1 (neg): {name}", report)
        model = trainer.model
        del trainer

    trainer, report = build_nat_stage2(model, positives, tokenizer,
                                       checkpointing(config, out / POS), fmt)
    before = snapshot(trainer.model, NEG)
    fit(trainer, resume)
    changed = [n for n, p in snapshot(trainer.model, NEG).items() if not torch.equal(before[n], p)]
    if changed:
        raise RuntimeError(f"stage 2 modified the frozen neg adapter: {changed[:3]}")
    results[POS] = _finish(trainer, POS, out / POS, f"NAT stage 2 (pos + gates): {name}", report)
    if trainer.is_world_process_zero():
        write_manifest(out, kind="nat", method="nat", base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), neg_from=str(neg) if neg else None,
                       positives=len(positives), negatives=len(negatives),
                       stages={k: {"examples": r.examples, "steps": r.steps,
                                   "final_loss": r.final_loss,
                                   "encode": dataclasses.asdict(r.encode)}
                               for k, r in results.items()})
    return results


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
