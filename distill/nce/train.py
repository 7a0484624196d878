"""The ``distill nce`` job: the NAT model of ``--nat`` and a fresh student LoRA on one
copy of the base, the betas (precomputed or online), training, and the output directory
(student adapter, ``distill.json``, loss curve, betas and their report)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError
from distill import data as D
from distill.adapters import NEG, POS, load_adapter, save_adapter, train_only
from distill.models import attach_lora, load_peft, load_tokenizer
from distill.nce.betas import BETAS_FILE, BetaStore, beta_meta, write_beta_report
from distill.nce.trainer import STUDENT, NCECollator, NCEConfig, NCETrainer, nce_dataset
from distill.run import (CHECKPOINTS, DistillConfig, check_frozen, checkpointing, fit,
                         load_base, snapshot)
from distill.student import is_nat_dir, write_manifest
from distill.tracking import tracked


def resolve_nat_dir(path: str | Path) -> Path:
    p = Path(path)
    if not is_nat_dir(p):
        raise CuratorError(f"--nat {p}: not a finished `distill nat` output (expected "
                           f"{p / NEG}/adapter_config.json and {p / POS}/adapter_config.json)")
    for sub in (NEG, POS):
        if not (p / sub / "adapter_model.safetensors").is_file():
            raise CuratorError(f"--nat {p}: {p / sub} has no adapter_model.safetensors "
                               f"(unfinished NAT run?)")
    return p


def attach_nat_and_student(model, nat_dir: str | Path, config: DistillConfig):
    """``model`` (a loaded base) with the NAT adapters of ``nat_dir`` (``neg``; ``pos`` and
    its gates), frozen, and a fresh ``student`` LoRA, the only trainable parameters."""
    nat_dir = resolve_nat_dir(nat_dir)
    model = load_peft(model, nat_dir / NEG, NEG, trainable=False)
    load_adapter(model, nat_dir / POS, POS, trainable=False)
    model = attach_lora(model, STUDENT, config.lora_r, config.lora_alpha, config.lora_dropout,
                        config.target_modules)
    train_only(model, [STUDENT])
    return model


class BetaProgress:
    """Progress of the beta pass on stderr (main process): what it will compute, then a
    line at most every 10 s and one at the end."""

    def __init__(self, total: int, rows: list[int] | None, store: BetaStore, main: bool):
        import time
        self.main, self.time = main, time.perf_counter
        stored = len(store.load()) if main else 0
        want = total if rows is None else len(rows)
        self.todo = max(0, want - stored) if rows is None else None
        self.n, self.t0 = 0, self.time()
        self.last = self.t0
        if main:
            scope = (f"all {total:,} samples" if rows is None else
                     f"the {len(rows):,} samples of {total:,} that --max-steps reaches")
            self._say(f"betas: computing them for {scope} ({stored:,} already in "
                      f"{store.path})")

    def _say(self, text: str) -> None:
        import sys
        print(text, file=sys.stderr, flush=True)

    def __call__(self, k: int) -> None:
        self.n += k
        now = self.time()
        if self.main and now - self.last >= 10:
            self.last = now
            of = f"/{self.todo:,}" if self.todo else ""
            self._say(f"betas: {self.n:,}{of} computed ({self.n / (now - self.t0):.1f}/s)")

    def done(self) -> None:
        if self.main:
            self._say(f"betas: {self.n:,} computed in {self.time() - self.t0:.1f} s")


@dataclass
class NCEResult:
    out: Path
    examples: int
    steps: int
    final_loss: float | None
    beta: dict
    curve: list[dict] = dataclasses.field(default_factory=list)
    encode: D.EncodeReport = dataclasses.field(default_factory=D.EncodeReport)


def build_nce(records: list[dict], base: str | Path, nat: str | Path, config: NCEConfig,
              fmt: D.PromptFormat = D.PromptFormat(), model=None, tokenizer=None):
    """``(trainer, encode report)``: the base model (``model`` or loaded from ``base``) with
    the NAT adapters of ``nat`` and a fresh student LoRA, on the positives of
    ``records``. Nothing is trained yet."""
    if not isinstance(config, NCEConfig):
        raise TypeError(f"NCE needs an NCEConfig, got {type(config).__name__}")
    positives = D.select(records, ("positive",))
    if not positives:
        raise CuratorError("the export has no positive rationales; NCE trains on them")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(base)
    report = D.EncodeReport()
    dataset = nce_dataset(positives, tokenizer, fmt, config.max_length, report)
    model = model if model is not None else load_base(base, config)
    model = attach_nat_and_student(model, nat, config)
    collator = NCECollator(tokenizer.pad_token_id, config.train_on_prompt)
    trainer = NCETrainer(model=model, args=config, train_dataset=dataset, data_collator=collator)
    return trainer, report


@tracked
def train_nce(data: str | Path, base: str | Path, nat: str | Path, out: str | Path,
              config: NCEConfig, fmt: D.PromptFormat = D.PromptFormat(),
              split: str = "train", resume: bool = False) -> NCEResult:
    """NCE (METHOD.md step 2): distil the NAT model at ``nat`` (a ``distill nat`` output on
    the same ``base``) into a fresh student LoRA on the positives of the export ``data``.

    ``out`` receives the student as a plain peft LoRA adapter (``adapter_config.json``,
    ``adapter_model.safetensors``: ``PeftModel.from_pretrained(base, out)`` and
    ``distill generate --adapter out`` load it), ``distill.json``, ``training_args.json``,
    the loss curve, and the betas: ``betas.jsonl`` (+ ``betas.meta.json``),
    ``beta_summary.json`` and ``beta_hist.png``. With ``--save-steps`` checkpoints go to
    ``out/checkpoints`` (removed once the student is saved); ``resume`` continues from the
    last one (precomputed betas are kept; online betas then cover the steps since)."""
    out = Path(out)
    nat = resolve_nat_dir(nat)
    if is_nat_dir(out) or out.resolve() == nat.resolve():
        raise CuratorError(f"--out {out} holds a NAT model; write the student elsewhere")
    records = D.read_export(data, split)
    trainer, report = build_nce(records, base, nat, checkpointing(config, out), fmt)
    main = trainer.is_world_process_zero()
    store = BetaStore(out, beta_meta(nat, base, config, fmt))
    before = snapshot(trainer.model, (NEG, POS))
    if config.precompute_beta:
        rows = trainer.rows_to_train()
        progress = BetaProgress(len(trainer.train_dataset), rows, store, main)
        betas = trainer.precompute_betas(store, rows=rows, progress=progress)
        progress.done()
        trainer.use_betas(betas)
    fit(trainer, resume)
    check_frozen(trainer.model, before, "NCE modified the frozen NAT adapters")
    if config.precompute_beta:
        # betas a step had to compute (a sample outside the precomputed ones) are kept too
        seen = trainer.gathered_seen_betas()
        if main and seen:
            ids = list(trainer.train_dataset["sample_id"])
            stored = store.load()
            store.append([{"sample_id": ids[r], "beta": b, "mean_kl": k, "tokens": c}
                          for r, (b, k, c) in sorted(seen.items()) if ids[r] not in stored])
        beta_recs, source = list(store.load().values()), "precomputed"
    else:
        seen = trainer.gathered_seen_betas()
        ids = trainer.train_dataset["sample_id"]
        beta_recs = [{"sample_id": ids[r], "beta": b, "mean_kl": k, "tokens": c}
                     for r, (b, k, c) in sorted(seen.items())]
        source = "online (last value seen in training)"
    summary: dict = {}
    points = trainer.curve.points
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not config.precompute_beta:
            (out / BETAS_FILE).write_text("".join(json.dumps(r) + "\n" for r in beta_recs))
        summary = write_beta_report(out, beta_recs, source)
        save_adapter(trainer.model, STUDENT, out)
        (out / "training_args.json").write_text(trainer.args.to_json_string())
        trainer.curve.write(out, f"NCE: {Path(str(base)).name}")
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        write_manifest(out, kind="lora", method="nce", base_model=str(base), data=str(data),
                       nat=str(nat), prompt_format=fmt.to_json(),
                       nce={"lambda": config.nce_lambda, "temperature": config.nce_temperature,
                            "positions": "attended" if config.distill_all_tokens else "targets",
                            "beta": "precomputed" if config.precompute_beta else "online"},
                       beta_summary=summary, examples=len(trainer.train_dataset),
                       encode=dataclasses.asdict(report), steps=trainer.state.global_step,
                       final_loss=points[-1]["loss"] if points else None)
    return NCEResult(out, len(trainer.train_dataset), trainer.state.global_step,
                     points[-1]["loss"] if points else None, summary, points, report)
