"""What the benchmarks share: the repository root, the random-weight model shapes they
build, the process's memory, the demo export file the training benchmarks train on, and
rewriting one benchmark's section of BENCHMARKS.md.

A benchmark script puts the repository root on ``sys.path`` and imports this as
``bench._common``."""

from __future__ import annotations

import gzip
import json
import os
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
