"""The ranking model of ASC (METHOD.md step 3.1): a scorer s(question, rationale) in [0, 1]
trained to put a problem's positive rationales above its negative ones.

The model is any causal LM with a sequence-classification head (one logit r, read at
the last token; s = sigmoid(r)), LoRA on the base by default with the head fully
trained. Each training row is a pair of one positive and one negative rationale of the
same problem, both in one forward pass. Losses on the pair's logits (r+, r-):

- ``poly3``: (1 - s+)^3 + (s-)^3, what the paper's released code minimised;
- ``pairwise``: -log sigmoid(r+ - r-), the Bradley-Terry ranking loss;
- ``bce``: pointwise binary cross-entropy, label 1 for r+ and 0 for r-.

A held-out share of the problems (or a separate export) measures pairwise accuracy: the
fraction of (positive, negative) pairs of the same problem scored in the right order
(ties count half), before and after training; it is reported and saved in ``ranker.json``.

The input is the student's prompt followed by the rationale. When it is longer than
``max_length``, the *start* of the rationale is cut: its final answer is at the end, and
that is what the score must judge.

Output directory::

    OUT/adapter_config.json, adapter_model.safetensors   peft adapter (LoRA + head)
        (or OUT/model/ with the whole model when trained without LoRA)
    OUT/ranker.json          base model, loss, prompt format, pairs, held-out accuracy
    OUT/training_args.json, loss_curve.json/.png
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import Trainer

from curator.errors import CuratorError
from distill import data as D
from distill.run import DistillConfig, attach_progress
from distill.tracking import tracked

LOSSES = ("poly3", "pairwise", "bce")
MANIFEST = "ranker.json"
FULL_MODEL_DIR = "model"


# -- losses (pure) -------------------------------------------------------------------------

def ranker_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, kind: str = "poly3"
                ) -> torch.Tensor:
    """Mean loss over pairs, from the logits r+ (positives) and r- (negatives) ``[N]``."""
    if kind == "poly3":
        s_pos, s_neg = torch.sigmoid(pos_logits), torch.sigmoid(neg_logits)
        return ((1 - s_pos) ** 3 + s_neg ** 3).mean()
    if kind == "pairwise":
        return F.softplus(neg_logits - pos_logits).mean()   # = -log sigmoid(r+ - r-)
    if kind == "bce":
        logits = torch.cat([pos_logits, neg_logits])
        labels = torch.cat([torch.ones_like(pos_logits), torch.zeros_like(neg_logits)])
        return F.binary_cross_entropy_with_logits(logits, labels)
    raise CuratorError(f"unknown ranker loss {kind!r}: choose one of {', '.join(LOSSES)}")


def pairwise_accuracy(problems: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict:
    """Over all (positive, negative) pairs of each problem: the share with s+ > s- (ties
    count half). ``micro`` weighs every pair equally, ``macro`` every problem."""
    right = pairs = 0.0
    per_problem = []
    for pos, neg in problems:
        if not pos or not neg:
            continue
        r = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        right += r
        pairs += len(pos) * len(neg)
        per_problem.append(r / (len(pos) * len(neg)))
    return {"micro": right / pairs if pairs else None,
            "macro": sum(per_problem) / len(per_problem) if per_problem else None,
            "pairs": int(pairs), "problems": len(per_problem)}


# -- data ------------------------------------------------------------------------------------

def by_problem(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: {"positive": [], "negative": []})
    for r in records:
        out[r["problem_id"]][r["label"]].append(r)
    return dict(out)


def split_problems(problem_ids: Sequence[str], holdout: float, seed: int
                   ) -> tuple[list[str], list[str]]:
    """(train, held-out) problem ids: a seeded shuffle, ``holdout`` of them held out
    (at least one when there are two or more problems and ``holdout`` > 0)."""
    ids = sorted(problem_ids)
    random.Random(seed).shuffle(ids)
    n = round(len(ids) * holdout)
    if holdout > 0 and n == 0 and len(ids) >= 2:
        n = 1
    return sorted(ids[n:]), sorted(ids[:n])


def make_pairs(groups: dict[str, dict[str, list[dict]]], problem_ids: Sequence[str],
               pairs_per_problem: int, seed: int) -> list[tuple[dict, dict]]:
    """Up to ``pairs_per_problem`` distinct (positive, negative) pairs per problem, drawn at
    random (seeded) from all of its pairs; problems lacking either kind give none."""
    rng = random.Random(seed)
    out = []
    for pid in problem_ids:
        pos, neg = groups[pid]["positive"], groups[pid]["negative"]
        if not pos or not neg:
            continue
        n = len(pos) * len(neg)
        for k in sorted(rng.sample(range(n), min(pairs_per_problem, n))):
            out.append((pos[k // len(neg)], neg[k % len(neg)]))
    rng.shuffle(out)
    return out


def ranker_ids(tokenizer, fmt: D.PromptFormat, question: str, rationale: str,
               max_length: int) -> list[int]:
    """Prompt + rationale token ids, at most ``max_length``: the rationale keeps its end
    (the final answer); the prompt keeps its start and at most half the budget when both
    do not fit. Trailing pad-id tokens are dropped (see :func:`last_token_logits`)."""
    prompt = fmt.prompt_ids(tokenizer, question)
    # The rationale tokenised as it follows the prompt in training (no EOS)
    body = (tokenizer(rationale, add_special_tokens=False)["input_ids"] if fmt.chat
            else fmt.completion_ids(tokenizer, question, rationale)[:-1])
    if len(prompt) + len(body) <= max_length:
        ids = prompt + body
    else:
        room = max(max_length - len(prompt), max_length // 2)
        prompt = prompt[:max_length - room]
        ids = prompt + (body[len(body) - room:] if len(body) > room else body)
    return _strip_pad(ids, tokenizer.pad_token_id)


def _strip_pad(ids: list[int], pad_id: int) -> list[int]:
    # The head reads the rightmost non-pad token: a sequence must not end in the pad id.
    end = len(ids)
    while end > 1 and ids[end - 1] == pad_id:
        end -= 1
    return ids[:end]


def pad_batch(seqs: list[list[int]], pad_id: int) -> dict:
    """Right-padded ``input_ids`` and ``attention_mask``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": att}


