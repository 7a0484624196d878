"""NAT (METHOD.md step 1), its config, trainers and the ``distill nat`` job. Stage 1
trains a ``neg`` LoRA on the negatives; stage 2 freezes it and trains a ``pos`` LoRA and
the integration gates (:mod:`distill.nat.gate`) on the positives, through the gated model
("nat" mode of :func:`distill.adapters.adapter_mode`). Both stages minimise the plain
next-token loss (:class:`distill.baselines.SFTTrainer`); what differs is the adapter mode.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError
from distill import data as D
from distill.adapters import add_gates, set_gate_recompute, train_only
from distill.baselines import SFTTrainer
from distill.collate import RationaleCollator
from distill.models import attach_lora, load_peft, load_tokenizer
from distill.nat.gate import NEG, POS, GateConfig
from distill.run import (DistillConfig, TrainResult, check_frozen, checkpointing, finish, fit,
                         is_main, load_base, snapshot)
from distill.student import write_manifest
from distill.tracking import tracking

log = logging.getLogger(__name__)


@dataclass
class NATConfig(DistillConfig):
    """NAT stage 2: ``pos`` adapter and integration gates on positives, ``neg`` frozen."""
    gate_width: int = 128
    gate_beta: float = 0.5
    gate_temperature: float = 1.0
    gate_recompute: bool = True  # recompute gated layers in backward instead of storing


class NegTrainer(SFTTrainer):
    """NAT stage 1: next-token loss on negatives through the ``neg`` adapter alone."""
    mode = "neg"


class NATTrainer(SFTTrainer):
    """NAT stage 2: next-token loss on positives through the gated model ("nat" mode)."""
    mode = "nat"


def _stage_inputs(model, adapter: str, rows: list[dict], label: str, stage: int, tokenizer,
                  config: DistillConfig, fmt: D.PromptFormat):
    """``(model, dataset, report)`` of one NAT stage: its rationales encoded and a fresh
    LoRA adapter ``adapter`` attached; no rationales is an error."""
    if not rows:
        raise CuratorError(f"no {label} rationales: NAT stage {stage} trains on them")
    report = D.EncodeReport()
    ds = D.rationale_dataset(rows, tokenizer, fmt, config.max_length, report)
    model = attach_lora(model, adapter, config.lora_r, config.lora_alpha, config.lora_dropout,
                        config.target_modules)
    return model, ds, report


def build_nat_stage1(model, negatives: list[dict], tokenizer, config: DistillConfig,
                     fmt: D.PromptFormat = D.PromptFormat()):
    """``(trainer, report)``: a fresh ``neg`` adapter on ``model``, only it trainable,
    trained on the negatives with the next-token loss."""
    model, ds, report = _stage_inputs(model, NEG, negatives, "negative", 1, tokenizer, config, fmt)
    train_only(model, [NEG])
    collator = RationaleCollator(tokenizer.pad_token_id, config.train_on_prompt)
    return NegTrainer(model=model, args=config, train_dataset=ds, data_collator=collator), report


def build_nat_stage2(model, positives: list[dict], tokenizer, config: NATConfig,
                     fmt: D.PromptFormat = D.PromptFormat()):
    """``(trainer, report)``: on a model holding a trained ``neg`` adapter, add ``pos`` and
    the integration gates; only they are trainable (``neg`` frozen); positives, "nat" mode."""
    model, ds, report = _stage_inputs(model, POS, positives, "positive", 2, tokenizer, config, fmt)
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
        if neg_dir.resolve() != (out / NEG).resolve() and is_main():
            shutil.copytree(neg_dir, out / NEG, dirs_exist_ok=True)
    else:
        if not negatives:
            raise CuratorError(f"{data}: no negative rationales; NAT stage 1 trains on them")
        stage1 = neg_config or config
        with tracking(stage1.report_to, out / NEG):
            trainer, report = build_nat_stage1(model, negatives, tokenizer,
                                               checkpointing(stage1, out / NEG), fmt)
            fit(trainer, resume)
            results[NEG] = finish(trainer, NEG, out / NEG, f"NAT stage 1 (neg): {name}",
                                  report)
        model = trainer.model
        del trainer

    with tracking(config.report_to, out / POS):
        trainer, report = build_nat_stage2(model, positives, tokenizer,
                                           checkpointing(config, out / POS), fmt)
        before = snapshot(trainer.model, (NEG,))
        fit(trainer, resume)
        check_frozen(trainer.model, before, "stage 2 modified the frozen neg adapter")
        results[POS] = finish(trainer, POS, out / POS, f"NAT stage 2 (pos + gates): {name}",
                              report)
    if trainer.is_world_process_zero():
        write_manifest(out, kind="nat", method="nat", base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), neg_from=str(neg) if neg else None,
                       positives=len(positives), negatives=len(negatives),
                       stages={k: {"examples": r.examples, "steps": r.steps,
                                   "final_loss": r.final_loss,
                                   "encode": dataclasses.asdict(r.encode)}
                               for k, r in results.items()})
    return results
