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


# The methods of `distill train`, here so that the CLI can check --method without
# importing the training stack (distill.baselines holds their trainers).
METHODS = ("sft", "mix", "nt", "ul", "cl")

DEVICES = ("auto", "cpu", "cuda")


def check_device(value: str | None, option: str = "--device", index: bool = False) -> str:
    """``value`` (None: auto) if it names a device: auto, cpu, cuda (and cuda:N when
    ``index``); a clear error otherwise. Imports no torch."""
    value = (value or "auto").strip().lower()
    ok = value in DEVICES or (index and value.startswith("cuda:") and value[5:].isdigit())
    if not ok:
        more = ", cuda:N" if index else ""
        raise CuratorError(f"{option} {value!r}: choose auto, cpu or cuda{more}")
    return value


def use_cpu(device: str | None, where: str = "--device") -> bool:
    """Whether training runs on the CPU for ``device`` (auto: when there is no GPU);
    ``cuda`` without a GPU is refused."""
    device = check_device(device, where)
    if device == "cpu":
        return True
    if _cuda():
        return False
    if device == "cuda":
        raise CuratorError(f"{where} cuda: torch sees no GPU here")
    return True


def training_config(cls, out: Path, knobs: dict, where: str | None):
    """A ``DistillConfig`` subclass from friendly knob names; unknown names are refused.
    ``where`` prefixes the error of a config the class refuses (None: raised as is).
    ``device`` (auto, cpu, cuda) sets ``use_cpu``; ``cpu = true`` is its older spelling."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    knobs = dict(knobs)
    if "device" in knobs:
        knobs["cpu"] = use_cpu(knobs.pop("device"), f"{where}: device" if where else "device")
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
    device: str = "auto"
    save_steps: Optional[int] = 0   # None: auto (see distill.run.auto_save_interval)
    report_to: str = "none"
    cpu: bool = False               # the older spelling of device="cpu"

    @classmethod
    def of(cls, options: dict, **override) -> "Knobs":
        """The knobs among a command's ``options`` (its parameters, by name)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in options.items() if k in names}, **override})

    def config(self, cls, out: Path, **extra):
        """``cls`` (a ``DistillConfig`` subclass) with these knobs and ``extra`` fields."""
        if self.bf16 and self.fp16:
            raise CuratorError("choose one of --bf16 and --fp16")
        if self.save_steps is not None and self.save_steps < 0:
            raise CuratorError(f"--save-steps {self.save_steps}: give 0 (off) or more")
        knobs = {k: v for k, v in dataclasses.asdict(self).items()
                 if k not in ("device", "cpu", "save_steps")}
        auto = self.save_steps is None
        knobs.update(activation_checkpointing_kwargs={"use_reentrant": False},
                     cpu=use_cpu("cpu" if self.cpu else self.device),
                     save_strategy="steps" if auto or self.save_steps > 0 else "no",
                     save_steps=self.save_steps if not auto and self.save_steps > 0 else 500,
                     **extra)
        if auto:
            knobs.update(auto_save_steps=True)
        if auto or self.save_steps > 0:
            # --save-steps promises "keeping the last 2" whether the interval is chosen
            # or given: an explicit interval must not fill OUT with every checkpoint.
            knobs.update(save_total_limit=2)
        return training_config(cls, out, knobs, None)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()
