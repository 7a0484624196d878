"""Worker for test_nce_ddp.py: precompute betas and train NCE for two SGD steps in
whatever process group ``torchrun`` set up (or none), then save the student's weights
and the betas (rank 0). Named apart from tests/distill/ddp_worker.py, since both are
imported by module name.

Usage: nce_ddp_worker.py BASE NAT EXPORT OUT_DIR ACCUM ALL_TOKENS"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from distill import data as D  # noqa: E402
from distill.nce import BetaStore, NCEConfig, build_nce  # noqa: E402

GLOBAL_BATCH = 8
STEPS = 2


def run(base: str, nat: str, export: str, out: Path, accum: int, all_tokens: bool) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = GLOBAL_BATCH // (world * accum)
    assert per_device * world * accum == GLOBAL_BATCH
    cfg = NCEConfig(output_dir=str(out / "trainer"), per_device_train_batch_size=per_device,
                    gradient_accumulation_steps=accum, max_steps=STEPS, learning_rate=0.5,
                    optim="sgd", max_grad_norm=0.0, lora_dropout=0.0, max_length=96, seed=0,
                    train_sampling_strategy="sequential", disable_tqdm=True, use_cpu=True,
                    logging_steps=100, warmup_steps=0, precompute_beta=True,
                    distill_all_tokens=all_tokens)
    trainer, _ = build_nce(D.read_export(export), base, nat, cfg)
    betas = trainer.precompute_betas(BetaStore(out / "betas", {"test": 1}))
    trainer.use_betas(betas)
    trainer.train()
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
               if p.requires_grad}
    return {"weights": weights, "betas": betas}


if __name__ == "__main__":
    base, nat, export, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    res = run(base, nat, export, out, int(sys.argv[5]), sys.argv[6] == "1")
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(res, out / "result.pt")
    from distill.cli import shutdown_process_group
    shutdown_process_group()
