"""Worker for test_distill_ddp.py: train a few steps of several methods with a given
number of gradient-accumulation steps and per-device batch size, in whatever process
group ``torchrun`` set up (or none), and save the resulting adapter weights.

Usage: ddp_worker.py BASE EXPORT OUT_DIR ACCUM SCALE
(per-device batch = method's global batch / (world size * ACCUM); SCALE is unused
padding for symmetry with the test's naming)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from distill import data as D  # noqa: E402
from distill.baselines import TRAINERS, build_baseline  # noqa: E402

# method -> global batch (examples; problems for cl) per optimiser step
GLOBAL_BATCH = {"sft": 8, "nt": 8, "cl": 4}
STEPS = 2


def run(base: str, export: str, out: Path, accum: int, trainer_override=None) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    results = {}
    for method, g in GLOBAL_BATCH.items():
        per_device = g // (world * accum)
        assert per_device * world * accum == g, (method, g, world, accum)
        cfg = TRAINERS[method][1](
            output_dir=str(out / method), per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accum, max_steps=STEPS, learning_rate=0.5,
            optim="sgd", max_grad_norm=0.0, lora_dropout=0.0, max_length=64, seed=0,
            train_sampling_strategy="sequential", disable_tqdm=True, use_cpu=True,
            logging_steps=1, warmup_steps=0)
        trainer, _ = build_baseline(method, D.read_export(export), base, cfg)
        if trainer_override is not None:
            trainer.__class__ = trainer_override(type(trainer))
        trainer.train()
        results[method] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                           if p.requires_grad}
    return results


if __name__ == "__main__":
    base, export, out, accum = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    res = run(base, export, out, accum)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(res, out / "weights.pt")
    from distill.cli import shutdown_process_group
    shutdown_process_group()
