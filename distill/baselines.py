"""The baselines of the paper, one ``Trainer`` per method, each a ``loss_sum`` over the
micro-batch (the pure losses are in :mod:`distill.losses`; normalisation in
:class:`distill.run.DistillTrainer`), and the ``distill train`` job:

- ``sft``: CoT KD, next-token loss on positives;       ``mix``: the same on everything;
- ``nt``:  weighted likelihood, ``neg_weight`` on negatives;
- ``ul``:  likelihood on positives + unlikelihood on negatives' tokens;
- ``cl``:  likelihood on positives + InfoNCE of each positive against its problem's negatives.

Methods that mix positives and negatives (MIX, NT, UL, CL) put both in the same batch, so
one forward pass reaches every trainable parameter in every step (DDP needs that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError
from distill import data as D
from distill import losses
from distill.adapters import train_only
from distill.collate import GroupCollator, RationaleCollator
from distill.knobs import METHODS
from distill.models import attach_lora, load_tokenizer
from distill.run import (DistillConfig, DistillTrainer, TrainResult, checkpointing, finish,
                         fit, load_base)
from distill.student import DEFAULT_ADAPTER, write_manifest
from distill.tracking import tracking


# -- configs ---------------------------------------------------------------------------------

@dataclass
class SFTConfig(DistillConfig):
    """CoT KD (positives only), MIX (positives and negatives pooled) and NAT stage 1."""


@dataclass
class NTConfig(DistillConfig):
    """NT: weighted likelihood, +1 on positives and ``neg_weight`` on negatives."""
    neg_weight: float = -0.05


@dataclass
class ULConfig(DistillConfig):
    """UL: likelihood on positives plus ``ul_weight * -log(1 - p)`` on negatives' tokens."""
    ul_weight: float = 1.0


@dataclass
class CLConfig(DistillConfig):
    """CL: likelihood on positives plus ``cl_weight`` x InfoNCE of each positive against
    the negatives of its problem; ``per_device_train_batch_size`` counts problems, each
    with up to ``cl_group_size`` candidates."""
    cl_weight: float = 1.0
    cl_temperature: float = 1.0
    cl_group_size: int = 4


# -- trainers --------------------------------------------------------------------------------

class SFTTrainer(DistillTrainer):
    """Mean next-token negative log-likelihood (CoT KD, MIX, NAT stage 1)."""

    def loss_sum(self, logp, mask, batch):
        return losses.nll_sum(logp, mask)


class NTTrainer(DistillTrainer):
    def loss_sum(self, logp, mask, batch):
        w = losses.nt_weights(batch["is_negative"], self.args.neg_weight).to(logp.device)
        return losses.nll_sum(logp, mask, w)


class ULTrainer(DistillTrainer):
    def loss_sum(self, logp, mask, batch):
        return losses.unlikelihood_sum(logp, mask, batch["is_negative"], self.args.ul_weight)


class CLTrainer(DistillTrainer):
    def count_normaliser(self, batch):
        """Target tokens of positives: the likelihood term covers only those, and the
        contrastive term is weighted by positives' token counts."""
        return losses.count_targets(batch["labels"], ~batch["is_negative"])

    def loss_sum(self, logp, mask, batch):
        neg = batch["is_negative"]
        likelihood = losses.nll_sum(logp, mask, (~neg).to(logp.dtype))
        contrast = losses.contrastive_sum(logp, mask, neg, batch["group"],
                                          self.args.cl_temperature)
        return likelihood + self.args.cl_weight * contrast


TRAINERS = {"sft": (SFTTrainer, SFTConfig), "mix": (SFTTrainer, SFTConfig),
            "nt": (NTTrainer, NTConfig), "ul": (ULTrainer, ULConfig),
            "cl": (CLTrainer, CLConfig)}


# -- the job ---------------------------------------------------------------------------------

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


def train_baseline(method: str, data: str | Path, base: str | Path, out: str | Path,
                   config: DistillConfig, fmt: D.PromptFormat = D.PromptFormat(),
                   split: str = "train", resume: bool = False) -> TrainResult:
    """Train one LoRA adapter with ``method`` (sft, mix, nt, ul, cl) on an export;
    ``resume`` continues from the last ``--save-steps`` checkpoint in ``out``."""
    out = Path(out)
    with tracking(config.report_to, out):
        trainer, report = build_baseline(method, D.read_export(data, split), base,
                                         checkpointing(config, out), fmt)
        fit(trainer, resume)
        res = finish(trainer, DEFAULT_ADAPTER, out, f"{method}: {Path(str(base)).name}",
                     report)
    if trainer.is_world_process_zero():
        write_manifest(out, kind="lora", method=method, base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), examples=res.examples,
                       encode=dataclasses.asdict(report), steps=res.steps,
                       final_loss=res.final_loss)
    return res