@dataclass
class PairCollator:
    """Pair rows -> one batch of 2N sequences: the N positives, then the N negatives."""
    pad_id: int

    def __call__(self, rows: list[dict]) -> dict:
        return pad_batch([r["pos_ids"] for r in rows] + [r["neg_ids"] for r in rows],
                         self.pad_id)


# -- model -----------------------------------------------------------------------------------

@dataclass
class RankerConfig(DistillConfig):
    """``distill ranker`` knobs: the shared training arguments plus the ranker's own."""
    loss: str = "poly3"
    pairs_per_problem: int = 4
    holdout: float = 0.1
    lora: bool = True
    score_batch_size: int = 16


def last_token_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> torch.Tensor:
    """The head's logit ``[B]``. transformers' sequence-classification models read it at
    the rightmost token that is not the pad id; inputs here are right-padded and never
    end in the pad id (see :func:`ranker_ids`), so that is the last real token even when
    the pad token is also EOS."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    if logits.dim() != 2 or logits.shape[-1] != 1:
        raise CuratorError(f"the ranker head returned logits of shape {tuple(logits.shape)}; "
                           f"expected one score per sequence")
    return logits[:, 0].float()


class RankerTrainer(Trainer):
    """Pairs of (positive, negative) rationales -> :func:`ranker_loss`."""

    # compute_loss returns the mean over the micro-batch's pairs: let Trainer divide it by
    # the accumulation steps (equal-sized micro-batches: the mean over the global batch).
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        attach_progress(self)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = last_token_logits(model, inputs["input_ids"], inputs["attention_mask"])
        n = logits.shape[0] // 2
        loss = ranker_loss(logits[:n], logits[n:], self.args.loss)
        return (loss, {"logits": logits}) if return_outputs else loss


def load_classifier(base: str | Path, dtype="float32"):
    """``AutoModelForSequenceClassification`` with one output on the causal LM ``base``
    (its head freshly initialised), and the tokenizer."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from distill.models import load_tokenizer, resolve_dtype

    tokenizer = load_tokenizer(base)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialised" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base), num_labels=1, dtype=resolve_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise CuratorError(f"cannot load {base} as a sequence classifier: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _lora(model, config: RankerConfig):
    from peft import LoraConfig, get_peft_model

    from distill.models import check_linear_targets, default_target_modules

    targets = config.target_modules or default_target_modules(model)
    check_linear_targets(model, targets)
    cfg = LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha,
                     lora_dropout=config.lora_dropout, target_modules=targets)
    return get_peft_model(model, cfg)


