"""Training knobs -> a method's config: the one translation from the friendly knob names
that ``distill train|nat|nce|ranker`` options and ``distill compare`` configs use
(``epochs``, ``batch_size``, ``lr``, ...) to the fields of a
:class:`distill.run.DistillConfig` subclass. Imports no torch, so the CLI and compare
configs can use it before any model code loads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from curator.errors import CuratorError

# Friendly training knob names (the `distill train` option names) -> DistillConfig fields.
# Any other field of the method's config class is accepted under its own name.
KNOBS = {"epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
         "grad_accum": "gradient_accumulation_steps", "lr": "learning_rate",
         "gradient_checkpointing": "activation_checkpointing", "cpu": "use_cpu",
         "lambda": "nce_lambda", "temperature": "nce_temperature",
         "chunk_tokens": "nce_chunk_tokens"}


def training_config(cls, out: Path, knobs: dict, where: str | None):
    """A ``DistillConfig`` subclass from friendly knob names; unknown names are refused.
    ``where`` prefixes the error of a config the class refuses (None: raised as is)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in knobs.items():
        name = KNOBS.get(k, k)
        if name not in fields:
            raise CuratorError(f"{where}: unknown training setting {k!r} for {cls.__name__}")
        kwargs[name] = v
    if "report_to" in kwargs:
        from distill.tracking import check_report_to
        check_report_to(kwargs["report_to"], "--report-to" if where is None
                        else f"{where}: report_to")
    if kwargs.get("activation_checkpointing"):
        kwargs.setdefault("activation_checkpointing_kwargs", {"use_reentrant": False})
    if isinstance(kwargs.get("target_modules"), str):
        kwargs["target_modules"] = [t.strip() for t in kwargs["target_modules"].split(",")
                                    if t.strip()] or None
    if where is None:
        return cls(output_dir=str(out), **kwargs)
    try:
        return cls(output_dir=str(out), **kwargs)
    except (TypeError, ValueError) as exc:
        raise CuratorError(f"{where}: {exc}") from None


@dataclass
class Knobs:
    """The training knobs every training command shares (its options, by name)."""
    epochs: float
    max_steps: int
    batch_size: int
    grad_accum: int
    lr: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: Optional[str]
    seed: int
    bf16: bool
    fp16: bool
    max_length: int
    train_on_prompt: bool
    gradient_checkpointing: bool
    logging_steps: int
    warmup_steps: int
    cpu: bool
    save_steps: int = 0
    report_to: str = "none"

    @classmethod
    def of(cls, options: dict, **override) -> "Knobs":
        """The knobs among a command's ``options`` (its parameters, by name)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in options.items() if k in names}, **override})

    def config(self, cls, out: Path, **extra):
        """``cls`` (a ``DistillConfig`` subclass) with these knobs and ``extra`` fields."""
        if self.bf16 and self.fp16:
            raise CuratorError("choose one of --bf16 and --fp16")
        knobs = {k: v for k, v in dataclasses.asdict(self).items()
                 if k not in ("cpu", "save_steps")}
        knobs.update(activation_checkpointing_kwargs={"use_reentrant": False},
                     cpu=self.cpu or not _cuda(),
                     save_strategy="steps" if self.save_steps > 0 else "no",
                     save_steps=self.save_steps if self.save_steps > 0 else 500, **extra)
        return training_config(cls, out, knobs, None)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()
