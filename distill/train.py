"""The training jobs behind ``distill train`` (baselines) and ``distill nat`` (NAT).

Each job: read and validate the export, encode rationales, load the base model, attach
LoRA adapter(s), train with the method's ``Trainer``, and write the output directory
described in :mod:`distill.student`. Works unchanged under ``torchrun``/``accelerate
launch`` (only the main process writes files).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from curator.errors import CuratorError
from distill import data as D
from distill.adapters import NEG, POS, GateConfig, add_gates, save_adapter, train_only
from distill.collate import GroupCollator, RationaleCollator
from distill.models import attach_lora, load_model, load_peft, load_tokenizer
from distill.student import DEFAULT_ADAPTER, write_manifest
from distill.trainers import TRAINERS, DistillConfig, NATConfig, NATTrainer, NegTrainer

log = logging.getLogger(__name__)

METHODS = ("sft", "mix", "nt", "ul", "cl")


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


def _records_for(method: str, records: list[dict]) -> list[dict]:
    if method == "sft":
        chosen = D.select(records, ("positive",))
    elif method == "cl":
        chosen = records
    else:  # mix, nt, ul: positives and negatives together
        chosen = records
    if method in ("sft", "cl") and not D.select(chosen, ("positive",)):
        raise CuratorError(f"--method {method} needs positive rationales; the export has none")
    if not chosen:
        raise CuratorError("the export has no records for this method")
    return chosen


def _fit(trainer_cls, model, config, dataset, collator):
    trainer = trainer_cls(model=model, args=config, train_dataset=dataset,
                          data_collator=collator)
    trainer.train()
    return trainer


def _finish(trainer, adapter: str, out: Path, title: str, examples: int,
            report: D.EncodeReport) -> TrainResult:
    """Save the trained adapter, its hyper-parameters and loss curve (main process only)."""
    points = trainer.curve.points
    if trainer.is_world_process_zero():
        save_adapter(trainer.model, adapter, out)
        (out / "training_args.json").write_text(trainer.args.to_json_string())
        trainer.curve.write(out, title)
    return TrainResult(out, examples, trainer.state.global_step,
                       points[-1]["loss"] if points else None, points, report)


def train_baseline(method: str, data: str | Path, base: str | Path, out: str | Path,
                   config: DistillConfig, fmt: D.PromptFormat = D.PromptFormat()) -> TrainResult:
    """Train one LoRA adapter with ``method`` (sft, mix, nt, ul, cl) on an export."""
    if method not in TRAINERS:
        raise CuratorError(f"unknown --method {method!r}: choose one of {', '.join(METHODS)}")
    trainer_cls, config_cls = TRAINERS[method]
    if not isinstance(config, config_cls):
        raise TypeError(f"{method} needs a {config_cls.__name__}, got {type(config).__name__}")
    out = Path(out)
    records = _records_for(method, D.read_export(data))
    tokenizer = load_tokenizer(base)
    report = D.EncodeReport()
    if method == "cl":
        dataset = D.group_dataset(records, tokenizer, fmt, config.max_length,
                                  config.cl_group_size, config.seed, report)
        collator = GroupCollator(tokenizer.pad_token_id, config.train_on_prompt)
    else:
        dataset = D.rationale_dataset(records, tokenizer, fmt, config.max_length, report)
        collator = RationaleCollator(tokenizer.pad_token_id, config.train_on_prompt)

    torch.manual_seed(config.seed)
    model = load_model(base, model_dtype(config),
                       gradient_checkpointing=config.gradient_checkpointing)
    model = attach_lora(model, DEFAULT_ADAPTER, config.lora_r, config.lora_alpha,
                        config.lora_dropout, config.target_modules)
    train_only(model, [DEFAULT_ADAPTER])
    trainer = _fit(trainer_cls, model, config, dataset, collator)
    res = _finish(trainer, DEFAULT_ADAPTER, out, f"{method}: {Path(str(base)).name}",
                  len(dataset), report)
    if trainer.is_world_process_zero():
        write_manifest(out, kind="lora", method=method, base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), examples=len(dataset),
                       encode=dataclasses.asdict(report), steps=res.steps,
                       final_loss=res.final_loss)
    return res


def resolve_neg_dir(path: str | Path) -> Path:
    """A finished stage 1: a NAT output directory (its ``neg/``) or the adapter itself."""
    p = Path(path)
    for cand in (p / NEG, p):
        if (cand / "adapter_config.json").is_file() and (cand / "adapter_model.safetensors").is_file():
            return cand
    raise CuratorError(f"--neg {p}: no finished stage-1 adapter there (expected "
                       f"{p / NEG}/adapter_config.json and adapter_model.safetensors)")


def _snapshot(model, adapter: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{adapter}." in n}


def train_nat(data: str | Path, base: str | Path, out: str | Path, config: NATConfig,
              fmt: D.PromptFormat = D.PromptFormat(), neg: str | Path | None = None,
              neg_config: DistillConfig | None = None) -> dict[str, TrainResult]:
    """NAT (METHOD.md step 1). Stage 1 trains ``neg`` on the negatives (skipped when
    ``neg`` names a finished stage 1); stage 2 freezes it and trains ``pos`` + the
    integration gates on the positives, on the same model instance. ``neg_config``
    overrides stage 1's knobs (default: ``config``'s)."""
    out = Path(out)
    records = D.read_export(data)
    positives = D.select(records, ("positive",))
    negatives = D.select(records, ("negative",))
    if not positives:
        raise CuratorError(f"{data}: no positive rationales; NAT stage 2 trains on positives")
    name = Path(str(base)).name
    tokenizer = load_tokenizer(base)
    collator = RationaleCollator(tokenizer.pad_token_id, config.train_on_prompt)
    results: dict[str, TrainResult] = {}

    torch.manual_seed(config.seed)
    model = load_model(base, model_dtype(config),
                       gradient_checkpointing=config.gradient_checkpointing)
    if neg is not None:
        neg_dir = resolve_neg_dir(neg)
        log.info("stage 1: using the finished neg adapter at %s", neg_dir)
        model = load_peft(model, neg_dir, NEG, trainable=False)
        if neg_dir.resolve() != (out / NEG).resolve() and _is_main():
            import shutil
            shutil.copytree(neg_dir, out / NEG, dirs_exist_ok=True)
    else:
        if not negatives:
            raise CuratorError(f"{data}: no negative rationales; NAT stage 1 trains on them")
        cfg1 = neg_config or config
        report = D.EncodeReport()
        ds = D.rationale_dataset(negatives, tokenizer, fmt, cfg1.max_length, report)
        model = attach_lora(model, NEG, cfg1.lora_r, cfg1.lora_alpha, cfg1.lora_dropout,
                            cfg1.target_modules)
        train_only(model, [NEG])
        trainer = _fit(NegTrainer, model, cfg1, ds, collator)
        results[NEG] = _finish(trainer, NEG, out / NEG, f"NAT stage 1 (neg): {name}",
                               len(ds), report)
        del trainer

    # Stage 2: pos + gates on positives; neg frozen, and checked bit-identical afterwards.
    report = D.EncodeReport()
    ds = D.rationale_dataset(positives, tokenizer, fmt, config.max_length, report)
    model = attach_lora(model, POS, config.lora_r, config.lora_alpha, config.lora_dropout,
                        config.target_modules)
    add_gates(model, POS, GateConfig(width=config.gate_width, beta=config.gate_beta,
                                     temperature=config.gate_temperature, partner=NEG))
    train_only(model, [POS])
    before = _snapshot(model, NEG)
    trainer = _fit(NATTrainer, model, config, ds, collator)
    changed = [n for n, p in _snapshot(trainer.model, NEG).items() if not torch.equal(before[n], p)]
    if changed:
        raise RuntimeError(f"stage 2 modified the frozen neg adapter: {changed[:3]}")
    results[POS] = _finish(trainer, POS, out / POS, f"NAT stage 2 (pos + gates): {name}",
                           len(ds), report)
    if trainer.is_world_process_zero():
        write_manifest(out, kind="nat", method="nat", base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), neg_from=str(neg) if neg else None,
                       positives=len(positives), negatives=len(negatives),
                       stages={k: {"examples": r.examples, "steps": r.steps,
                                   "final_loss": r.final_loss, "encode": dataclasses.asdict(r.encode)}
                               for k, r in results.items()})
    return results


def _is_main() -> bool:
    import os
    return int(os.environ.get("RANK", "0")) == 0
