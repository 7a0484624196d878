"""CPU threads of `distill`: the count it chooses itself against ``OMP_NUM_THREADS=1`` (the
anchor: what scripts/demo.sh set by hand) and against torch's own default of one thread
per core (``DISTILL_THREADS=0``, what `distill` did before it chose), on the same short
job: `distill train --method sft` for a few steps and `distill generate` on a tiny model
(the shape of distill/configs/compare-tiny.toml), each setting a fresh process tree.

    .venv/bin/python bench/bench_threads.py                  # short: train + generate
    .venv/bin/python bench/bench_threads.py --repeat 3       # median of 3 alternating rounds
    .venv/bin/python bench/bench_threads.py --compare --no-torch-default
                                  # the whole compare-tiny run (minutes per setting)

The settings run one after the other, in alternating order per round, so a change in the
machine's load hits them alike; the table shows each setting's wall time (median over
rounds), its ratio to the anchor, and the load average around the run. Writes
.bench-out/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "tests" / "distill" / "fixtures" / "export_small.jsonl"
EVAL = ROOT / "tests" / "distill" / "fixtures" / "eval_small.jsonl"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DISTILL_THREADS", "TOKENIZERS_PARALLELISM")

SETTINGS = {
    "anchor: OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "distill's choice (no variable)": {},
    "torch default (DISTILL_THREADS=0)": {"DISTILL_THREADS": "0"},
}


def distill(*args: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", *map(str, args)]


def env_for(setting: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **setting}


def short_job(work: Path, model: Path, steps: int, samples: int, tokens: int) -> list[list[str]]:
    out = work / "sft"
    return [distill("train", "--method", "sft", "--base", model, "--data", EXPORT, "--out", out,
                    "--max-steps", steps, "--batch-size", 4, "--max-length", 256,
                    "--lr", 5e-3, "--logging-steps", steps, "--save-steps", 0),
            distill("generate", "--base", model, "--adapter", out, "--data", EVAL,
                    "--samples", samples, "--max-new-tokens", tokens, "--batch-size", 64,
                    "--out", work / "samples.jsonl")]


def compare_job(work: Path) -> list[list[str]]:
    return [distill("compare", "--config", ROOT / "distill" / "configs" / "compare-tiny.toml",
                    "--out", work / "compare")]


def run_once(commands: list[list[str]], env: dict, log: Path) -> float:
    t = time.perf_counter()
    with open(log, "a") as f:
        for cmd in commands:
            res = subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
            if res.returncode != 0:
                raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds (median)")
    ap.add_argument("--steps", type=int, default=24, help="training steps of the short job")
    ap.add_argument("--samples", type=int, default=8, help="samples per problem (6 problems)")
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens per sample")
    ap.add_argument("--compare", action="store_true", help="run compare-tiny.toml instead")
    ap.add_argument("--no-torch-default", action="store_true",
                    help="skip the torch-default setting (the slow one; e.g. with --compare)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench-out" / "threads.json")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    model = tmp / "tiny"
    subprocess.run(distill("init-tiny", model, "--hidden", 64, "--layers", 2, "--heads", 4,
                           "--kv-heads", 2, "--intermediate", 128),
                   env=env_for({"OMP_NUM_THREADS": "1"}), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load_before = os.getloadavg()
    names = list(SETTINGS)[:2] if a.no_torch_default else list(SETTINGS)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(a.repeat):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            work = tmp / f"r{r}-{names.index(name)}"
            work.mkdir()
            cmds = compare_job(work) if a.compare else short_job(work, model, a.steps,
                                                                  a.samples, a.tokens)
            sec = run_once(cmds, env_for(SETTINGS[name]), tmp / "log.txt")
            times[name].append(sec)
            print(f"round {r + 1}: {name}: {sec:.1f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    chosen = subprocess.run(
        [sys.executable, "-c", "from distill import threads as T; print(T.choose())"],
        env=env_for({}), cwd=ROOT, capture_output=True, text=True).stdout.strip()
    anchor = statistics.median(times[names[0]])
    rows = [{"setting": n, "seconds": statistics.median(t), "all": t,
             "ratio_to_anchor": statistics.median(t) / anchor} for n, t in times.items()]
    job = ("distill compare --config distill/configs/compare-tiny.toml" if a.compare else
           f"distill train --method sft --max-steps {a.steps} --batch-size 4 --max-length 256 "
           f"+ distill generate --samples {a.samples} --max-new-tokens {a.tokens} (6 problems)")
    report = {"job": job, "rounds": a.repeat, "choice": chosen, "results": rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "processor": platform.processor() or platform.machine(),
                          "loadavg_before": load_before, "loadavg_after": load_after}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"job: {job}\ndistill's choice here: {chosen}\n"
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after\n")
    print("| setting | wall time (s) | ratio to OMP_NUM_THREADS=1 |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['setting']} | {row['seconds']:.1f} | {row['ratio_to_anchor']:.2f} |")
    print(f"\nwritten {a.out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
