"""What the benchmarks share: the repository root, the random-weight model shapes they
build, the process's memory, the demo export file the training benchmarks train on, the
line naming the machine a run was measured on, and rewriting one benchmark's section of
BENCHMARKS.md.

A benchmark script puts the repository root on ``sys.path`` and imports this as
``bench._common``."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Model shapes built from a config (random weights). "0.5b": about 0.5B parameters,
# grouped-query attention like Qwen2/Llama-3, 32k vocabulary. ``vocab`` above the
# tokenizer's size (the -32k shapes) pads the embedding (the tokenizer uses the first ids),
# as many released models do.
MODEL_SHAPES = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=2048),
    "small": dict(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=688, vocab=2048),
    "medium": dict(hidden=768, layers=4, heads=12, kv_heads=4, intermediate=2048, vocab=2048),
    "small-32k": dict(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=688, vocab=32000),
    "medium-32k": dict(hidden=768, layers=6, heads=12, kv_heads=4, intermediate=2048, vocab=32000),
    "0.5b": dict(hidden=1536, layers=20, heads=12, kv_heads=2, intermediate=4096, vocab=32000),
}


def shapes(*names: str) -> dict[str, dict]:
    """The named entries of :data:`MODEL_SHAPES`, in that order (a benchmark's presets)."""
    return {n: MODEL_SHAPES[n] for n in names}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine(*packages: str, device: str = "cpu", load: bool = True) -> str:
    """The machine a benchmark ran on and the versions that matter, as one line:
    ``CPU x86_64, 2 cores, 24 GiB (load average 1.2 from other jobs at the time); Python
    3.11.7, torch 2.13.0+cpu`` (on CUDA the GPU's name in place of the CPU part; ``load``
    False leaves the load average out, for a report that states it itself). A package that
    is not installed is given as ``?``."""
    if device == "cuda":
        import torch
        where = torch.cuda.get_device_name(0)
    else:
        where = f"CPU {platform.machine()}, {os.cpu_count()} cores"
        try:
            with open("/proc/meminfo") as f:
                kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            where += f", {kb / 1024 ** 2:.0f} GiB"
        except (OSError, StopIteration, ValueError):
            pass
        if load:
            where += f" (load average {os.getloadavg()[0]:.1f} from other jobs at the time)"
    versions = [f"Python {platform.python_version()}"]
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} ?")
    return f"{where}; {', '.join(versions)}"


def memory_label(device: str, cpu: str) -> str:
    """The memory column's name: what CUDA reports, or ``cpu`` (how the benchmark measures
    memory on a CPU run)."""
    return "peak allocated (CUDA)" if device == "cuda" else cpu


def report_head(title: str, intro: str, columns: list[str]) -> list[str]:
    """The first lines of a benchmark's Markdown section: its heading, the paragraph that
    says what was measured and how, and the header of its table."""
    return [f"## {title}", "", intro, "",
            "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def report_tail(machine_line: str, script: str, argv: list[str]) -> list[str]:
    """The last lines of a benchmark's Markdown section: the machine (:func:`machine`) and
    the command that measured it."""
    return [f"Machine: {machine_line}.",
            f"Command: `.venv/bin/python bench/{script} {' '.join(argv)}`"]


def bench_export(out: Path) -> Path:
    """An export file built from the demo TDG slice (200 problems x 8 GPT-4 rationales),
    labelled by comparing last \\boxed{} strings, written in the export contract."""
    from curator.ids import problem_id, stable_id
    from curator.latex import last_boxed

    path = out / "export_demo.jsonl"
    if path.exists():
        return path
    recs = []
    with gzip.open(ROOT / "curator/demo/tdg_gpt4_200.jsonl.gz", "rt") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            ref = last_boxed(r["answer"])
            pid = problem_id("math", "train", f"tdg-{i}")
            for k, c in enumerate(r["generated_answer"]):
                ok = ref is not None and "".join((last_boxed(c) or "").split()) == "".join(ref.split())
                lvl = r["level"].split()[-1]
                recs.append({"problem_id": pid, "dataset": "math", "subject": r["type"],
                             "level": int(lvl) if lvl.isdigit() else None,
                             "question": r["question"], "reference_answer": ref,
                             "rationale": c, "extracted_answer": last_boxed(c),
                             "label": "positive" if ok else "negative",
                             "teacher_model": "gpt-4", "run_id": "run_bench",
                             "sample_id": stable_id("s", "run_bench", pid, k),
                             "grader_version": "bench-string-v1"})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def out_and_data(out: str | Path) -> tuple[Path, Path]:
    """The output folder (created) and the demo export file in it (:func:`bench_export`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, bench_export(out)


def run_worker(cmd: list[str], what: str, prefix: str = "{") -> dict:
    """Run one timed worker process with the repository on its path; its result is the
    last stdout line that starts with ``prefix`` (JSON). A failed worker stops the run."""
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        sys.exit(f"{what} failed:\n{proc.stderr[-4000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith(prefix)][-1]
    return json.loads(line)


def write_section(marker: str, text: str) -> None:
    """Replace the text between ``<!-- MARKER:begin -->`` and ``<!-- MARKER:end -->`` in
    BENCHMARKS.md with ``text``; stop with an error when the markers are missing."""
    path = ROOT / "BENCHMARKS.md"
    head, begin, rest = path.read_text().partition(f"<!-- {marker}:begin -->\n")
    _, end, tail = rest.partition(f"<!-- {marker}:end -->")
    if not begin or not end:
        sys.exit(f"{path}: no <!-- {marker}:begin/end --> markers")
    path.write_text(head + begin + text + "\n" + end + tail)
