"""Benchmark: our NCE (one copy of the base: teacher "nat"/"neg" passes and the student
through the same model instance, distillation term on the selected positions in chunks)
against the two-copies design of the released code (a separate teacher model holding the
NAT adapters plus a student model, full-vocabulary logits of all three passes), on the
same model, data, batches and loss, in the same run.

Every variant is an ``NCETrainer`` (same optimiser, same global normalisation, same
student LoRA) and differs only in where the teacher lives and how the loss is computed:

- ``ours``: ``distill.nce`` as ``distill nce --online-beta`` runs it (beta in every step)
- ``ours-pre``: the same with precomputed betas (``distill nce``'s default): no "neg" pass
  in the step; the one-off precompute pass is timed separately
- ``two-copies``: teacher = a second base model with ``neg`` + ``pos`` + gates; student =
  base + student LoRA; the loss from full ``[B, T, V]`` logits (``released_sums``)
- ``one-copy-full``: the teacher passes through the student's own model, loss from full
  logits as in two-copies (shows which part of the saving is the shared base)

Each (variant, repeat) runs in a fresh process. Step time: median over the timed steps
after warm-up. Memory on CPU: the process's peak RSS minus its RSS before any model is
loaded (after the imports, the tokenizer and the records: weights + training; the second
copy of the weights is part of the point, so weights are materialised in the process's
own memory as a GPU would hold them, see :func:`materialise`), and the part above the RSS
just before the first step; on CUDA, ``max_memory_allocated``. The first step's loss of every variant is printed: they agree.

    .venv/bin/python bench/bench_nce.py                  # CPU: tiny, small-32k, medium-32k
    .venv/bin/python bench/bench_nce.py --preset 0.5b --device cuda --bf16
    .venv/bin/python bench/bench_nce.py --write          # also update BENCHMARKS.md

Target: at most 0.6x the peak memory of two-copies at no more than 1.1x its step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (machine, memory_label, out_and_data, peak_rss_mib,  # noqa: E402
                           report_head, report_tail, rss_mib, run_worker, shapes,
                           write_section)

# Model shapes built from a config (random weights); see bench._common.MODEL_SHAPES.
PRESETS = shapes("tiny", "small-32k", "medium-32k", "0.5b")
VARIANTS = ("ours", "ours-pre", "two-copies", "one-copy-full")
TARGET_MEM, TARGET_TIME = 0.6, 1.1


def build_model(out: Path, preset: str) -> Path:
    """The preset's random Llama in ``out`` (tokenizer from ``distill init-tiny``)."""
    from distill.tiny import TinyShape, init_tiny
    if (out / "config.json").exists():
        return out
    shape = PRESETS[preset]
    init_tiny(out, TinyShape(**{**shape, "vocab": min(shape["vocab"], 2048)}))
    if shape["vocab"] > 2048:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(str(out))
        model.resize_token_embeddings(shape["vocab"], mean_resizing=False)
        model.save_pretrained(out)
    return out


def build_nat(model: Path, data: Path, out: Path) -> Path:
    """A NAT output on ``model`` (one step per stage: the step cost of NCE does not depend
    on what the teacher learned)."""
    from distill.nat.trainer import NATConfig, train_nat
    if (out / "pos" / "adapter_model.safetensors").exists():
        return out
    cfg = NATConfig(output_dir=str(out / "trainer"), max_steps=1, per_device_train_batch_size=2,
                    max_length=128, learning_rate=1e-2, disable_tqdm=True, logging_steps=100)
    train_nat(data, model, out, cfg)
    return out


