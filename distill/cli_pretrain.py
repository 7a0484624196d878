"""``distill pretrain``: a small base pre-trained from scratch on the arithmetic corpus
(:mod:`distill.pretrain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli_options import console


def pretrain(
    out: Annotated[Path, typer.Argument(help="Directory to write the model and tokenizer to (must not hold a model).")],
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 700,
    batch_size: Annotated[int, typer.Option(help="Documents per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine to 10%).")] = 3e-3,
    warmup: Annotated[int, typer.Option(help="Warm-up steps.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the corpus and the initialisation.")] = 0,
    facts_share: Annotated[float, typer.Option(help="Share of documents that are lists of single-column facts.")] = 0.25,
    subtraction_levels: Annotated[Optional[str], typer.Option(help="Comma-separated subtraction levels whose rationales join the corpus (default: none; the base never sees a multi-column subtraction).")] = None,
    hidden: Annotated[int, typer.Option(help="Hidden size.")] = 128,
    layers: Annotated[int, typer.Option(help="Decoder layers.")] = 4,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    intermediate: Annotated[int, typer.Option(help="MLP width.")] = 256,
    vocab: Annotated[int, typer.Option(help="Most BPE tokens (digits are single tokens).")] = 512,
    max_length: Annotated[int, typer.Option(help="Tokens per document at most.")] = 192,
    prompt_template: Annotated[Optional[str], typer.Option("--prompt-template", help="Prompt template with {question} used for the worked problems (default: distill's 'Question: {question}\\nAnswer: ').")] = None,
    logging_steps: Annotated[int, typer.Option(help="Print the mean loss every N steps.")] = 50,
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's choice).")] = None,
) -> None:
    """Pre-train a small Llama from scratch on generated column-arithmetic rationales
    (addition) and digit facts, with a one-token-per-digit tokenizer: a base that knows
    the rationale format of `curator load synthetic` problems but not subtraction with
    borrowing (docs/synthetic.md). A few minutes on one CPU core by default."""
    from curator.errors import CuratorError
    from distill.pretrain import PretrainConfig, pretrain as run
    from distill.tiny import TinyShape

    try:
        levels = tuple(int(x) for x in subtraction_levels.split(",")) if subtraction_levels else ()
    except ValueError:
        raise CuratorError(f"--subtraction-levels {subtraction_levels!r}: expected "
                           f"comma-separated numbers, e.g. 1,2") from None
    cfg = PretrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed,
                         facts_share=facts_share, subtraction_levels=levels,
                         template=prompt_template, max_length=max_length,
                         shape=TinyShape(vocab=vocab, hidden=hidden, layers=layers, heads=heads,
                                         kv_heads=heads, intermediate=intermediate),
                         logging_steps=logging_steps, threads=threads)
    r = run(out, cfg, echo=lambda m: console.print(m, highlight=False))
    console.print(f"pre-trained {r.parameters:,} parameters for {r.steps} steps in "
                  f"{r.seconds:.0f} s (final loss {r.final_loss:.4f}); written to {r.out}")
