"""One ``transformers.Trainer`` subclass per method, each overriding ``compute_loss`` only,
and one config dataclass per trainer.

Loss normalisation (METHOD.md, "what makes it hard"): ``Trainer`` averages gradients over
processes (DDP/FSDP/DeepSpeed) and sums them over gradient-accumulation steps. Each
micro-batch's loss is therefore ``sum of its token losses / N * world_size``, where ``N``
is the number of target tokens in the *global* batch of the optimiser step (every
micro-batch of every process, counted before the step by :meth:`get_batch_samples` and
summed across processes). The gradient is then exactly that of the mean token loss over
the global batch, whatever the number of processes or accumulation steps.

Methods that mix positives and negatives (MIX, NT, UL, CL) put both in the same batch, so
one forward pass reaches every trainable parameter in every step (DDP needs that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from distill import losses
from distill.adapters import adapter_mode


# -- configs ---------------------------------------------------------------------------------

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


@dataclass
class NATConfig(DistillConfig):
    """NAT stage 2: ``pos`` adapter and integration gates on positives, ``neg`` frozen."""
    gate_width: int = 128
    gate_beta: float = 0.5
    gate_temperature: float = 1.0
    gate_recompute: bool = True  # recompute gated layers in backward instead of storing


# -- trainers --------------------------------------------------------------------------------

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
        self.curve = LossCurve()
        self.add_callback(self.curve)

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


class SFTTrainer(DistillTrainer):
    """Mean next-token negative log-likelihood (CoT KD, MIX, NAT stage 1)."""

    def loss_sum(self, logp, mask, batch):
        return losses.nll_sum(logp, mask)


class NegTrainer(SFTTrainer):
    """NAT stage 1: next-token loss on negatives through the ``neg`` adapter alone."""
    mode = "neg"


class NATTrainer(SFTTrainer):
    """NAT stage 2: next-token loss on positives through the gated model ("nat" mode)."""
    mode = "nat"


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