def released_sums(student_logits, teacher_logits, targets, ce_mask, kd_mask, beta,
                  temperature=1.0):
    """``(ce_sum, kd_sum)`` as the released code computes them: full ``[B, T, V]``
    log-softmaxes kept by autograd for backward (what the chunked loss avoids)."""
    import torch.nn.functional as F

    from distill.nce.loss import soft_cross_entropy

    logq = F.log_softmax(student_logits.float(), dim=-1)
    safe = targets.masked_fill(~ce_mask.bool(), 0)
    ce = -logq.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    kd = soft_cross_entropy(teacher_logits, student_logits, temperature)
    return ((ce * ce_mask).sum(),
            (kd * kd_mask * (0.5 + beta.float()).unsqueeze(-1)).sum())


def full_logits_trainer(base_cls):
    """``base_cls`` (NCETrainer) with the loss of the released code's arrangement: teacher
    "nat" and "neg" logits over the whole sequence from ``self.teacher`` (a separate model,
    or None: the student's own model), the student's full logits, and the loss written
    with plain autograd on the ``[B, T, V]`` tensors (:func:`released_sums`)."""
    import torch

    from distill.adapters import NAT, NEG, adapter_mode
    from distill.nce.loss import calibration_beta, distill_positions, kl_divergence

    class FullLogitsNCETrainer(base_cls):
        teacher = None

        def _teacher_logits(self, batch, mode):
            teacher = self.teacher if self.teacher is not None else self.model
            was = teacher.training
            teacher.eval()
            try:
                with adapter_mode(teacher, mode), torch.no_grad(), self._autocast():
                    return teacher(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"]).logits[:, :-1]
            finally:
                teacher.train(was)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            args = self.args
            ce_mask, kd_mask = distill_positions(inputs["labels"], inputs["attention_mask"],
                                                 args.distill_all_tokens)
            nat = self._teacher_logits(inputs, NAT)
            neg = self._teacher_logits(inputs, NEG)
            beta = calibration_beta(kl_divergence(neg, nat), kd_mask)
            del neg
            student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            use_cache=False).logits[:, :-1]
            ce_sum, kd_sum = released_sums(student, nat, inputs["labels"][:, 1:], ce_mask,
                                           kd_mask, beta, args.nce_temperature)
            scale = self.accelerator.num_processes
            n_ce, n_kd = num_items_in_batch.float().clamp(min=1).unbind()
            lam = args.nce_lambda
            return ((1 - lam) * ce_sum / n_ce + lam * kd_sum / n_kd) * scale

    return FullLogitsNCETrainer


