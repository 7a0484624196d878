"""The ``distill ranker``, ``distill eval`` and ``distill compare`` commands: thin wrappers
over :func:`distill.asc.ranker.train_ranker`, :func:`distill.evaluate.evaluate` and
:func:`distill.compare.compare`, each a module-level function (registered on the
``distill`` app by :mod:`distill.cli`); heavy imports happen inside the command bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from curator.errors import CuratorError
from curator.paths import guard_output
from distill import cli_options as base
from distill.cli_options import console
from distill.knobs import Knobs
from distill.outputs import RANKER_OUT


def ranker(
    data: base.Data, base_model: base.Base, out: base.Out,
    loss: Annotated[str, typer.Option(help="poly3: (1-s+)^3 + (s-)^3 (the paper's code); pairwise: -log sigmoid(r+ - r-); bce: pointwise.")] = "poly3",
    validation: Annotated[Optional[Path], typer.Option(help="Held-out export (default: a --holdout share of --data's problems).")] = None,
    holdout: Annotated[float, typer.Option(help="Share of problems held out for pairwise accuracy (without --validation).")] = 0.1,
    pairs_per_problem: Annotated[int, typer.Option(help="(positive, negative) pairs drawn per problem.")] = 4,
    lora: Annotated[bool, typer.Option("--lora/--full", help="LoRA on the base (default) or train every weight.")] = True,
    epochs: base.Epochs = 1.0, max_steps: base.MaxSteps = -1, batch_size: base.BatchSize = 4,
    grad_accum: base.GradAccum = 1, lr: base.Lr = 1e-4, lora_r: base.LoraR = 8,
    lora_alpha: base.LoraAlpha = 16, lora_dropout: base.LoraDropout = 0.05,
    target_modules: base.Targets = None, seed: base.Seed = 42, bf16: base.Bf16 = False,
    fp16: base.Fp16 = False, max_length: base.MaxLength = 512,
    prompt_template: base.Template = None, chat_template: base.Chat = False,
    gradient_checkpointing: base.GradCkpt = False, logging_steps: base.LogSteps = 1,
    warmup_steps: base.Warmup = 0, device: base.Device = "auto", cpu: base.Cpu = False,
    report_to: base.ReportTo = "none",
) -> None:
    """Train ASC's ranking model s(question, rationale) in [0, 1].

    A sequence-classification head on the base (LoRA by default), trained on positive
    vs negative rationales of the same problem; held-out pairwise accuracy is printed
    and saved in OUT/ranker.json."""
    device = base.device_option(device, cpu)
    from distill.asc.ranker import LOSSES, RankerConfig, train_ranker

    if loss not in LOSSES:
        raise CuratorError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    knobs = Knobs.of(locals(), train_on_prompt=False)
    config = knobs.config(RankerConfig, out, loss=loss, holdout=holdout,
                          pairs_per_problem=pairs_per_problem, lora=lora)
    fmt = base.prompt_format(prompt_template, chat_template)
    # a previous ranker in OUT is replaced; any other folder is refused (before the model loads)
    guard_output(out, RANKER_OUT, option="--out")
    r = train_ranker(data, base_model, out, config,
                     fmt, validation)
    b, a = r.heldout_before, r.heldout_after
    fmt = (lambda x: "n/a" if x is None else f"{100 * x:.1f}%")
    console.print(f"ranker ({loss}): {r.pairs} training pairs, {r.steps} steps; held-out "
                  f"pairwise accuracy {fmt(b.get('micro'))} before -> {fmt(a.get('micro'))} "
                  f"after, over {a.get('pairs', 0)} pairs of {a.get('problems', 0)} problems "
                  f"-> {out}")


def eval_(
    base_model: base.Base,
    data: base.Problems,
    out: Annotated[Path, typer.Option("--out", help="Directory for samples, grades, votes and the report (re-running resumes).")],
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="Output directory of `distill train`, `nat` or `nce` (omit: the base model).")] = None,
    mode: base.Mode = None,
    samples: Annotated[int, typer.Option("--samples", help="Rationales sampled per problem (k; the paper used 16).")] = 16,
    max_new_tokens: base.MaxNewTokens = 512,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (0: greedy, and k identical samples).")] = 0.7,
    top_p: base.TopP = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences sampled (and scored) together.")] = 32,
    seed: base.Seed = 0,
    greedy: Annotated[bool, typer.Option("--greedy/--no-greedy", help="Also decode one greedy rationale per problem (the 'greedy' rule).")] = True,
    ranker: Annotated[Optional[Path], typer.Option("--ranker", help="`distill ranker` output: adds the ASC rules.")] = None,
    asc_weight: Annotated[str, typer.Option("--asc-weight", help="The ASC weighting named 'ASC' in summaries: 1, 1+s, 1+2s or s (all four are reported).")] = "s",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N problems.")] = None,
    model_name: Annotated[Optional[str], typer.Option("--model-name", help="Name recorded as the samples' model (default: `student:<adapter dir>:<mode>`).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[str, typer.Option("--device", help="auto (a GPU when there is one), cpu, cuda or cuda:N.")] = "auto",
    prompt_template: base.Template = None, chat_template: base.Chat = False,
    db: Annotated[Optional[Path], typer.Option("--db", help="Warehouse to store the student's rationales, grades and results in (default: $CURATOR_DB, else the one recorded with --data's export, else warehouse/curator.duckdb if it exists).", show_default=False)] = None,
    no_warehouse: Annotated[bool, typer.Option("--no-warehouse", help="Keep the results in OUT only.")] = False,
) -> None:
    """Evaluate a student: sample, grade, vote with every rule, report accuracy.

    Samples k rationales per problem, grades them with the curator's grader and reports
    accuracy for greedy, first-sample, self-consistency, probability-weighted SC and
    ASC (with --ranker): overall, per subject and per level, as JSON, Markdown and PNG.
    Re-running with the same OUT resumes. With a warehouse the student is a run of kind
    student there, graded like the teachers, and each rule's result a row of
    `evaluations` (docs/evaluations.md)."""
    device = base.device_option(device, index=True)
    from rich.progress import Progress

    from distill.evaluate import REPORT_MD, EvalConfig, evaluate
    from distill.asc.voting import ASC_WEIGHTS
    from distill.eval_warehouse import WarehouseTarget, resolve_db

    if asc_weight not in ASC_WEIGHTS:
        raise CuratorError(f"--asc-weight {asc_weight!r}: choose one of {', '.join(ASC_WEIGHTS)}")
    fmt = base.prompt_format(prompt_template, chat_template) \
        if (prompt_template or chat_template) else None
    cfg = EvalConfig(samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                     top_p=top_p, batch_size=batch_size, seed=seed, greedy=greedy,
                     limit=limit, asc_weight=asc_weight)
    db_path, why = resolve_db(db, data, no_warehouse)
    if db_path is None and not no_warehouse:
        console.print(f"{why}: the results stay in {out} only (--db to store them)",
                      soft_wrap=True, markup=False)
    target = WarehouseTarget(db_path) if db_path is not None else None
    with Progress(console=console, transient=True) as progress:
        def bar(label: str, total: int):
            task = progress.add_task(label, total=total)
            return lambda k: progress.advance(task, k)
        report = evaluate(base_model, data, out, cfg, adapter=adapter, mode=mode,
                          ranker=ranker, dtype=dtype,
                          device=None if device == "auto" else device, fmt=fmt,
                          model_name=model_name, progress=bar, warehouse=target,
                          echo=lambda s: console.print(s, soft_wrap=True, markup=False))
    t = report["throughput"]
    if t["new_rationales"]:
        console.print(f"{t['new_rationales']} new rationales in {t['sampling_seconds']:.1f} s "
                      f"({t['rationales_per_second']:.1f}/s)")
    typer.echo((out / REPORT_MD).read_text())
    console.print(f"report: {out / 'report.json'}, {out / REPORT_MD}, {out / 'report.png'}; "
                  f"samples for `curator import jsonl`: {out / 'samples.jsonl'}",
                  soft_wrap=True)
    if report.get("warehouse"):
        w = report["warehouse"]
        console.print(f"warehouse {w['db']}: run {w['run_id']} ({w['model']}), "
                      f"{len(w['evaluations'])} rows of `evaluations` "
                      f"(curator sql \"SELECT * FROM evaluations WHERE run_id = '{w['run_id']}'\")",
                      soft_wrap=True, markup=False)


def compare(
    config: Annotated[Path, typer.Option("--config", help="Comparison config (.toml, .yaml or .json), e.g. distill/configs/compare-tiny.toml.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: the config's `out`).")] = None,
    redo: Annotated[Optional[list[str]], typer.Option("--redo", help="Run these stages again even if finished (glob, repeatable: 'eval:*').")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the stages and which would run; run nothing.")] = False,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds to train and evaluate every student with, e.g. 0,1,2 (overrides the config's `seeds`); with several, the table shows mean and 95% interval over seeds and differences from CoT KD.")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", help="Warehouse to store every student's rationales, grades and results in (overrides db in the config's warehouse table).", show_default=False)] = None,
    no_warehouse: Annotated[bool, typer.Option("--no-warehouse", help="Ignore the config's warehouse table: results in OUT only.")] = False,
) -> None:
    """Reproduce the paper's comparison table from one config file (resumable).

    Trains CoT KD, MIX, NT, UL, CL, NAT, NAT+NCE and the ranker for NAT+NCE+ASC,
    evaluates each on every eval set and writes the table. With several seeds each
    student is trained and evaluated once per seed (the base's evaluation, the ranker
    and the prepare steps once) and the table aggregates over seeds. Re-running resumes:
    finished stages are skipped."""
    from distill.compare import compare as run

    res = run(config, out, redo=tuple(redo or ()), dry_run=dry_run, seeds=seeds, db=db,
              no_warehouse=no_warehouse,
              echo=lambda s: console.print(s, highlight=False, soft_wrap=True,
                                           markup=False, emoji=False))
    ran = sum(o.status == "ran" for o in res.outcomes)
    skipped = sum(o.status == "skipped" for o in res.outcomes)
    console.print(f"{ran} stages ran, {skipped} skipped (finished before)")
    if res.table is not None:
        typer.echo((res.out / "comparison.md").read_text())
        console.print(f"table: {res.out / 'comparison.md'}, {res.out / 'comparison.json'}, "
                      f"{res.out / 'comparison.png'}", soft_wrap=True)
