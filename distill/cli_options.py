"""What every ``distill`` command shares: its option types (one name, one help text per
knob), the console, and small helpers (prompt format, the refusal to overwrite a finished
run, the one-line report of a training job). :mod:`distill.cli` (training and sampling
commands) and :mod:`distill.cli_asc` (ranker, eval, compare) both build on this module.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from curator.errors import CuratorError
from distill.knobs import Knobs

# No console markup: what distill prints holds paths, model names and config keys such as
# "[warehouse]", which rich would otherwise take for markup and drop.
console = Console(stderr=True, markup=False)


# -- shared options ------------------------------------------------------------------------

Data = Annotated[Path, typer.Option("--data", help="`curator export` output: its directory, a .jsonl[.gz]/.parquet file, or a save_to_disk directory.")]
Split = Annotated[str, typer.Option("--split", help="Split to train on when --data is an export directory.")]
Base = Annotated[str, typer.Option("--base", help="Base causal LM: a local directory (e.g. from `distill init-tiny`) or a hub name.")]
Out = Annotated[Path, typer.Option("--out", help="Output directory (adapters, training_args.json, loss curves).")]
Epochs = Annotated[float, typer.Option("--epochs", help="Training epochs.")]
MaxSteps = Annotated[int, typer.Option("--max-steps", help="Stop after this many optimiser steps (overrides --epochs; -1: off).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Examples per device per micro-batch (cl: problems).")]
GradAccum = Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimiser step.")]
Lr = Annotated[float, typer.Option("--lr", help="Peak learning rate (linear decay).")]
LoraR = Annotated[int, typer.Option("--lora-r", help="LoRA rank.")]
LoraAlpha = Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha (scale = alpha / r).")]
LoraDropout = Annotated[float, typer.Option("--lora-dropout", help="LoRA dropout.")]
Targets = Annotated[Optional[str], typer.Option("--target-modules", help="Comma-separated module names to adapt (default: peft's for the architecture, q_proj,v_proj for Llama).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Bf16 = Annotated[bool, typer.Option("--bf16", help="Load the base in bfloat16 and train with bf16 autocast (adapters stay float32).")]
Fp16 = Annotated[bool, typer.Option("--fp16", help="Load the base in float16 and train with fp16 mixed precision (GPU).")]
MaxLength = Annotated[int, typer.Option("--max-length", min=16, help="Tokens per example (prompt + rationale); longer rationales are cut.")]
Template = Annotated[Optional[str], typer.Option("--prompt-template", help="Plain prompt template with {question} (default: 'Question: {question}\\nAnswer: ').")]
Chat = Annotated[bool, typer.Option("--chat-template", help="Format prompts with the tokenizer's chat template instead.")]
OnPrompt = Annotated[bool, typer.Option("--train-on-prompt", help="Also train on prompt tokens (the paper's code did; default: prompt masked).")]
GradCkpt = Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward to save memory.")]
LogSteps = Annotated[int, typer.Option("--logging-steps", help="Log the loss every N optimiser steps.")]
Warmup = Annotated[int, typer.Option("--warmup-steps", help="Linear warm-up steps.")]
Device = Annotated[str, typer.Option("--device", help="auto (a GPU when there is one), cpu or cuda.")]
Cpu = Annotated[bool, typer.Option("--cpu", hidden=True, help="Deprecated: --device cpu.")]
SaveSteps = Annotated[Optional[int], typer.Option("--save-steps", show_default="auto", help="Checkpoint every N optimiser steps into OUT/.../checkpoints, keeping the last 2 (0: only the final adapter; default: at most ~10 per run, at least every 500 steps).")]
ReportTo = Annotated[str, typer.Option("--report-to", help="Experiment tracker: none, tensorboard (OUT/runs), wandb, trackio or mlflow (file store in OUT/mlruns); see docs/distill.md.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in OUT: finished stages are kept, the others continue from their last checkpoint; a finished run is kept as it is.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Train again from step 0 into an OUT that holds a finished run (replacing it) or an interrupted one (its checkpoints are removed).")]
# sampling (`distill generate`, `distill eval`)
Problems = Annotated[Path, typer.Option("--data", help="Problems: `curator export-eval` output (an export file works too).")]
Mode = Annotated[Optional[str], typer.Option("--mode", help="NAT outputs: nat (default), pos, neg or base; other adapters: default or base.")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Longest rationale, in tokens.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")]


# Options that do not change what a run trains, so that `--resume` may give them anew:
# how often it logs, checkpoints and to which tracker, the device it runs on, and
# activation checkpointing (the same gradients, less memory). Every other option of a
# training command must be the one the run was started with (docs/output-paths.md).
RESUME_FREE = ("logging_steps", "report_to", "save_steps", "device", "cpu",
               "gradient_checkpointing", "resume", "overwrite")


def guard_out(out: Path, resume: bool, overwrite: bool, command: str | None = None,
              settings: dict | None = None, flags: dict | None = None) -> bool:
    """What OUT already holds decides whether a training command may start. OUT must be
    absent, empty, or a folder a training command wrote (never one with other files or a
    DuckDB database: :func:`curator.paths.guard_output`). A finished run is never
    replaced by accident (a student trained from it would no longer match it), an
    interrupted one never restarted from step 0 without being asked nor continued with
    other settings than it was started with (``settings``: the command's options, recorded
    in OUT/distill-run.json before training; those in :data:`RESUME_FREE` may differ;
    ``flags`` names the options). Returns True when OUT holds a finished run and
    ``--resume`` keeps it (with a note of settings that differ): nothing to train."""
    from curator.paths import guard_output
    from distill.outputs import TRAINING_OUT
    from distill.student import MANIFEST, read_manifest
    if resume and overwrite:
        raise CuratorError("choose one of --resume (continue or keep the run in OUT) and "
                           "--overwrite (train again from step 0)")
    out = Path(out)
    guard_output(out, TRAINING_OUT, option="--out")
    record = read_run_record(out)
    if (out / MANIFEST).is_file():
        kind = read_manifest(out).get("method") or "distill"
        if resume:
            differ = _differences(record, command, settings, flags)
            if differ:   # nothing is trained, so nothing is mixed: said, not refused
                console.print(f"note: the finished run in {out} was started with other "
                              f"settings than these ({'; '.join(differ)})", style="yellow",
                              soft_wrap=True)
            console.print(f"{out} already holds a finished {kind} run; --resume keeps it "
                          f"(nothing to train; --overwrite trains again)", soft_wrap=True)
            return True
        if not overwrite:
            raise CuratorError(f"{out} already holds a finished {kind} run ({MANIFEST}); pass "
                               f"--overwrite to train again over it, --resume to keep it, or "
                               f"choose another --out")
    partial = interrupted_run(out)
    if partial and not (resume or overwrite):
        raise CuratorError(f"{out} holds an interrupted run ({'; '.join(partial)}); pass "
                           f"--resume to continue it, or --overwrite to start again from step "
                           f"0 (its checkpoints are removed)")
    continuing = bool(partial) and resume
    if continuing:
        _check_settings(out, "an interrupted run", record, command, settings, flags)
    if overwrite:
        import shutil
        for d in checkpoint_dirs(out):
            shutil.rmtree(d, ignore_errors=True)  # every process of a job may get here
        # The replaced run is no longer finished: were this one interrupted, OUT must read
        # as an interrupted run of these settings, not as the old run finished.
        (out / MANIFEST).unlink(missing_ok=True)
    if settings is not None and not (continuing and record is not None):
        write_run_record(out, command, settings)
    return False


def run_settings(settings: dict) -> dict:
    """``settings`` as they are recorded and compared: local paths resolved (``out/x``
    and ``./out/x`` are the same), everything in its JSON form."""
    import json

    def norm(name, v):
        if isinstance(v, Path) or (name == "base" and isinstance(v, str)):
            p = Path(v)
            return str(p.resolve()) if p.exists() else str(v)
        return v
    return json.loads(json.dumps({k: norm(k, v) for k, v in settings.items()}, default=str))


def read_run_record(out: Path) -> dict | None:
    """What the training run in OUT was started with (None: no record, e.g. a run of an
    older version)."""
    import json
    from distill.outputs import RUN_RECORD
    path = Path(out) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CuratorError(f"{path}: unreadable record of the run's settings ({exc}); "
                           f"pass --overwrite to train again from step 0") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("settings"), dict):
        raise CuratorError(f"{path}: not a record of a run's settings; pass --overwrite to "
                           f"train again from step 0")
    return rec


def write_run_record(out: Path, command: str | None, settings: dict) -> None:
    """Record (atomically and fsync'd, before training) what the run in OUT is started
    with; only the main process of a multi-process job writes it."""
    import json
    import os
    from datetime import datetime, timezone

    from curator.paths import atomic_write
    from distill.outputs import RUN_RECORD
    if int(os.environ.get("RANK", "0")) != 0:
        return
    rec = {"tool": "distill", "command": command, "settings": run_settings(settings),
           "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with atomic_write(Path(out) / RUN_RECORD) as fh:
        fh.write(json.dumps(rec, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _differences(record: dict | None, command: str | None, settings: dict | None,
                 flags: dict | None) -> list[str]:
    """Each setting that changes the result and differs between the ``record`` of a run
    and ``settings``, as ``--option: <there> there, <now> now``."""
    if record is None or settings is None:
        return []
    flags = flags or {}
    now = run_settings(settings)
    old = record["settings"]
    diff = []
    if record.get("command") != command:
        diff.append(f"command: distill {record.get('command')} there, distill {command} now")
    for k in sorted(set(old) | set(now)):
        if k not in RESUME_FREE and old.get(k) != now.get(k):
            diff.append(f"{flags.get(k, '--' + k.replace('_', '-'))}: {old.get(k)!r} there, "
                        f"{now.get(k)!r} now")
    return diff


def _check_settings(out: Path, what: str, record: dict | None, command: str | None,
                    settings: dict | None, flags: dict | None) -> None:
    """Refuse to resume (or keep) the run in OUT with other settings than it was started
    with, naming each difference."""
    if settings is None:
        return
    if record is None:
        console.print(f"{out} holds no record of the settings {what} was started with "
                      f"(written by an older version); resuming with the ones given now",
                      style="yellow", soft_wrap=True)
        return
    diff = _differences(record, command, settings, flags)
    if diff:
        raise CuratorError(f"{out} holds {what} started with other settings "
                           f"({'; '.join(diff)}). Give --resume the options it was started "
                           f"with (recorded in {out / 'distill-run.json'}), pass --overwrite "
                           f"to train again from step 0 with these, or choose another --out")


def checkpoint_dirs(out: Path) -> list[Path]:
    """The checkpoint directories a training command writes under OUT (OUT/checkpoints,
    and NAT's OUT/neg/checkpoints and OUT/pos/checkpoints), where they exist."""
    from distill.run import CHECKPOINTS
    return [d for d in (out / CHECKPOINTS, out / "neg" / CHECKPOINTS, out / "pos" / CHECKPOINTS)
            if d.is_dir()]


def interrupted_run(out: Path) -> list[str]:
    """What an interrupted training run left in OUT: its checkpoints (with the last step)
    and a finished NAT stage 1; empty when there is none."""
    from distill.student import MANIFEST
    found = []
    for d in checkpoint_dirs(out):
        steps = [int(c.name.rsplit("-", 1)[1]) for c in d.glob("checkpoint-*")
                 if c.name.rsplit("-", 1)[1].isdigit()]
        if steps:
            found.append(f"checkpoints up to step {max(steps)} in {d}")
    if not (out / MANIFEST).is_file() and (out / "neg" / "adapter_model.safetensors").is_file():
        found.append(f"a finished NAT stage 1 in {out / 'neg'}")
    return found


def prompt_format(template: str | None, chat: bool):
    from distill.data import DEFAULT_TEMPLATE, PromptFormat
    if chat and template:
        raise CuratorError("choose one of --prompt-template and --chat-template")
    return PromptFormat(template=template or DEFAULT_TEMPLATE, chat=chat)


def report(results: dict) -> None:
    for name, r in results.items():
        loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "n/a"
        cut = f", {r.encode.truncated} cut to --max-length" if r.encode.truncated else ""
        dropped = (f", {r.encode.dropped_prompt_too_long} dropped (prompt longer than "
                   f"--max-length)") if r.encode.dropped_prompt_too_long else ""
        console.print(f"{name}: {r.examples} examples{cut}{dropped}; {r.steps} steps; "
                      f"last loss {loss} -> {r.out}")


def device_option(device: str | None, cpu: bool = False, index: bool = False) -> str:
    """``--device`` checked (no torch import), with the deprecated ``--cpu`` folded in."""
    from distill.knobs import check_device
    device = check_device(device, "--device", index)
    if cpu:
        if device not in ("auto", "cpu"):
            raise CuratorError(f"--cpu contradicts --device {device}; give --device alone")
        console.print("--cpu is deprecated: use --device cpu", style="yellow")
        device = "cpu"
    return device


# -- the options of every training command ----------------------------------------------------

def _training_options(
    epochs: Epochs = 3.0, max_steps: MaxSteps = -1, batch_size: BatchSize = 4,
    grad_accum: GradAccum = 1, lr: Lr = 3e-4, lora_r: LoraR = 8, lora_alpha: LoraAlpha = 16,
    lora_dropout: LoraDropout = 0.05, target_modules: Targets = None, seed: Seed = 42,
    bf16: Bf16 = False, fp16: Fp16 = False, max_length: MaxLength = 512,
    prompt_template: Template = None, chat_template: Chat = False,
    train_on_prompt: OnPrompt = False, gradient_checkpointing: GradCkpt = False,
    logging_steps: LogSteps = 1, warmup_steps: Warmup = 0, device: Device = "auto",
    save_steps: SaveSteps = None, report_to: ReportTo = "none", resume: Resume = False,
    overwrite: Overwrite = False, cpu: Cpu = False,
) -> None:
    """The options `distill train`, `nat` and `nce` share, in --help order, with defaults."""


@dataclass
class Training:
    """The shared options of one training command, as :func:`training_command` passes them."""
    knobs: Knobs
    prompt_template: Optional[str]
    chat_template: bool
    resume: bool
    overwrite: bool
    command: Optional[str] = None
    settings: Optional[dict] = None     # every option as given (OUT excluded), by name
    flags: Optional[dict] = None        # option name -> its flag, e.g. nat_dir -> --nat

    @property
    def fmt(self):
        return prompt_format(self.prompt_template, self.chat_template)

    def guard(self, out: Path) -> bool:
        """:func:`guard_out` for this command's OUT and settings (after the prompt
        options are checked: a refused option leaves OUT as it was)."""
        self.fmt  # noqa: B018 -- raises on contradicting prompt options
        return guard_out(out, self.resume, self.overwrite, self.command, self.settings,
                         self.flags)


def _flag(param: inspect.Parameter) -> str:
    """The option a parameter is given as (``--nat`` for ``nat_dir``)."""
    for meta in getattr(param.annotation, "__metadata__", ()):
        for decl in getattr(meta, "param_decls", None) or ():
            if decl.startswith("--"):
                return decl.split("/")[0]
    return "--" + param.name.replace("_", "-")


def training_command(command):
    """``command(<its own options>, training: Training)`` as a command that also takes the
    options of :func:`_training_options` (after its own; same names, defaults and help in
    every training command). Called directly, the shared options take their defaults."""
    own = inspect.signature(command, eval_str=True)
    shared = inspect.signature(_training_options, eval_str=True).parameters
    params = [p for name, p in own.parameters.items() if name != "training"]
    sig = own.replace(parameters=params + list(shared.values()))
    flags = {p.name: _flag(p) for p in sig.parameters.values()}

    @functools.wraps(command)
    def run(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        mine = {k: v for k, v in bound.arguments.items() if k not in shared}
        opts = {k: v for k, v in bound.arguments.items() if k in shared}
        opts["device"] = device_option(opts["device"], opts.pop("cpu"))
        settings = {k: v for k, v in bound.arguments.items()
                    if k not in ("out", "resume", "overwrite")}
        training = Training(Knobs.of(opts), opts["prompt_template"], opts["chat_template"],
                            opts["resume"], opts["overwrite"], command.__name__, settings,
                            flags)
        return command(**mine, training=training)

    run.__signature__ = sig
    run.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()}
    return run