def step_timer_class():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of each optimiser step after ``warmup`` (CUDA synchronised); CUDA's
        peak-memory counter restarts when timing does."""

        def __init__(self, warmup: int, cuda: bool):
            self.warmup, self.cuda, self.times, self.t0 = warmup, cuda, [], 0.0

        def _now(self) -> float:
            if self.cuda:
                import torch
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            if self.cuda and state.global_step == self.warmup:
                import torch
                torch.cuda.reset_peak_memory_stats()
            self.t0 = self._now()

        def on_step_end(self, args, state, control, **kwargs):
            elapsed = self._now() - self.t0
            if state.global_step > self.warmup:
                self.times.append(elapsed)

    return StepTimer


def materialise(*models) -> None:
    """Copy every weight into the process's own memory. ``from_pretrained`` on CPU leaves
    weights in safetensors' file mapping, paged in lazily and shared between two models
    loaded from the same file (while RSS counts them once per model); on a GPU each model
    holds its own copy, which is what this benchmark compares."""
    seen: set[int] = set()
    for model in models:
        if model is None:
            continue
        for t in (*model.parameters(), *model.buffers()):
            if id(t) not in seen:  # tied weights: one copy
                seen.add(id(t))
                t.data = t.data.clone()


def worker(args) -> dict:
    """One measurement in this process: build, warm up, time ``args.steps`` steps."""
    import torch

    from distill import data as D
    from distill.adapters import NEG, POS, load_adapter
    from distill.models import attach_lora, load_peft, load_tokenizer
    from distill.nce import STUDENT, BetaStore, NCECollator, NCEConfig, NCETrainer, build_nce
    from distill.nce.trainer import nce_dataset
    from distill.run import load_base

    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    args.variant = args.worker
    cfg = NCEConfig(output_dir=str(Path(args.out) / "trainer"), per_device_train_batch_size=args.batch_size,
                    max_steps=args.warmup + args.steps, learning_rate=3e-4, max_length=args.max_length,
                    train_sampling_strategy="sequential", disable_tqdm=True, logging_steps=1,
                    seed=0, bf16=args.bf16, use_cpu=not cuda, lora_dropout=0.0,
                    precompute_beta=args.variant == "ours-pre")
    # the first --samples positives: every timed step's batches, and a short precompute pass
    records = D.select(D.read_export(args.data), ("positive",))[:args.samples]
    tok = load_tokenizer(args.model)
    rss_start = rss_mib()  # imports, tokenizer and records: the same for every variant
    extra = {}
    if args.variant in ("ours", "ours-pre"):
        trainer, _ = build_nce(records, args.model, args.nat, cfg, tokenizer=tok)
    elif args.variant == "one-copy-full":
        trainer, _ = build_nce(records, args.model, args.nat, cfg, tokenizer=tok)
        trainer.__class__ = full_logits_trainer(NCETrainer)
    else:  # two-copies: the student's trainer on its own model, plus a teacher model
        dataset = nce_dataset(records, tok, D.PromptFormat(), cfg.max_length)
        collator = NCECollator(tok.pad_token_id, cfg.train_on_prompt)
        teacher = load_peft(load_base(args.model, cfg), Path(args.nat) / NEG, NEG)
        load_adapter(teacher, Path(args.nat) / POS, POS)
        student = attach_lora(load_base(args.model, cfg), STUDENT, cfg.lora_r, cfg.lora_alpha,
                              cfg.lora_dropout, cfg.target_modules)
        trainer = full_logits_trainer(NCETrainer)(model=student, args=cfg, train_dataset=dataset,
                                                  data_collator=collator)
        trainer.teacher = teacher.to(trainer.args.device)
    if not cuda:
        materialise(trainer.model, getattr(trainer, "teacher", None))

    if args.variant == "ours-pre":
        t0 = time.perf_counter()
        trainer.use_betas(trainer.precompute_betas(BetaStore(Path(args.out) / f"betas-{os.getpid()}", {})))
        extra["precompute_s"] = time.perf_counter() - t0
        extra["precompute_samples"] = len(trainer.train_dataset)
    timer = step_timer_class()(args.warmup, cuda)
    trainer.add_callback(timer)
    if cuda:
        trainer.model.to("cuda")
    rss_before = rss_mib()
    trainer.train()
    if cuda:
        mem = {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    else:
        peak = peak_rss_mib()
        mem = {"peak_mib": peak - rss_start, "train_mib": peak - rss_before}
    first = trainer.curve.points[0]["loss"] if trainer.curve.points else None
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"variant": args.variant, "step_s": statistics.median(timer.times), "times": timer.times,
            "first_loss": first, "trainable_params": trainable, **mem, **extra}


def run_all(args) -> dict:
    out, data = out_and_data(args.out)
    results = {}
    for preset in args.preset:
        model = build_model(out / f"model-{preset}", preset)
        nat = build_nat(model, data, out / f"nat-{preset}")
        runs = {v: [] for v in args.variants}
        for r in range(args.repeat):
            order = args.variants if r % 2 == 0 else list(reversed(args.variants))
            for variant in order:
                cmd = [sys.executable, __file__, "--worker", variant, "--model", str(model),
                       "--nat", str(nat), "--data", str(data), "--device", args.device,
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                       "--threads", str(args.threads), "--samples", str(args.samples),
                       "--out", str(out)] + (["--bf16"] if args.bf16 else [])
                runs[variant].append(run_worker(cmd, f"worker {variant}", "{\"variant\""))
                print(f"  {preset} {variant}: {runs[variant][-1]['step_s']*1000:.0f} ms/step, "
                      f"{runs[variant][-1]['peak_mib']:.0f} MiB", flush=True)
        summary = {}
        for v, rs in runs.items():
            summary[v] = {"step_s": statistics.median(r["step_s"] for r in rs),
                          "peak_mib": max(r["peak_mib"] for r in rs),
                          "train_mib": max(r.get("train_mib", r["peak_mib"]) for r in rs),
                          "first_loss": rs[0]["first_loss"],
                          "trainable_params": rs[0]["trainable_params"]}
            if "precompute_s" in rs[0]:
                summary[v]["precompute_s"] = statistics.median(r["precompute_s"] for r in rs)
                summary[v]["precompute_samples"] = rs[0]["precompute_samples"]
        anchor = summary["two-copies"]
        for v in runs:
            summary[v]["time_ratio"] = summary[v]["step_s"] / anchor["step_s"]
            summary[v]["mem_ratio"] = summary[v]["peak_mib"] / anchor["peak_mib"]
        results[preset] = summary
        print(f"{preset}: " + "; ".join(f"{v} x{s['time_ratio']:.2f} time, x{s['mem_ratio']:.2f} "
                                       f"memory" for v, s in summary.items()), flush=True)
    return results


LABELS = {"ours": "ours (`--online-beta`)", "ours-pre": "ours (`--precompute-beta`, default)",
          "two-copies": "two copies (anchor)", "one-copy-full": "one copy, full logits"}


def markdown(results: dict, args, argv: list[str], machine_line: str | None = None) -> str:
    mem = memory_label(args.device, "peak memory (RSS above RSS before loading models)")
    lines = report_head(
        "NCE: one shared base vs two copies (teacher model + student model)",
        "Same base model, NAT adapters, positives and batches (sequential), student LoRA "
        "r=8, alpha=16 on q_proj/v_proj, lambda 0.5, T 1, distillation over the "
        f"completion tokens, {args.samples} positives of the demo TDG slice; batch {args.batch_size} x up to {args.max_length} tokens, "
        f"{'bf16' if args.bf16 else 'fp32'}, {args.threads} torch thread(s); "
        f"{args.steps} timed steps after {args.warmup} warm-up, median step time and "
        f"largest peak over {args.repeat} fresh processes per variant. The two-copies "
        "anchor is the released code's arrangement: a separate teacher model (base + "
        "`neg` + `pos` + gates) and a student model, full `[B, T, V]` logits for the "
        "teacher's \"nat\" and \"neg\" passes and the student. Weights are copied "
        "into the process's own memory, as a GPU holds them (on CPU `from_pretrained` "
        "leaves them in a file mapping that two models of one file share). The "
        "first-step losses of all variants agree (column \"loss 1\").",
        ["model", "variant", "step time", "time ratio", mem, "memory ratio",
         "training part (above RSS before step 1)", "loss 1"])
    for preset, s in results.items():
        shape = PRESETS[preset]
        name = (f"{preset} (hidden {shape['hidden']}, {shape['layers']} layers, vocab "
                f"{shape['vocab']:,})")
        for v, r in s.items():
            train = f"{r['train_mib']:.0f} MiB" if args.device != "cuda" else "-"
            lines.append(f"| {name} | {LABELS[v]} | {r['step_s']*1000:.0f} ms | "
                         f"**{r['time_ratio']:.2f}x** | {r['peak_mib']:.0f} MiB | "
                         f"**{r['mem_ratio']:.2f}x** | {train} | {r['first_loss']:.4f} |")
            name = ""
        pre = s.get("ours-pre", {})
        if "precompute_s" in pre:
            lines.append(f"| | (one-off beta precompute pass: {pre['precompute_s']:.1f} s for "
                         f"{pre['precompute_samples']} samples) | | | | | | |")
    lines += ["", f"Target: memory <= {TARGET_MEM}x and step time <= {TARGET_TIME}x of two "
              "copies. " + " ".join(verdicts(results))]
    lines += ["", "Where it comes from: \"one copy, full logits\" is the shared base alone; it "
              "saves the second copy of the weights and nothing else. The rest is the "
              "distillation term computed at the completion positions only, in chunks, with "
              "no `[B, T, V]` tensor: with a 32k vocabulary the anchor's logits, softmaxes "
              "and their gradient are most of its memory. Step time: the same three passes "
              "as the anchor, but the vocabulary-wide work runs only at the positions that "
              "count and allocates nothing vocabulary-wide beyond a chunk; with precomputed "
              "betas the step also drops the \"neg\" pass (the precompute pass costs about "
              "half an online step per batch, once per run, and is resumable). On `tiny` the two models weigh 2 MiB "
              "together, so the per-process cost that does not depend on the design "
              "(Trainer, datasets, allocator, about 70 MiB) dominates its ratios, which move "
              "between runs (a short run measured 0.83x); the 32k rows are the informative "
              "ones. A GPU run (`--preset 0.5b --device cuda "
              "--bf16`, `max_memory_allocated`) is still to be done."]
    machine_line = machine_line or machine("torch", "transformers", "peft", device=args.device)
    lines += ["", *report_tail(machine_line, "bench_nce.py", argv)]
    return "\n".join(lines)


def verdicts(results: dict) -> list[str]:
    out = []
    for preset, s in results.items():
        parts = []
        for v in ("ours", "ours-pre"):
            if v in s:
                ok = s[v]["mem_ratio"] <= TARGET_MEM and s[v]["time_ratio"] <= TARGET_TIME
                parts.append(f"{LABELS[v].split(' (')[0]} {'met' if ok else 'NOT met'} "
                             f"({s[v]['mem_ratio']:.3f}x memory, {s[v]['time_ratio']:.2f}x time"
                             f"{', beta ' + ('online' if v == 'ours' else 'precomputed')})")
        out.append(f"{preset}: " + "; ".join(parts) + ".")
    return out


def write_benchmarks(text: str, marker: str = "bench-nce") -> None:
    """Replace this benchmark's section of BENCHMARKS.md (between its begin/end markers)."""
    write_section(marker, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", nargs="+", default=None, choices=sorted(PRESETS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--device", default=None, choices=["cpu", "cuda"])
    for flag, default, what in (("--steps", 6, "timed optimiser steps"),
                                ("--warmup", 2, "untimed steps first"),
                                ("--batch-size", 4, "examples per step"),
                                ("--max-length", 256, "tokens per example"),
                                ("--repeat", 2, "fresh processes per variant"),
                                ("--samples", 64, "positives in the training set"),
                                ("--threads", 1, "torch CPU threads per worker")):
        ap.add_argument(flag, type=int, default=default, help=what)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--out", default=str(ROOT / ".bench-out" / "nce"))
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--render", action="store_true",
                    help="only re-write the Markdown from OUT/bench_nce.json (no measuring)")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    for hidden in ("--model", "--nat", "--data"):  # what run_all passes to its workers
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    saved, write = Path(args.out) / "bench_nce.json", args.write
    if args.render:
        run = json.loads(saved.read_text())
        args = ap.parse_args(run["argv"])
        args.device = args.device or "cpu"
    else:
        if "two-copies" not in args.variants:
            ap.error("--variants must include two-copies (the anchor)")
        import torch
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        args.preset = args.preset or (["0.5b"] if args.device == "cuda"
                                      else ["tiny", "small-32k", "medium-32k"])
        run = {"argv": sys.argv[1:], "results": run_all(args), "machine": machine("torch", "transformers", "peft", device=args.device)}
        saved.write_text(json.dumps(run, indent=2))
    text = markdown(run["results"], args, run["argv"], run["machine"])
    print(text)
    if write:
        write_benchmarks(text)


if __name__ == "__main__":
    main()
