"""`distill` before any model loads: arguments refused without importing torch, the thread
count chosen once (and how to override it), the hub off unless asked, `--device` one
option everywhere, and one progress line per logging step."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from curator.errors import CuratorError
from distill import threads as T

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "DISTILL_THREADS", "HF_HUB_OFFLINE",
                         "DISTILL_ALLOW_DOWNLOAD", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**base, **env}, timeout=120, cwd=ROOT)


def test_bad_arguments_are_refused_before_torch_is_imported(tmp_path):
    code = f"""
import sys
from typer.testing import CliRunner
from distill.cli import app
r = CliRunner()
for args in (["train", "--method", "bogus"], ["train", "--device", "gpu"],
             ["nat", "--device", "tpu"], ["generate", "--device", "gpu"],
             ["train", "--cpu", "--device", "cuda"]):
    common = ["--data", "x.jsonl", "--base", "m", "--out", {str(tmp_path / 'o')!r}]
    res = r.invoke(app, args + common)
    print(res.exit_code, str(res.exception).replace("\\n", " "))
print("torch imported:", "torch" in sys.modules)
"""
    res = _python(code)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "--method 'bogus': choose one of sft, mix, nt, ul, cl" in lines[0]
    assert "--device 'gpu': choose auto, cpu or cuda" in lines[1]
    assert "--device 'tpu'" in lines[2] and "cuda:N" in lines[3]
    assert "--cpu contradicts --device cuda" in lines[4]
    assert all(not line.startswith("0 ") for line in lines[:5])
    assert lines[-1] == "torch imported: False"


def test_thread_rule_and_overrides(monkeypatch):
    assert [T.auto_threads(c) for c in (1, 2, 3, 16)] == [1, 1, 3, 16]
    assert T.auto_threads(16, processes=4) == 4 and T.auto_threads(3, processes=8) == 1
    monkeypatch.setattr(T, "usable_cores", lambda: 2)
    assert T.choose(environ={}) == {"threads": 1, "source": "auto: 2 cores"}
    monkeypatch.setattr(T, "usable_cores", lambda: 16)
    assert T.choose(environ={"LOCAL_WORLD_SIZE": "4"})["threads"] == 4
    # explicit choices win, in this order: --threads, DISTILL_THREADS, OMP_NUM_THREADS
    env = {"DISTILL_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert T.choose(2, environ=env) == {"threads": 2, "source": "--threads"}
    assert T.choose(environ=env) == {"threads": 3, "source": "DISTILL_THREADS"}
    assert T.choose(environ={"OMP_NUM_THREADS": "5"})["source"] == "OMP_NUM_THREADS"
    assert T.choose(0, environ={})["threads"] is None          # 0: torch's default
    with pytest.raises(CuratorError, match="DISTILL_THREADS='many'"):
        T.choose(environ={"DISTILL_THREADS": "many"})
    with pytest.raises(CuratorError, match="--threads -1"):
        T.choose(-1, environ={})


def test_threads_are_set_before_torch_and_said_once():
    code = """
import os, sys
from distill import threads as T
c = T.configure()
import torch
T.announce(); T.announce()
print(torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], c["source"])
"""
    res = _python(code)
    assert res.returncode == 0, res.stderr
    n = T.auto_threads(T.usable_cores())
    assert res.stdout.split() [:2] == [str(n), str(n)]
    said = [x for x in res.stderr.splitlines() if x.startswith("distill: torch uses")]
    assert len(said) == 1 and "DISTILL_THREADS" in said[0] and "auto" in said[0]
    res = _python(code, OMP_NUM_THREADS="2")     # the user's OMP_NUM_THREADS is kept
    assert res.stdout.split()[:2] == ["2", "2"] and "OMP_NUM_THREADS" in res.stdout


def test_hub_is_off_unless_asked(monkeypatch):
    from distill.cli import hub_access
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DISTILL_ALLOW_DOWNLOAD", raising=False)
    assert hub_access(False) is False and os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub_access(True) is True and os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("DISTILL_ALLOW_DOWNLOAD", "1")
    assert hub_access(False) is True


def test_a_hub_name_fails_at_once_when_downloads_are_off(tmp_path, eval_file):
    code = f"""
import sys, time
from distill.cli import main
sys.argv = ["distill", "generate", "--base", "no-such-org/no-such-model", "--data",
            {str(eval_file)!r}, "--out", {str(tmp_path / 's.jsonl')!r}]
t = time.perf_counter()
try:
    main()
except SystemExit as e:
    print("exit", e.code, round(time.perf_counter() - t, 1))
"""
    res = _python(code)
    assert "exit 2" in res.stdout, (res.stdout, res.stderr)
    err = " ".join(res.stderr.split())
    assert "no-such-org/no-such-model: it is not a local directory" in err
    assert "--allow-download" in err
    assert float(res.stdout.split()[-1]) < 30  # no retries against an unreachable hub


def test_one_line_per_logging_step():
    from distill.run import StepLine, auto_save_interval
    out = io.StringIO()
    line = StepLine(stream=out)
    state = SimpleNamespace(global_step=0, max_steps=8, is_world_process_zero=True)
    args = SimpleNamespace(auto_save_steps=True, save_strategy="steps")
    line.on_train_begin(args, state, None)
    assert state.save_steps == 1
    state.global_step = 4
    line.on_log(args, state, None, logs={"loss": 7.5612, "learning_rate": 1e-3,
                                         "grad_norm": 0.5, "epoch": 0.1, "nce_beta": 0.25})
    line.on_log(args, state, None, logs={"train_runtime": 3.0, "train_loss": 7.0})
    text = out.getvalue().splitlines()
    assert len(text) == 1
    assert text[0].startswith("step 4/8 loss 7.5612 lr 1.00e-03 ") and " s/step" in text[0]
    assert text[0].endswith("beta 0.25")
    # checkpoints: at most ~10 per run, at least every 500 steps
    assert [auto_save_interval(n) for n in (1, 8, 10, 95, 1000, 5000, 100000)] == \
        [1, 1, 1, 10, 100, 500, 500]
