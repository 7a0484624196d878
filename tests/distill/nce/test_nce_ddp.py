"""NCE under two processes (gloo, via torchrun): the betas precomputed in strided shares
are every sample's, and the update equals one process with the whole global batch and
one process with 4 accumulation steps (plain SGD, no clipping, so a scale error shows),
with both of NCE's token counts (CE targets, distillation positions) normalised over the
global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nce_ddp_worker  # noqa: E402


def _assert_same_weights(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name, w in want.items():
        assert torch.allclose(got[name], w, rtol=1e-4, atol=1e-6), f"{what}: {name}"


def test_two_processes_equal_one_process(tiny, nat_dir, export_file, tmp_path):
    all_tokens = True  # the two counts differ: a mixed-up normaliser shows
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[2])}
    # --standalone: torchrun picks a free local port itself
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "nce_ddp_worker.py"), str(tiny), str(nat_dir), str(export_file),
           str(tmp_path / "ddp"), "1", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp" / "result.pt")

    whole = nce_ddp_worker.run(str(tiny), str(nat_dir), str(export_file), tmp_path / "whole", 1, all_tokens)
    accum = nce_ddp_worker.run(str(tiny), str(nat_dir), str(export_file), tmp_path / "acc", 4, all_tokens)
    assert ddp["betas"].keys() == whole["betas"].keys()
    assert all(ddp["betas"][k] == pytest.approx(whole["betas"][k], rel=1e-5) for k in whole["betas"])
    assert any(v.abs().sum() > 0 for k, v in whole["weights"].items() if ".lora_B." in k)
    _assert_same_weights(accum["weights"], whole["weights"], "1 process x 4 accumulation steps")
    _assert_same_weights(ddp["weights"], whole["weights"], "2 processes")
