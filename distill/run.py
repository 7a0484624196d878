"""Shared run plumbing of every training method: the config every method extends, the
``Trainer`` base every method's trainer extends (global token normalisation, adapter mode,
checkpoint restore, loss curve), and the steps every training job takes (load the base,
checkpoint into ``OUT/checkpoints``, fit with resume, save the trained adapter).

Loss normalisation (METHOD.md, "what makes it hard"): ``Trainer`` averages gradients over
processes (DDP/FSDP/DeepSpeed) and sums them over gradient-accumulation steps. Each
micro-batch's loss is therefore ``sum of its token losses / N * world_size``, where ``N``
is the number of target tokens in the *global* batch of the optimiser step (every
micro-batch of every process, counted before the step by :meth:`get_batch_samples` and
summed across processes). The gradient is then exactly that of the mean token loss over
the global batch, whatever the number of processes or accumulation steps.

The methods: :mod:`distill.baselines` (sft, mix, nt, ul, cl), :mod:`distill.nat`,
:mod:`distill.nce`, :mod:`distill.asc` (the ranker). Jobs work unchanged under
``torchrun``/``accelerate launch`` (only the main process writes files).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from distill import data as D
from distill import losses
from distill.adapters import adapter_mode, save_adapter
from distill.models import load_model

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


# -- the config every method extends ---------------------------------------------------------

@dataclass
class DistillConfig(TrainingArguments):
    """Arguments shared by every method: ``TrainingArguments`` plus LoRA and data knobs.
    Defaults are the paper's (LoRA r=8, alpha=16, dropout 0.05 on q_proj/v_proj, lr 3e-4)."""
    learning_rate: float = 3e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None
    max_length: int = 512
    train_on_prompt: bool = False
    report_to: str | list[str] | None = "none"
    save_strategy: str = "no"
    logging_steps: float = 1
    remove_unused_columns: bool = False  # the collators need is_negative/group columns
    # Every trainable parameter gets a gradient every step (one forward pass per batch),
    # so DDP need not search for unused ones; if that ever breaks, DDP fails loudly.
    ddp_find_unused_parameters: bool | None = False
    dataloader_pin_memory: bool = torch.cuda.is_available()
    # Without a GPU the CPU is the device (and bf16 autocast on CPU needs this flag).
    use_cpu: bool = not torch.cuda.is_available()
    # One line per logging step (StepLine) instead of tqdm bars and printed dicts.
    disable_tqdm: bool = True
    # Checkpoint at an interval chosen from the run's length (auto_save_interval) rather
    # than every ``save_steps``; the ``distill`` training commands' default.
    auto_save_steps: bool = False


# -- the trainer every method extends --------------------------------------------------------

class DistillTrainer(Trainer):
    """Base: global token normalisation, an adapter mode around training, loss curves.

    Subclasses implement :meth:`loss_sum` (a sum over the micro-batch) and may override
    :meth:`count_normaliser` (what the sum is divided by, counted over the global batch).
    """

    #: adapter mode the model trains in (None: peft's active adapter)
    mode: str | None = None
    # compute_loss already divides by the global normaliser: no extra 1/grad_accum.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        attach_progress(self)

    # what every method needs
    def count_normaliser(self, batch: dict) -> torch.Tensor:
        """Target tokens of the micro-batch (after the causal shift)."""
        return losses.count_targets(batch["labels"])

    def loss_sum(self, logp: torch.Tensor, mask: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        n = sum(self.count_normaliser(b) for b in batch_samples).to(device)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n.view(1)).sum()
        return batch_samples, n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = dict(inputs)
        labels = batch.pop("labels")
        extras = {k: batch.pop(k) for k in ("is_negative", "group") if k in batch}
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        use_cache=False)
        logp, mask = losses.token_logprobs(outputs.logits, labels)
        total = self.loss_sum(logp, mask, {"labels": labels, **extras})
        if num_items_in_batch is None:  # evaluation: this micro-batch alone
            num_items_in_batch = self.count_normaliser({"labels": labels, **extras})
            scale = 1
        else:
            scale = self.accelerator.num_processes
        loss = total / torch.clamp(num_items_in_batch.to(total.device), min=1) * scale
        return (loss, outputs) if return_outputs else loss

    def train(self, *args, **kwargs):
        with adapter_mode(self.model, self.mode):
            return super().train(*args, **kwargs)

    def trained_adapters(self) -> list[str]:
        """Adapters with trainable parameters (what checkpoints must restore)."""
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        return [a for a in getattr(self.model, "peft_config", {}) if any(f".{a}." in n for n in names)]

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # Trainer's peft path re-loads every adapter of the checkpoint and makes the active
        # one trainable, which would unfreeze NAT's neg adapter; restore only the trained
        # adapters' weights, in place. (FSDP checkpoints keep Trainer's own path.)
        if self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from distill.adapters import load_adapter_weights
        root = Path(resume_from_checkpoint)
        for adapter in self.trained_adapters():
            sub = root / adapter
            load_adapter_weights(self.model, sub if sub.is_dir() else root, adapter)


