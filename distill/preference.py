"""DPO and KTO baselines (``distill train --method dpo|kto``) on TRL's own ``DPOTrainer``
and ``KTOTrainer``: the ways the ecosystem learns from wrong answers, on the same export,
base, LoRA and knobs as the other methods.

- ``dpo``: one example per (positive, negative) pair of the same problem, formed by
  ``curator export --layout preference``'s own pairing (:func:`curator.exporting.layouts.
  layout_rows`: all pairs, or ``pairs_per_problem`` per problem, seeded);
- ``kto``: one example per rationale, desirable when positive (``--layout unpaired``).

Prompts and completions are encoded by distill (:func:`distill.data.encode`, its prompt
format), so the adapter sees at training the prompt tokens it is given at generation,
exactly as the other methods' adapters do; TRL's trainers take the token rows as they are.

The reference model is the base with the adapter disabled (TRL's peft path: a fresh LoRA
from ``peft_config``). With ``init_adapter`` (the usual SFT-then-DPO recipe) a finished
adapter, e.g. ``distill train --method sft``'s, is the trainable starting point and TRL
keeps a frozen copy of it (adapter ``ref``) as the reference. Either way OUT holds a
standard peft adapter (``default``), as every other method's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from curator.errors import CuratorError
from curator.exporting.layouts import layout_rows
from distill import data as D
from distill.adapters import lora_config
from distill.models import check_linear_targets, default_target_modules, load_peft, load_tokenizer
from distill.run import (DistillConfig, TrainResult, attach_progress, check_frozen,
                         checkpointing, finish, fit, load_base, snapshot)
from distill.student import DEFAULT_ADAPTER, is_nat_dir, read_manifest, write_manifest
from distill.tracking import tracked

METHODS = ("dpo", "kto")
REF_ADAPTER = "ref"   # TRL's name for the frozen copy of an initial adapter


# -- configs ---------------------------------------------------------------------------------

@dataclass
class DPOTrainConfig(DistillConfig, DPOConfig):
    """DPO: TRL's ``DPOConfig`` (``beta``, ``loss_type``, ``label_smoothing``,
    ``precompute_ref_log_probs``, ...) with distill's knobs and defaults (distill's
    learning rate, logging and max_length win over TRL's); ``pairs_per_problem`` caps the
    pairs of a problem (None: all)."""
    pairs_per_problem: int | None = None
    # TRL's base config turns these on; distill's knobs decide them (TrainingArguments'
    # defaults come back through DistillConfig anyway: kept explicit).
    gradient_checkpointing: bool | None = None
    bf16: bool = False
    remove_unused_columns: bool = True   # TRL's collators read only the token columns


@dataclass
class KTOTrainConfig(DistillConfig, KTOConfig):
    """KTO: TRL's ``KTOConfig`` (``beta``, ``desirable_weight``, ``undesirable_weight``,
    ``loss_type``, ...) with distill's knobs and defaults. Examples are taken in order
    (TRL's KL estimate pairs batch neighbours); the rows are shuffled once, seeded."""
    train_sampling_strategy: str = "sequential"
    gradient_checkpointing: bool | None = None
    bf16: bool = False
    remove_unused_columns: bool = True


CONFIGS = {"dpo": DPOTrainConfig, "kto": KTOTrainConfig}


# -- data ------------------------------------------------------------------------------------

def preference_rows(method: str, records: list[dict], tokenizer, fmt: D.PromptFormat,
                    max_length: int, seed: int, pairs_per_problem: int | None = None,
                    report: D.EncodeReport | None = None) -> list[dict]:
    """Token rows for TRL's ``method`` trainer from validated export records, paired by
    curator's ``--layout preference`` (dpo: ``prompt_ids``/``chosen_ids``/``rejected_ids``)
    or laid out as ``--layout unpaired`` (kto: ``prompt_ids``/``completion_ids``/``label``).
    Encoded by :func:`distill.data.encode`, as every other method's examples: the same
    prompt tokens, completions ending in EOS, cut to ``max_length`` (rows whose prompt
    alone does not fit are dropped and counted in ``report``)."""
    if method not in METHODS:
        raise CuratorError(f"unknown preference method {method!r}: choose dpo or kto")
    if not records:
        raise CuratorError("the export has no records for this method")
    by_id = {r["sample_id"]: r for r in records}
    cache: dict[str, dict | None] = {}

    def enc(sample_id: str) -> dict | None:
        if sample_id not in cache:
            r = by_id[sample_id]
            cache[sample_id] = D.encode(tokenizer, fmt, r["question"], r["rationale"],
                                        max_length, report)
        return cache[sample_id]

    out = []
    if method == "dpo":
        pairs = layout_rows(records, "preference", seed, pairs_per_problem)
        if not pairs:
            raise CuratorError("--method dpo needs problems with both a positive and a "
                               "negative rationale; the export has none")
        for p in pairs:
            c, r = enc(p["chosen_sample_id"]), enc(p["rejected_sample_id"])
            if c is None or r is None:
                continue
            n = c["prompt_length"]
            out.append({"prompt_ids": c["input_ids"][:n], "chosen_ids": c["input_ids"][n:],
                        "rejected_ids": r["input_ids"][r["prompt_length"]:],
                        "problem_id": p["problem_id"]})
    else:
        rows = layout_rows(records, "unpaired", seed)
        if all(r["label"] for r in rows) or not any(r["label"] for r in rows):
            raise CuratorError("--method kto needs both positive and negative rationales; "
                               "the export has only one kind")
        for row in rows:
            e = enc(row["sample_id"])
            if e is None:
                continue
            n = e["prompt_length"]
            out.append({"prompt_ids": e["input_ids"][:n], "completion_ids": e["input_ids"][n:],
                        "label": bool(row["label"]), "problem_id": row["problem_id"]})
    if not out:
        raise CuratorError("no trainable rows: every prompt is longer than --max-length")
    return out


def problems_without(records: list[dict]) -> dict[str, int]:
    """Problems with no positive and with no negative (they give no DPO pair)."""
    labels: dict[str, set] = {}
    for r in records:
        labels.setdefault(r["problem_id"], set()).add(r["label"])
    return {"no_positive": sum("positive" not in v for v in labels.values()),
            "no_negative": sum("negative" not in v for v in labels.values())}


class DistillDPOTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` on rows distill has already encoded (its prompt format, the
    prompt tokens exactly as at generation); text datasets go through TRL's preparation."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        return dataset


class DistillKTOTrainer(KTOTrainer):
    """TRL's ``KTOTrainer`` on rows distill has already encoded; the KL completions are
    TRL's: each completion rotated by one within its batch."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if self.calculate_KL:
            def rotate(examples):
                ids = examples["completion_ids"]
                examples["KL_completion_ids"] = ids[-1:] + ids[:-1]
                return examples
            dataset = dataset.map(rotate, batched=True,
                                  batch_size=args.per_device_train_batch_size)
        return dataset


_TRAINERS = {"dpo": DistillDPOTrainer, "kto": DistillKTOTrainer}


# -- the job ---------------------------------------------------------------------------------

def check_init_adapter(init_adapter: str | Path, fmt: D.PromptFormat) -> Path:
    """A finished single-adapter output (e.g. ``distill train --method sft``) trained with
    the same prompt format."""
    path = Path(init_adapter)
    if is_nat_dir(path):
        raise CuratorError(f"--init-adapter {path}: a NAT output has two adapters and gates; "
                           f"start DPO/KTO from a single adapter (e.g. --method sft's OUT)")
    if not (path / "adapter_config.json").is_file():
        raise CuratorError(f"--init-adapter {path}: not a peft adapter directory (no "
                           f"adapter_config.json)")
    saved = read_manifest(path).get("prompt_format")
    if saved is not None and D.PromptFormat.from_json(saved) != fmt:
        raise CuratorError(f"--init-adapter {path} was trained with prompt format {saved}, "
                           f"this run uses {fmt.to_json()}: pass the same "
                           f"--prompt-template/--chat-template")
    return path


def build_preference(method: str, records: list[dict], base: str | Path, config: DistillConfig,
                     fmt: D.PromptFormat = D.PromptFormat(), init_adapter: str | Path | None = None,
                     model=None):
    """``(trainer, encode report)``: TRL's DPO or KTO trainer on validated export records,
    training a LoRA adapter ``default`` on ``base`` (fresh, reference = the base with it
    disabled; or ``init_adapter``'s weights, reference = their frozen copy)."""
    if method not in METHODS:
        raise CuratorError(f"unknown --method {method!r}: choose one of {', '.join(METHODS)}")
    if not isinstance(config, CONFIGS[method]):
        raise TypeError(f"{method} needs a {CONFIGS[method].__name__}, "
                        f"got {type(config).__name__}")
    import datasets

    tokenizer = load_tokenizer(base)
    report = D.EncodeReport()
    rows = preference_rows(method, records, tokenizer, fmt, config.max_length, config.seed,
                           getattr(config, "pairs_per_problem", None), report)
    dataset = datasets.Dataset.from_list(rows)
    if method == "kto":
        # KTOTrainer samples in order and pairs each completion with its batch neighbour's
        # prompt for the KL estimate: shuffle once so neighbours are other problems.
        dataset = dataset.shuffle(seed=config.seed).flatten_indices()
    model = model if model is not None else load_base(base, config)
    peft_config = None
    if init_adapter is not None:
        model = load_peft(model, check_init_adapter(init_adapter, fmt), DEFAULT_ADAPTER,
                          trainable=True)
    else:
        targets = config.target_modules or default_target_modules(model)
        check_linear_targets(model, targets)
        peft_config = lora_config(config.lora_r, config.lora_alpha, config.lora_dropout,
                                  targets)
    trainer = _TRAINERS[method](model=model, args=config, train_dataset=dataset,
                                processing_class=tokenizer, peft_config=peft_config)
    attach_progress(trainer)
    return trainer, report


@tracked
def train_preference(method: str, data: str | Path, base: str | Path, out: str | Path,
                     config: DistillConfig, fmt: D.PromptFormat = D.PromptFormat(),
                     split: str = "train", init_adapter: str | Path | None = None,
                     resume: bool = False) -> TrainResult:
    """Train one LoRA adapter with DPO or KTO on an export (its positives and negatives);
    ``resume`` continues from the last ``--save-steps`` checkpoint in ``out``."""
    out = Path(out)
    records = D.read_export(data, split)
    trainer, report = build_preference(method, records, base, checkpointing(config, out), fmt,
                                       init_adapter)
    frozen = snapshot(trainer.model, (REF_ADAPTER,)) if init_adapter is not None else {}
    fit(trainer, resume)
    check_frozen(trainer.model, frozen, f"{method} modified its frozen reference adapter")
    res = finish(trainer, DEFAULT_ADAPTER, out, f"{method.upper()}: {Path(str(base)).name}",
                 report)
    if trainer.is_world_process_zero():
        reference = (f"frozen copy of {init_adapter}" if init_adapter is not None
                     else "the base model (adapter disabled)")
        extra = ({"pairs_per_problem": config.pairs_per_problem,
                  "problems_without_pair": problems_without(records)} if method == "dpo"
                 else {"desirable_weight": config.desirable_weight,
                       "undesirable_weight": config.undesirable_weight})
        write_manifest(out, kind="lora", method=method, base_model=str(base), data=str(data),
                       prompt_format=fmt.to_json(), examples=res.examples,
                       encode=dataclasses.asdict(report), steps=res.steps,
                       final_loss=res.final_loss, beta=config.beta,
                       loss_type=config.loss_type, reference=reference,
                       init_adapter=str(init_adapter) if init_adapter is not None else None,
                       **extra)
    return res
