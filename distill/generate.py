"""Sampling rationales from a student, written as JSONL that ``curator import jsonl`` loads
as a run, so students are graded by the same grader as the teachers and compared in SQL.

Prompts are batched with left padding. Each record carries ``logprob``: the sum of the
completion tokens' log-probabilities under the model (temperature 1, EOS included), from
a teacher-forced pass after sampling, so it does not depend on the sampling temperature.
Records are appended and flushed batch by batch; re-running the same command skips the
(problem, sample) pairs already in the file, so an interrupted run loses nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import torch

from curator.durable import read_jsonl_durable
from curator.errors import CuratorError
from curator.paths import OutputKind, guard_output, jsonl_with_keys
from distill.adapters import adapter_mode
from distill.collate import build_batch
from distill.data import PromptFormat
from distill.losses import token_logprobs
from distill.sampling import SamplingConfig


def stop_ids(model, tokenizer) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS and the model's own
    (chat models often stop on an end-of-turn token)."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen, int):
        ids.add(gen)
    elif gen:
        ids.update(gen)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def score_completions(model, prompts: list[list[int]], completions: list[list[int]],
                      pad_id: int, batch_size: int = 8) -> list[float]:
    """Sum of log p(completion token | prefix) for each (prompt, completion) pair, in the
    model's current mode. Rows are processed ``batch_size`` at a time to bound the memory
    of the full-vocabulary logits."""
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        seqs = [p + c for p, c in zip(prompts[i:i + batch_size], completions[i:i + batch_size])]
        lens = [len(p) for p in prompts[i:i + batch_size]]
        batch = build_batch(seqs, lens, pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits
        logp, mask = token_logprobs(logits, batch["labels"])
        out.extend((logp * mask).sum(-1).tolist())
    return out


@torch.no_grad()
def sample_batch(model, tokenizer, prompts: list[list[int]], cfg: SamplingConfig
                 ) -> list[dict]:
    """Sample one completion per prompt: ``completion_ids``, ``finish_reason``,
    ``logprob``. ``prompts`` are token ids (see :meth:`PromptFormat.prompt_ids`)."""
    device = next(model.parameters()).device
    batch = build_batch(prompts, [len(p) for p in prompts], tokenizer.pad_token_id,
                        left_pad=True)
    width = batch["input_ids"].shape[1]
    stops = stop_ids(model, tokenizer)
    sampling = cfg.temperature > 0
    gen = model.generate(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        max_new_tokens=cfg.max_new_tokens, do_sample=sampling,
        temperature=cfg.temperature if sampling else None,
        top_p=cfg.top_p if sampling else None, top_k=None,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
    results = []
    for row in gen[:, width:].tolist():
        ids, finish = [], "length"
        for t in row:
            ids.append(t)
            if t in stops:
                finish = "stop"
                break
        results.append({"completion_ids": ids, "finish_reason": finish})
    scores = score_completions(model, prompts, [r["completion_ids"] for r in results],
                               tokenizer.pad_token_id, batch_size=max(1, len(prompts)))
    for r, s in zip(results, scores):
        r["logprob"] = s
    return results


def check_samples_file(out: str | Path, model_name: str) -> list[dict]:
    """Refuse ``out`` as the samples file of ``model_name`` unless it is absent, empty or
    samples of that model written by :func:`generate` (never the warehouse or someone
    else's file); returns the records it holds. Writes nothing, so that a command can
    check its --out before it loads a model."""
    out = guard_output(out, SAMPLES, option="--out")
    records = read_jsonl_durable(out) if out.is_file() else []
    for rec in records:
        if rec.get("model") != model_name:
            raise CuratorError(f"{out} already holds samples of model {rec.get('model')!r}; "
                               f"write {model_name!r} to another file")
    return records


def _done_pairs(out: Path, model_name: str) -> set[tuple[str, int]]:
    """(problem_id, sample_index) already written to ``out`` by this model. A trailing
    partial line (interrupted write) is cut off."""
    records = check_samples_file(out, model_name)
    read_jsonl_durable(out, truncate=True)
    return {(rec["problem_id"], int(rec["sample_index"])) for rec in records}


def _samples_foreign(path: Path) -> str | None:
    """None if ``path`` holds samples written by :func:`generate` (possibly only a first
    line cut short by a kill), else why not."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if b"\n" not in head and head.startswith(b'{"problem_id": '):
        return None  # the first write was interrupted; resuming cuts it off
    return jsonl_with_keys({"problem_id", "sample_index", "model", "completion"})(path)


SAMPLES = OutputKind("samples file", "distill generate", _samples_foreign)


def generate(model, tokenizer, fmt: PromptFormat, problems: list[dict], cfg: SamplingConfig,
             model_name: str, mode: str | None = None, out: str | Path | None = None,
             progress=None) -> Iterator[dict]:
    """Sample ``cfg.samples`` rationales for every problem (eval records) and yield JSONL
    records for ``curator import jsonl``; with ``out``, append them to that file (skipping
    pairs already there). ``mode`` selects the adapter mode (e.g. "nat")."""
    todo = [(p, k) for p in problems for k in range(cfg.samples)]
    fh = None
    if out is not None:
        # resuming appends to (and may cut a torn last line off) OUT: only ever a file
        # of ours, never the warehouse or someone else's file
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        done = _done_pairs(out, model_name)
        todo = [(p, k) for p, k in todo if (p["problem_id"], k) not in done]
        fh = open(out, "a", encoding="utf-8")
    prompt_cache: dict[str, list[int]] = {}
    try:
        with adapter_mode(model, mode):
            for b, start in enumerate(range(0, len(todo), cfg.batch_size)):
                chunk = todo[start:start + cfg.batch_size]
                prompts = []
                for p, _ in chunk:
                    if p["problem_id"] not in prompt_cache:
                        prompt_cache[p["problem_id"]] = fmt.prompt_ids(tokenizer, p["question"])
                    prompts.append(prompt_cache[p["problem_id"]])
                torch.manual_seed(cfg.seed * 1_000_003 + b)
                outs = sample_batch(model, tokenizer, prompts, cfg)
                records = []
                for (p, k), prompt, o in zip(chunk, prompts, outs):
                    ids = o["completion_ids"]
                    text_ids = ids[:-1] if o["finish_reason"] == "stop" else ids
                    records.append({
                        "problem_id": p["problem_id"], "question": p["question"],
                        "reference_answer": p.get("reference_answer"),
                        "dataset": p.get("dataset"), "subject": p.get("subject"),
                        "level": p.get("level"), "sample_index": k,
                        "completion": fmt.completion_text(
                            tokenizer.decode(text_ids, skip_special_tokens=True)),
                        "model": model_name, "finish_reason": o["finish_reason"],
                        "prompt_tokens": len(prompt), "completion_tokens": len(ids),
                        "logprob": o["logprob"], "temperature": cfg.temperature,
                    })
                if fh is not None:
                    fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                    fh.flush()
                    os.fsync(fh.fileno())
                if progress is not None:
                    progress(len(chunk))
                yield from records
    finally:
        if fh is not None:
            fh.close()


def student_name(adapter_dir: str | Path | None, base: str | Path, mode: str | None) -> str:
    """``student:<adapter dir name>:<mode>`` (or ``base:<model name>``), the run's model."""
    if adapter_dir is None or mode == "base":
        return f"base:{Path(str(base)).name}"
    return f"student:{Path(str(adapter_dir)).resolve().name}:{mode}"
