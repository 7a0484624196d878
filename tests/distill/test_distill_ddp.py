"""The loss normalisation makes the update independent of how a global batch is split:
1 process x 4 accumulation steps, 2 processes (gloo, via torchrun) x 2 steps, and one
process with the whole batch in one micro-batch give the same weights (plain SGD, so
that any scale error shows; no clipping). A control shows the test would catch the usual
per-micro-batch mean."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def _per_microbatch_mean(cls):
    """The usual normalisation: each micro-batch's own mean token loss."""
    class Naive(cls):
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
            return samples, None
    return Naive


def test_two_processes_equal_one_process_with_accumulation(tiny_model, export_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": str(HERE.parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           str(HERE / "ddp_worker.py"), str(tiny_model), str(export_file), str(tmp_path / "ddp"), "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp" / "weights.pt")

    whole = ddp_worker.run(str(tiny_model), str(export_file), tmp_path / "whole", accum=1)
    accum4 = ddp_worker.run(str(tiny_model), str(export_file), tmp_path / "acc", accum=4)
    for method in ddp_worker.GLOBAL_BATCH:
        start = {k: torch.zeros_like(v) for k, v in whole[method].items() if "lora_B" in k}
        assert not _close({k: whole[method][k] for k in start}, start), "nothing was trained"
        assert _close(accum4[method], whole[method]), method
        assert _close(ddp[method], whole[method]), method

    naive = ddp_worker.run(str(tiny_model), str(export_file), tmp_path / "naive", accum=4,
                           trainer_override=_per_microbatch_mean)
    assert not _close(naive["sft"], whole["sft"])
