"""Benchmark: NAT stage 2 (``pos`` adapter + integration gates, ``neg`` frozen, "nat" mode)
against plain LoRA fine-tuning (``distill train --method sft``) of the same model on the
same positives, same batches, same LoRA targets, in the same run.

Each (method, repeat) runs in a fresh process so that memory figures do not leak between
them. Per-step time is the median over the timed steps (after warm-up). Peak memory:
on CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps (weights included); on
CPU, the process's peak RSS during training minus its RSS just before the first step
(activations, gradients, optimiser state: the part the method changes), and the total
peak RSS for reference.

    .venv/bin/python bench/bench_nat.py                      # CPU: tiny, small, medium models
    .venv/bin/python bench/bench_nat.py --preset 0.5b --device cuda
    .venv/bin/python bench/bench_nat.py --write               # also update BENCHMARKS.md

Targets: NAT at most 1.5x the step time and 1.2x the peak memory of plain LoRA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (machine, memory_label, out_and_data, peak_rss_mib,  # noqa: E402
                           report_head, report_tail, rss_mib, run_worker, shapes,
                           write_section)

PRESETS = shapes("tiny", "small", "medium", "0.5b")
TARGET_TIME, TARGET_MEM = 1.5, 1.2


def worker(args) -> dict:
    """One measurement in this process: build, warm up, time ``args.steps`` steps."""
    import torch
    from transformers import TrainerCallback

    from distill import data as D
    from distill.models import load_tokenizer
    from distill.baselines import SFTConfig, build_baseline
    from distill.nat.trainer import NATConfig, build_nat_stage1, build_nat_stage2
    from distill.run import load_base

    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    common = dict(output_dir=str(Path(args.out) / "trainer"), per_device_train_batch_size=args.batch_size,
                  max_steps=args.warmup + args.steps, learning_rate=3e-4, max_length=args.max_length,
                  train_sampling_strategy="sequential", disable_tqdm=True, logging_steps=1,
                  seed=0, bf16=args.bf16, use_cpu=not cuda)
    records = D.read_export(args.data)
    positives = D.select(records, ("positive",))
    if args.method == "sft":
        trainer, _ = build_baseline("sft", positives, args.model, SFTConfig(**common))
    else:
        cfg = NATConfig(**common, gate_width=args.gate_width)
        tok = load_tokenizer(args.model)
        model = load_base(args.model, cfg)
        # Stage 2's cost does not depend on what neg learned: attach it untrained.
        t1, _ = build_nat_stage1(model, D.select(records, ("negative",)), tok, cfg)
        trainer, _ = build_nat_stage2(t1.model, positives, tok, cfg)

    times: list[float] = []
    cpu_times: list[float] = []
    mem = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
                if state.global_step == args.warmup:
                    torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()
            self.c0 = time.process_time()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            if state.global_step > args.warmup:
                times.append(time.perf_counter() - self.t0)
                cpu_times.append(time.process_time() - self.c0)

    trainer.add_callback(Clock())
    if cuda:
        trainer.model.to("cuda")
    mem["rss_before_mib"] = rss_mib()
    trainer.train()
    if cuda:
        mem["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem["peak_total_mib"] = peak_rss_mib()
        mem["peak_mib"] = mem["peak_total_mib"] - mem["rss_before_mib"]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"method": args.method, "step_s": statistics.median(times), "times": times,
            "cpu_s": statistics.median(cpu_times),
            "trainable_params": trainable, **mem}


def run_all(args) -> dict:
    from distill.tiny import TinyShape, init_tiny

    out, data = out_and_data(args.out)
    results = {}
    for preset in args.preset:
        model_dir = out / f"model-{preset}"
        if not (model_dir / "config.json").exists():
            init_tiny(model_dir, TinyShape(**PRESETS[preset]))
        runs = {"sft": [], "nat": []}
        for r in range(args.repeat):
            for method in ("sft", "nat") if r % 2 == 0 else ("nat", "sft"):
                cmd = [sys.executable, __file__, "--worker", method, "--model", str(model_dir),
                       "--data", str(data), "--device", args.device, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                       "--max-length", str(args.max_length), "--gate-width", str(args.gate_width),
                       "--threads", str(args.threads), "--out", str(out)] + (["--bf16"] if args.bf16 else [])
                runs[method].append(run_worker(cmd, "worker"))
        summary = {}
        for m, rs in runs.items():
            summary[m] = {"step_s": statistics.median(r["step_s"] for r in rs),
                          "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                          "peak_mib": max(r["peak_mib"] for r in rs),
                          "peak_total_mib": max(r.get("peak_total_mib", r["peak_mib"]) for r in rs),
                          "trainable_params": rs[0]["trainable_params"]}
        summary["time_ratio"] = summary["nat"]["step_s"] / summary["sft"]["step_s"]
        summary["cpu_ratio"] = summary["nat"]["cpu_s"] / summary["sft"]["cpu_s"]
        summary["mem_ratio"] = summary["nat"]["peak_mib"] / summary["sft"]["peak_mib"]
        summary["total_mem_ratio"] = summary["nat"]["peak_total_mib"] / summary["sft"]["peak_total_mib"]
        results[preset] = summary
        print(f"{preset}: sft {summary['sft']['step_s']*1000:.1f} ms/step, "
              f"{summary['sft']['peak_mib']:.0f} MiB; nat {summary['nat']['step_s']*1000:.1f} "
              f"ms/step, {summary['nat']['peak_mib']:.0f} MiB; time x{summary['time_ratio']:.2f} "
              f"(cpu x{summary['cpu_ratio']:.2f}), "
              f"memory x{summary['mem_ratio']:.2f}", flush=True)
    return results


def markdown(results: dict, args) -> str:
    mem_label = memory_label(args.device, "training memory (peak RSS above pre-training RSS)")
    lines = report_head(
        "NAT stage 2 vs plain LoRA (`distill train --method sft`)",
        "Same base model, same positives and batches (sequential order), LoRA r=8, "
        "alpha=16 on q_proj/v_proj for both; NAT adds the frozen `neg` adapter and "
        f"the integration gates (width {args.gate_width}) and runs in \"nat\" mode. "
        f"Batch {args.batch_size} x {args.max_length} tokens, {'bf16' if args.bf16 else 'fp32'}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.repeat} "
        "fresh processes per method.",
        ["model", "params trainable (sft / nat)", "step time sft", "step time nat", "time ratio",
         "CPU-time ratio", f"{mem_label} sft", "nat", "memory ratio", "total peak ratio"])
    for preset, s in results.items():
        shape = PRESETS[preset]
        lines.append(
            f"| {preset} (hidden {shape['hidden']}, {shape['layers']} layers, kv heads "
            f"{shape['kv_heads']}/{shape['heads']}) | {s['sft']['trainable_params']:,} / "
            f"{s['nat']['trainable_params']:,} | {s['sft']['step_s']*1000:.1f} ms | "
            f"{s['nat']['step_s']*1000:.1f} ms | **{s['time_ratio']:.2f}x** | {s['cpu_ratio']:.2f}x | "
            f"{s['sft']['peak_mib']:.0f} MiB | {s['nat']['peak_mib']:.0f} MiB | "
            f"**{s['mem_ratio']:.2f}x** | {s['total_mem_ratio']:.2f}x |")
    lines += ["", f"Targets: time <= {TARGET_TIME}x, memory <= {TARGET_MEM}x.",
              *report_tail(machine("torch", device=args.device), "bench_nat.py", sys.argv[1:])]
    return "\n".join(lines)


def write_benchmarks(text: str) -> None:
    write_section("bench-nat", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=None, choices=sorted(PRESETS))
    ap.add_argument("--device", default=None, choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--gate-width", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--out", default=str(ROOT / ".bench-out" / "nat"))
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--worker", choices=["sft", "nat"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.method = args.worker
        print(json.dumps(worker(args)), flush=True)
        return
    import torch
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.preset = args.preset or (["0.5b"] if args.device == "cuda" else ["tiny", "small", "medium"])
    results = run_all(args)
    text = markdown(results, args)
    print(text)
    if args.write:
        write_benchmarks(text)


if __name__ == "__main__":
    main()
