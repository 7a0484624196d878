"""``distill pretrain``: pre-train a small Llama from scratch on a generated arithmetic
corpus, so that a student base knows the rationale *format* of the synthetic task (see
:mod:`curator.synthetic`) without knowing the distilled skill.

The corpus mixes

* addition problems with their correct column rationales, each rendered exactly as a
  training example is (prompt template + rationale + EOS, through
  :func:`distill.data.encode`, so the prompt/rationale boundary tokenises the same way in
  pre-training, fine-tuning and evaluation);
* documents of single-column facts (``13-9-1=3, write 3, borrow 1`` and
  ``8+6+1=15, write 5, carry 1``, one per line, no place), so that the base has the digit
  facts that subtraction with borrowing combines, but never a multi-column subtraction;
* optionally subtraction rationales of some levels (``subtraction_levels``; empty by
  default: no subtraction rationale at all).

The tokenizer is trained on the corpus with one token per digit. Training is full-
parameter AdamW with warm-up and cosine decay, on CPU in minutes for the default shape.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from curator.errors import CuratorError
from distill.tiny import TinyShape

PRETRAIN_JSON = "pretrain.json"

#: The fields of the model's shape that a config sets, in the order ``pretrain.json``'s
#: ``config`` lists them (the rest of the built shape follows from the config: positions
#: from ``max_length``, one token per digit).
SHAPE_FIELDS = ("vocab", "hidden", "layers", "heads", "kv_heads", "intermediate")


@dataclass
class PretrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    facts_share: float = 0.25             # share of documents that are fact lists
    facts_per_doc: int = 12
    subtraction_levels: tuple[int, ...] = ()
    template: str | None = None           # prompt template (default: distill's)
    max_length: int = 192
    shape: TinyShape = TinyShape(hidden=128, layers=4, heads=4, kv_heads=4, intermediate=256,
                                 vocab=512)
    logging_steps: int = 100
    threads: int | None = None            # torch intra-op threads (default: torch's)

    def check(self) -> "PretrainConfig":
        for name in ("steps", "batch_size", "max_length", *SHAPE_FIELDS, "facts_per_doc"):
            if getattr(self.shape if name in SHAPE_FIELDS else self, name) < 1:
                raise CuratorError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.facts_share < 1.0:
            raise CuratorError(f"--facts-share {self.facts_share}: must be within [0, 1)")
        if self.lr <= 0:
            raise CuratorError(f"--lr {self.lr}: must be positive")
        shape = self.shape
        if shape.hidden % shape.heads or shape.heads % shape.kv_heads:
            raise CuratorError("--hidden must be a multiple of --heads, and --heads of --kv-heads")
        for lv in self.subtraction_levels:
            if lv not in (1, 2, 3, 4, 5):
                raise CuratorError(f"--subtraction-levels: {lv} is not a level (1-5)")
        return self

    def model_shape(self) -> TinyShape:
        """The shape of the model built: this config's, with room for ``max_length``
        tokens (256 at least) and one token per digit."""
        return replace(self.shape, max_positions=max(256, self.max_length), digits=True)

    def to_json(self) -> dict:
        """The config as ``pretrain.json`` records it: flat, the shape's fields in place of
        ``shape``."""
        out = {}
        for name, value in asdict(self).items():
            out.update({k: value[k] for k in SHAPE_FIELDS} if name == "shape" else {name: value})
        return out


@dataclass
class PretrainResult:
    out: Path
    steps: int
    final_loss: float
    seconds: float
    parameters: int
    losses: list[float] = field(default_factory=list)


class Corpus:
    """An endless, seeded stream of pre-training documents (as text pairs)."""

    def __init__(self, cfg: PretrainConfig):
        from curator import synthetic as S
        self.S = S
        self.cfg = cfg
        self.rng = random.Random(f"pretrain/{cfg.seed}")
        self.facts = S.fact_lines("-") + S.fact_lines("+")
        self.add = S.family("addition")
        self.sub = S.family("subtraction")

    def document(self) -> tuple[str, str] | str:
        """(question, rationale) for a worked problem, or a text of fact lines."""
        S, rng, cfg = self.S, self.rng, self.cfg
        if rng.random() < cfg.facts_share:
            return "\n".join(rng.choice(self.facts) for _ in range(cfg.facts_per_doc))
        if cfg.subtraction_levels and rng.random() < 0.5:
            p = self.sub.problem(rng, rng.choice(cfg.subtraction_levels))
        else:
            p = self.add.problem(rng, rng.choice(self.add.levels))
        return p.question, S.rationale(p)

    def texts(self, n: int, fmt) -> list[str]:
        """Plain texts of ``n`` documents (for training the tokenizer)."""
        out = []
        for _ in range(n):
            d = self.document()
            out.append(d if isinstance(d, str)
                       else fmt.template.format(question=d[0]) + d[1])
        return out


def encode_document(doc, tokenizer, fmt, max_length: int) -> list[int] | None:
    from distill.data import encode
    if isinstance(doc, str):
        ids = tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
        return ids[:max_length]
    enc = encode(tokenizer, fmt, doc[0], doc[1], max_length)
    return None if enc is None else enc["input_ids"]


def pretrain(out: str | Path, cfg: PretrainConfig = PretrainConfig(),
             echo: Callable[[str], None] = print) -> PretrainResult:
    """Build a digit tokenizer and a random Llama of ``cfg``'s shape, pre-train it on the
    arithmetic corpus, and save both to ``out`` (loadable as a ``--base``)."""
    import torch

    from distill.data import DEFAULT_TEMPLATE, PromptFormat
    from distill.tiny import build_tokenizer, random_llama

    cfg.check()
    out = Path(out)
    if (out / PRETRAIN_JSON).is_file() or (out / "config.json").is_file():
        raise CuratorError(f"{out} already holds a model; choose another OUT or remove it")
    from curator.paths import guard_output
    from distill.outputs import PRETRAIN_OUT
    guard_output(out, PRETRAIN_OUT, option="OUT")    # absent or empty, no warehouse's
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fmt = PromptFormat(template=cfg.template or DEFAULT_TEMPLATE)
    corpus = Corpus(cfg)
    shape = cfg.model_shape()
    tokenizer = build_tokenizer(corpus.texts(2000, fmt), shape.vocab, digits=shape.digits)
    model = random_llama(shape, tokenizer, cfg.seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    pad = tokenizer.pad_token_id
    echo(f"pre-training {n_params:,} parameters, vocabulary {len(tokenizer)}, "
         f"{cfg.steps} steps of {cfg.batch_size} documents")
    start = time.monotonic()
    losses: list[float] = []
    window: list[float] = []
    for step in range(cfg.steps):
        batch = []
        while len(batch) < cfg.batch_size:
            ids = encode_document(corpus.document(), tokenizer, fmt, cfg.max_length)
            if ids:
                batch.append(ids)
        width = max(len(b) for b in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            input_ids[i, :len(b)] = torch.tensor(b)
            mask[i, :len(b)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == cfg.steps:
            losses.append(sum(window) / len(window))
            echo(f"step {step + 1}/{cfg.steps}  loss {losses[-1]:.4f}  "
                 f"({time.monotonic() - start:.0f} s)")
            window = []
    seconds = time.monotonic() - start
    model.eval()
    model.generation_config.pad_token_id = pad
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tiny_shape.json").write_text(json.dumps({**asdict(shape), "seed": cfg.seed}, indent=2))
    result = PretrainResult(out, cfg.steps, losses[-1] if losses else float("nan"), seconds,
                            n_params, losses)
    (out / PRETRAIN_JSON).write_text(json.dumps({
        "config": cfg.to_json(), "parameters": n_params, "final_loss": result.final_loss,
        "losses": losses, "seconds": round(seconds, 1), "prompt": fmt.to_json()}, indent=2))
    return result