class Ranker:
    """A trained ranking model, for scoring: ``Ranker.load(dir).score(questions, rationales)``."""

    def __init__(self, model, tokenizer, fmt: D.PromptFormat, max_length: int,
                 batch_size: int = 16):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path, base: str | Path | None = None, dtype="float32",
             device: str | None = None, batch_size: int = 16) -> "Ranker":
        path = Path(path)
        manifest = read_manifest(path)
        base = base or manifest["base_model"]
        if manifest.get("lora", True):
            from peft import PeftModel
            model, tok = load_classifier(base, dtype)
            model = PeftModel.from_pretrained(model, str(path))
        else:
            model, tok = load_classifier(path / FULL_MODEL_DIR, dtype)
        if device is not None:
            model.to(device)
        return cls(model, tok, D.PromptFormat.from_json(manifest.get("prompt_format", {})),
                   int(manifest.get("max_length", 512)), batch_size)

    @torch.no_grad()
    def score(self, questions: Sequence[str], rationales: Sequence[str]) -> list[float]:
        """s(question, rationale) in [0, 1] for each pair, in order. Batches hold
        sequences of similar length, so little is spent on padding."""
        seqs = [ranker_ids(self.tokenizer, self.fmt, q, r, self.max_length)
                for q, r in zip(questions, rationales)]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        device = next(self.model.parameters()).device
        out = [0.0] * len(seqs)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = pad_batch([seqs[i] for i in idx], self.tokenizer.pad_token_id)
            logits = last_token_logits(self.model, batch["input_ids"].to(device),
                                       batch["attention_mask"].to(device))
            for i, s in zip(idx, torch.sigmoid(logits).tolist()):
                out[i] = s
        return out


def read_manifest(path: Path) -> dict:
    f = Path(path) / MANIFEST
    if not f.is_file():
        raise CuratorError(f"{path}: not a ranker directory (no {MANIFEST}); train one with "
                           f"`distill ranker`")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise CuratorError(f"{f}: not valid JSON ({exc})") from None


# -- training --------------------------------------------------------------------------------

@dataclass
class RankerResult:
    out: Path
    pairs: int
    steps: int
    final_loss: float | None
    heldout_before: dict = field(default_factory=dict)
    heldout_after: dict = field(default_factory=dict)


def heldout_accuracy(ranker: Ranker, groups: dict[str, dict[str, list[dict]]],
                     problem_ids: Sequence[str]) -> dict:
    """Pairwise accuracy of ``ranker`` on every (positive, negative) pair of the problems."""
    todo = [(pid, lab, r) for pid in problem_ids for lab in ("positive", "negative")
            for r in groups[pid][lab]]
    if not todo:
        return pairwise_accuracy([])
    scores = ranker.score([r["question"] for _, _, r in todo], [r["rationale"] for _, _, r in todo])
    per: dict[str, tuple[list, list]] = {pid: ([], []) for pid in problem_ids}
    for (pid, lab, _), s in zip(todo, scores):
        per[pid][0 if lab == "positive" else 1].append(s)
    return pairwise_accuracy(list(per.values()))