# -- loss curves -----------------------------------------------------------------------------

@dataclass
class LossCurve(TrainerCallback):
    """The logged training loss (global mean per target token), learning rate and
    gradient norm per optimiser step, taken from the trainer state's log history (which
    a resumed run restores from its checkpoint, so the curve covers the whole run)."""
    points: list[dict] = field(default_factory=list)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.points = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"],
                        "learning_rate": h.get("learning_rate"), "grad_norm": h.get("grad_norm")}
                       for h in state.log_history if "loss" in h]

    def write(self, out_dir: str | Path, title: str) -> tuple[Path, Path]:
        """``loss_curve.json`` and ``loss_curve.png`` in ``out_dir``."""
        out_dir = Path(out_dir)
        js = out_dir / "loss_curve.json"
        js.write_text(json.dumps({"title": title, "points": self.points}, indent=2))
        png = out_dir / "loss_curve.png"
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p["step"] for p in self.points], [p["loss"] for p in self.points], marker=".")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("training loss (per target token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return js, png


# -- progress and checkpoint interval -------------------------------------------------------

def auto_save_interval(max_steps: int) -> int:
    """Checkpoint every N steps such that a run saves at most about 10 checkpoints and
    saves at least every 500 steps."""
    return max(1, min(500, math.ceil(max(1, max_steps) / 10)))


class StepLine(TrainerCallback):
    """One line on stderr per logging step, ``step 4/8 loss 7.5600 lr 1.00e-03 1.20 s/step``
    (plus a method's own logged means, e.g. NCE's ``ce``, ``softce``, ``beta``), from the
    main process; and, with ``auto_save_steps``, the checkpoint interval for the run's
    length, set when training begins."""

    SKIP = {"loss", "learning_rate", "grad_norm", "epoch", "step"}

    def __init__(self, stream=None):
        self.stream = stream
        self._t = self._step = None

    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "auto_save_steps", False) and args.save_strategy == "steps":
            state.save_steps = auto_save_interval(state.max_steps)
        self._t, self._step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        now = time.perf_counter()
        steps = state.global_step - (self._step or 0)
        parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
        if logs.get("learning_rate") is not None:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if steps > 0 and self._t is not None:
            parts.append(f"{(now - self._t) / steps:.2f} s/step")
        for k, v in logs.items():
            if k not in self.SKIP and isinstance(v, (int, float)):
                name = k.split("_", 1)[1] if k.startswith("nce_") else k
                parts.append(f"{name} {v:.4g}")
        print(" ".join(parts), file=self.stream or sys.stderr, flush=True)
        self._t, self._step = now, state.global_step


def attach_progress(trainer) -> None:
    """What every training job's ``trainer`` reports: its loss curve as ``trainer.curve``
    (a :class:`LossCurve`), and :class:`StepLine` lines instead of transformers' progress
    bar or printed log dicts."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    trainer.curve = LossCurve()
    trainer.add_callback(trainer.curve)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepLine())


# -- the steps of every training job ---------------------------------------------------------

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


def finish(trainer, adapter: str, out: Path, title: str, report: D.EncodeReport) -> TrainResult:
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


def snapshot(model, adapters: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Copies of the parameters of ``adapters``, to check later that they did not change."""
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if any(f".{a}." in n for a in adapters)}


def check_frozen(model, before: dict[str, torch.Tensor], message: str) -> None:
    """RuntimeError ``message: names`` if a parameter snapshotted in ``before`` changed."""
    changed = [n for n, p in model.named_parameters()
               if n in before and not torch.equal(before[n], p)]
    if changed:
        raise RuntimeError(f"{message}: {changed[:3]}")


def is_main() -> bool:
    """The main process of a ``torchrun`` job (or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0