@tracked
def train_ranker(data: str | Path, base: str | Path, out: str | Path, config: RankerConfig,
                 fmt: D.PromptFormat = D.PromptFormat(), validation: str | Path | None = None,
                 ) -> RankerResult:
    """Train the ranking model on an export (METHOD.md step 3.1); held-out problems are a
    ``config.holdout`` share of the export's, or the problems of ``validation`` (an export
    file, or an export directory's validation split)."""
    import datasets

    from distill.student import versions
    from distill.run import model_dtype

    if config.loss not in LOSSES:
        raise CuratorError(f"--loss {config.loss!r}: choose one of {', '.join(LOSSES)}")
    out = Path(out)
    records = D.read_export(data)
    groups = by_problem(records)
    if validation is not None:
        # an export directory holds the held-out problems as its validation split
        held_groups = by_problem(D.read_export(
            validation, "validation" if Path(validation).is_dir() else None))
        overlap = set(held_groups) & set(groups)
        if overlap:
            raise CuratorError(f"{validation} shares {len(overlap)} problems with {data} "
                               f"(e.g. {sorted(overlap)[0]}); held-out problems must be unseen")
        train_ids, held_ids = sorted(groups), sorted(held_groups)
    else:
        train_ids, held_ids = split_problems(list(groups), config.holdout, config.seed)
        held_groups = groups
    pairs = make_pairs(groups, train_ids, config.pairs_per_problem, config.seed)
    if not pairs:
        raise CuratorError(f"{data}: no problem has both a positive and a negative rationale "
                           f"(outside the held-out share); the ranker trains on such pairs")

    torch.manual_seed(config.seed)
    model, tokenizer = load_classifier(base, model_dtype(config))
    rows = {"pos_ids": [], "neg_ids": []}
    for p, n in pairs:
        rows["pos_ids"].append(ranker_ids(tokenizer, fmt, p["question"], p["rationale"],
                                          config.max_length))
        rows["neg_ids"].append(ranker_ids(tokenizer, fmt, n["question"], n["rationale"],
                                          config.max_length))
    if config.lora:
        model = _lora(model, config)
    device = "cpu" if config.use_cpu or not torch.cuda.is_available() else "cuda"

    def accuracy() -> dict:
        was = model.training
        model.to(device)
        r = heldout_accuracy(Ranker(model, tokenizer, fmt, config.max_length,
                                    config.score_batch_size), held_groups, held_ids)
        model.train(was)
        return r

    before = accuracy()
    trainer = RankerTrainer(model=model, args=config,
                            train_dataset=datasets.Dataset.from_dict(rows),
                            data_collator=PairCollator(tokenizer.pad_token_id))
    trainer.train()
    model = trainer.model
    after = accuracy()
    points = trainer.curve.points
    result = RankerResult(out, len(pairs), trainer.state.global_step,
                          points[-1]["loss"] if points else None, before, after)
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        if config.lora:
            model.save_pretrained(str(out))
        else:
            model.save_pretrained(str(out / FULL_MODEL_DIR))
            tokenizer.save_pretrained(str(out / FULL_MODEL_DIR))
        (out / "training_args.json").write_text(config.to_json_string())
        trainer.curve.write(out, f"ranker ({config.loss}): {Path(str(base)).name}")
        manifest = {
            "kind": "ranker", "base_model": str(base), "data": str(data),
            "validation": str(validation) if validation else None, "loss": config.loss,
            "lora": config.lora, "prompt_format": fmt.to_json(),
            "max_length": config.max_length, "pairs": len(pairs),
            "train_problems": len(train_ids), "heldout_problems": len(held_ids),
            "steps": result.steps, "final_loss": result.final_loss,
            "heldout_pairwise_accuracy": {"before": before, "after": after},
            "versions": versions()}
        # Written last: a directory with ranker.json holds a complete ranker.
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return result


def result_dict(r: RankerResult) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(r).items()}
