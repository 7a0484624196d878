"""NCE, Negative Calibration Enhancement (METHOD.md step 2): self-distillation from the NAT
model into a fresh ``student`` LoRA on the positives, each sample weighted by how much the
negative and the positive knowledge disagree on it::

    beta_i = tanh( mean over tokens of KL(p_neg || p_nat) )               in [0, 1)
    L_KD   = mean over tokens of (0.5 + beta_i) * softCE(p_nat, q_student)
    L      = (1 - lambda) * CE(student, rationale) + lambda * L_KD

with ``p_nat`` the NAT model ("nat" mode: base + ``neg`` + ``pos`` + gates), ``p_neg`` the
base + ``neg`` alone, and ``q_student`` the base + ``student``. The temperature T divides
both the teacher's and the student's logits in softCE, exactly as written (no Hinton T^2
factor, so T != 1 also changes the weight of the KD term); beta always uses T = 1, since it
measures the frozen teacher and does not depend on training knobs.

Where this differs from the released code, and why:

- **One copy of the base.** The teacher's passes ("nat", then "neg") and the student's run
  through the *same* model instance, switched by :func:`distill.adapters.adapter_mode`;
  the teacher's under ``torch.no_grad()`` and in eval mode (no dropout). The trainable set
  is asserted every step instead of being trusted (peft re-enables ``requires_grad`` in
  several of its adapter switches).
- **No full-vocabulary tensor.** The model runs with ``logits_to_keep=1``; its final hidden
  states are taken from the decoder, and only at the positions that count (completion
  tokens by default; every attended token with ``distill_all_tokens``, as the paper did).
  :func:`nce_head_loss` then walks those positions in chunks: for each chunk it computes
  the student's and the teacher's logits from the output embedding, the loss, and the
  gradient with respect to the student's hidden states, so at most one chunk of teacher
  (and student) distributions is alive at a time and nothing of size ``[tokens, vocab]``
  is kept for backward.
- **beta once.** beta depends only on the frozen teacher; ``precompute_beta`` computes
  every beta before training (saving the "neg" pass in every step) and stores it with the
  run (``betas.jsonl``, keyed by ``sample_id``; resumable).

The reference (unchunked) definitions :func:`kl_divergence`, :func:`soft_cross_entropy`,
:func:`calibration_beta`, :func:`nce_sums` and :func:`nce_loss` are small pure functions on
logits; the chunked path is tested against them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer

from curator.errors import CuratorError
from distill import data as D
from distill.adapters import (NAT, NEG, POS, adapter_mode, adapter_param_names,
                              load_adapter, save_adapter, train_only)
from distill.collate import IGNORE, RationaleCollator
from distill.models import attach_lora, load_peft, load_tokenizer
from distill.student import is_nat_dir, write_manifest
from distill.trainers import DistillConfig, DistillTrainer

log = logging.getLogger(__name__)

STUDENT = "student"
BETAS_FILE = "betas.jsonl"
BETAS_META = "betas.meta.json"
BETA_SUMMARY = "beta_summary.json"
BETA_PLOT = "beta_hist.png"
# Bytes of one float32 [chunk, vocab] distribution when the chunk size is automatic; the
# chunk loops keep two such tensors alive (three with a temperature other than 1).
AUTO_CHUNK_BYTES = 64 * 2**20


# -- the method's math: pure functions on logits (the reference definitions) ----------------

def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position, ``[...]`` from logits ``[..., V]``, in float32. Exactly 0
    where the two logits are equal."""
    lp = F.log_softmax(p_logits.float(), dim=-1)
    lq = F.log_softmax(q_logits.float(), dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def soft_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """-sum_v p_T(v) log q_T(v) per position, with p_T = softmax(teacher / T) and q_T =
    softmax(student / T); float32."""
    p = F.softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(p * log_q).sum(-1)


def beta_of_mean_kl(mean_kl: torch.Tensor) -> torch.Tensor:
    """beta = tanh(mean KL), kept in [0, 1): float32 tanh rounds to exactly 1.0 from a
    mean KL of about 9, so the value is capped at the largest float below 1."""
    below_one = torch.nextafter(torch.ones((), dtype=mean_kl.dtype), torch.zeros((), dtype=mean_kl.dtype))
    return torch.tanh(mean_kl).clamp(max=below_one.item())


def calibration_beta(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """beta_i = tanh(mean of ``kl`` over the positions of row i where ``mask``), ``[B]``
    from ``[B, P]``; 0 for a row without positions. In [0, 1) since KL >= 0."""
    m = mask.to(kl.dtype)
    return beta_of_mean_kl((kl * m).sum(-1) / m.sum(-1).clamp(min=1))


def nce_sums(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
             targets: torch.Tensor, ce_mask: torch.Tensor, kd_mask: torch.Tensor,
             beta: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ce_sum, kd_sum)`` over a batch, from full logits ``[B, P, V]`` aligned with
    ``targets`` ``[B, P]`` (position t predicts ``targets[:, t]``):
    ``ce_sum = sum over ce_mask of -log q(target)`` and
    ``kd_sum = sum over kd_mask of (0.5 + beta_i) softCE(p_nat, q_student)``."""
    logq = F.log_softmax(student_logits.float(), dim=-1)
    safe = targets.masked_fill(~ce_mask.bool(), 0)
    ce = -logq.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    kd = soft_cross_entropy(teacher_logits, student_logits, temperature)
    ce_sum = (ce * ce_mask).sum()
    kd_sum = (kd * kd_mask * (0.5 + beta.float()).unsqueeze(-1)).sum()
    return ce_sum, kd_sum


def nce_loss(ce_sum, kd_sum, n_ce, n_kd, lam: float = 0.5):
    """L = (1 - lambda) * CE + lambda * L_KD, each a mean over its own token count."""
    return (1 - lam) * ce_sum / max(n_ce, 1) + lam * kd_sum / max(n_kd, 1)


def distill_positions(labels: torch.Tensor, attention_mask: torch.Tensor,
                      all_tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ce_mask, kd_mask)``, boolean ``[B, T-1]`` over next-token positions: the CE
    targets (completion tokens unless the prompt is trained on), and where the
    distillation term and beta are computed: the same positions, or with ``all_tokens``
    every position whose next token is attended (prompt included, as the paper did)."""
    ce = labels[:, 1:].ne(IGNORE)
    if not all_tokens:
        return ce, ce
    att = attention_mask.bool()
    return ce, att[:, 1:] & att[:, :-1]


# -- the chunked computation on hidden states ------------------------------------------------

def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # In the head's dtype (bf16 stays bf16, as in the model's own forward), then float32.
    with torch.autocast(h.device.type, enabled=False):
        return F.linear(h.to(weight.dtype), weight, bias).float()


def auto_chunk(vocab: int) -> int:
    """Rows per chunk so that one float32 ``[chunk, vocab]`` tensor is ~64 MiB."""
    return max(16, AUTO_CHUNK_BYTES // (4 * vocab))


@torch.no_grad()
def kl_rows(h_p: torch.Tensor, h_q: torch.Tensor, weight: torch.Tensor,
            bias: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """KL(softmax(W h_p) || softmax(W h_q)) for each row of ``[N, d]`` hidden states, in
    chunks of ``chunk`` rows; ``[N]`` float32. At most three ``[chunk, V]`` tensors alive;
    exactly 0 for rows where ``h_p`` and ``h_q`` are equal."""
    out = torch.empty(h_p.shape[0], dtype=torch.float32, device=h_p.device)
    for s in range(0, h_p.shape[0], chunk):
        # each logits tensor is freed as soon as its log_softmax exists; then in place
        log_p = F.log_softmax(_logits(h_p[s:s + chunk], weight, bias), dim=-1)
        diff = F.log_softmax(_logits(h_q[s:s + chunk], weight, bias), dim=-1).neg_().add_(log_p)
        out[s:s + chunk] = torch.bmm(log_p.exp_().unsqueeze(1), diff.unsqueeze(2)).view(-1)
        del log_p, diff
    return out


class _NCEHead(torch.autograd.Function):
    """sum_i ce_w[i] CE_i + kd_w[i] softCE_i over rows of hidden states, with the gradient
    for the student's rows computed chunk by chunk in forward (no [N, V] tensor kept)."""

    @staticmethod
    def forward(ctx, h_s, h_t, weight, bias, targets, ce_w, kd_w, temperature, chunk):
        n = h_s.shape[0]
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(h_s) if want_grad else None
        ce_tok = torch.zeros(n, dtype=torch.float32, device=h_s.device)
        kd_tok = torch.zeros(n, dtype=torch.float32, device=h_s.device)
        t = float(temperature)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            # Logits are freed as soon as their (log-)softmax exists, and the rest is in
            # place: two [chunk, V] tensors alive after each step (three with T != 1).
            zt = _logits(h_t[s:e], weight, bias)
            p = F.softmax(zt.div_(t) if t != 1.0 else zt, dim=-1)    # p_T
            del zt
            zs = _logits(h_s[s:e], weight, bias)
            tgt = targets[s:e].unsqueeze(-1)
            if t == 1.0:
                logq, q1 = F.log_softmax(zs, dim=-1), None
                ce_tok[s:e] = -logq.gather(-1, tgt).squeeze(-1)
            else:
                logq = F.log_softmax(zs / t, dim=-1)
                q1 = F.log_softmax(zs, dim=-1)
                ce_tok[s:e] = -q1.gather(-1, tgt).squeeze(-1)
                q1 = q1.exp_()
            del zs
            kd_tok[s:e] = -torch.bmm(p.unsqueeze(1), logq.unsqueeze(2)).view(-1)
            if not want_grad:
                continue
            a = ce_w[s:e].float().unsqueeze(-1)
            b = (kd_w[s:e].float() / t).unsqueeze(-1)
            # d/dz of a * CE + b' * softCE: a (q_1 - onehot) + (b'/T) (q_T - p_T)
            g = logq.exp_()
            if q1 is None:
                g.mul_(a + b)
            else:
                g.mul_(b).add_(q1.mul_(a))
            g.sub_(p.mul_(b))
            g.scatter_add_(-1, tgt, -a)
            grad[s:e] = (g.to(weight.dtype) @ weight).to(grad.dtype)
            del g, p, logq, q1
        loss = (ce_w.float() * ce_tok).sum() + (kd_w.float() * kd_tok).sum()
        if want_grad:
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(ce_tok, kd_tok)
        return loss, ce_tok, kd_tok

    @staticmethod
    def backward(ctx, g_loss, _g_ce, _g_kd):
        (grad,) = ctx.saved_tensors
        return (grad * g_loss.to(grad.dtype), None, None, None, None, None, None, None, None)


def nce_head_loss(h_student: torch.Tensor, h_teacher: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None, targets: torch.Tensor, ce_weights: torch.Tensor,
                  kd_weights: torch.Tensor, temperature: float = 1.0, chunk: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NCE loss on ``N`` selected positions, from final hidden states ``[N, d]`` of the
    student (differentiable) and the NAT teacher (no gradient) and the frozen output
    embedding ``weight`` ``[V, d]`` (+ ``bias``)::

        loss = sum_i ce_weights[i] * -log q(targets[i]) + kd_weights[i] * softCE_i

    (rows with ``ce_weights == 0`` may carry any target id). Returns ``(loss, ce_tok,
    kd_tok)``, the last two being the per-row CE and softCE values (no gradient). At most
    one ``[chunk, V]`` block of distributions is alive at a time."""
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise CuratorError("NCE's chunked loss needs a frozen output embedding; do not put "
                           "LoRA or training on lm_head")
    chunk = chunk or auto_chunk(weight.shape[0])
    targets = targets.clamp(min=0)  # masked rows: any valid id, weight 0
    return _NCEHead.apply(h_student, h_teacher.detach(), weight.detach(),
                          None if bias is None else bias.detach(), targets,
                          ce_weights.detach(), kd_weights.detach(), temperature, chunk)


# -- config, data, collator ------------------------------------------------------------------

@dataclass
class NCEConfig(DistillConfig):
    """NCE knobs on top of the shared ones. ``nce_lambda`` is the paper's lambda."""
    nce_lambda: float = 0.5
    nce_temperature: float = 1.0
    precompute_beta: bool = False
    distill_all_tokens: bool = False   # KD and beta over every attended token (the paper)
    nce_chunk_tokens: int = 0          # rows per chunk of distributions (0: ~64 MiB each)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.nce_lambda <= 1.0:
            raise CuratorError(f"--lambda must lie in [0, 1], got {self.nce_lambda}")
        if not self.nce_temperature > 0:
            raise CuratorError(f"--temperature must be > 0, got {self.nce_temperature}")
        if self.nce_chunk_tokens < 0:
            raise CuratorError(f"--chunk-tokens must be >= 0, got {self.nce_chunk_tokens}")


def nce_dataset(records: list[dict], tokenizer, fmt: D.PromptFormat, max_length: int,
                report: D.EncodeReport | None = None):
    """One row per positive rationale: ``input_ids``, ``prompt_length``, ``sample_id`` and
    ``row`` (its index, which the collator passes on so betas can be matched to samples)."""
    import datasets
    rows = {"input_ids": [], "prompt_length": [], "sample_id": [], "row": []}
    seen: set[str] = set()
    for r in records:
        if r["sample_id"] in seen:
            raise CuratorError(f"sample_id {r['sample_id']} occurs twice in the export; "
                               f"betas are keyed by it")
        seen.add(r["sample_id"])
        enc = D.encode(tokenizer, fmt, r["question"], r["rationale"], max_length, report)
        if enc is None:
            continue
        rows["input_ids"].append(enc["input_ids"])
        rows["prompt_length"].append(enc["prompt_length"])
        rows["sample_id"].append(r["sample_id"])
        rows["row"].append(len(rows["row"]))
    if not rows["input_ids"]:
        raise CuratorError("no trainable rationales: every prompt is longer than --max-length "
                           "or there are no positives")
    return datasets.Dataset.from_dict(rows)


@dataclass
class NCECollator(RationaleCollator):
    """:class:`RationaleCollator` plus ``row`` (dataset index) and, when the rows carry a
    precomputed ``beta``, that beta."""

    def __call__(self, rows: list[dict]) -> dict:
        batch = super().__call__(rows)
        batch["row"] = torch.tensor([r["row"] for r in rows], dtype=torch.long)
        if "beta" in rows[0]:
            batch["beta"] = torch.tensor([r["beta"] for r in rows], dtype=torch.float32)
        return batch


# -- the model: one base, the NAT adapters, the student ---------------------------------------

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


def nat_fingerprint(nat_dir: str | Path) -> str:
    """SHA-256 over the NAT adapters' weights: betas belong to exactly this teacher."""
    h = hashlib.sha256()
    for sub in (NEG, POS):
        with open(Path(nat_dir) / sub / "adapter_model.safetensors", "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# -- the trainer -------------------------------------------------------------------------------

class NCETrainer(DistillTrainer):
    """NCE with the global token normalisation of :class:`DistillTrainer`, for two counts:
    the CE targets and the distillation positions of the whole global batch (they differ
    with ``distill_all_tokens``). Each micro-batch's loss is
    ``((1 - lambda) ce_sum / N_ce + lambda kd_sum / N_kd) * world_size``."""

    mode = STUDENT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.model
        self.trainable = set(adapter_param_names(model, STUDENT))
        self.check_trainable()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._decoder = base.get_decoder()
        self._head = base.get_output_embeddings()
        if not isinstance(self._head, torch.nn.Linear):
            raise CuratorError(f"NCE needs a plain linear output head; this model's is a "
                               f"{type(self._head).__name__}")
        if getattr(base.config, "final_logit_softcapping", None):
            raise CuratorError("NCE's chunked loss does not support logit soft-capping "
                               "(final_logit_softcapping) models")
        self._keep_arg = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._head_checked = False
        self._stats = {"ce": 0.0, "kd": 0.0, "beta": 0.0, "n": 0}
        self.seen_betas: dict[int, tuple[float, float, int]] = {}

    # -- invariants
    def check_trainable(self) -> None:
        now = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if now != self.trainable:
            extra, missing = sorted(now - self.trainable), sorted(self.trainable - now)
            raise RuntimeError(f"NCE: trainable parameters changed (only the student may "
                               f"train): now also {extra[:3]}, no longer {missing[:3]}")

    # -- counts
    def count_normaliser(self, batch: dict) -> torch.Tensor:
        ce, kd = distill_positions(batch["labels"], batch["attention_mask"],
                                   self.args.distill_all_tokens)
        return torch.stack([ce.sum(), kd.sum()])

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = Trainer.get_batch_samples(self, epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        n = sum(self.count_normaliser(b) for b in batch_samples).to(device)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n.view(1, 2)).view(-1, 2).sum(0)
        return batch_samples, n

    # -- passes
    def _autocast(self):
        dev = self.args.device.type
        return torch.autocast(dev, dtype=torch.bfloat16, enabled=bool(self.args.bf16))

    def _hidden(self, model, batch: dict) -> torch.Tensor:
        """Final hidden states ``[B, T, d]`` from one forward pass of ``model`` in its current
        mode; the LM head only runs on the last position."""
        captured = {}

        def grab(_m, _i, out):
            captured["h"] = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

        hook = self._decoder.register_forward_hook(grab)
        try:
            kw = {"logits_to_keep": 1} if self._keep_arg else {}
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        use_cache=False, **kw)
        finally:
            hook.remove()
        h = captured["h"]
        if not self._head_checked:
            self._check_head(h, out.logits)
        return h

    def _check_head(self, h: torch.Tensor, logits: torch.Tensor) -> None:
        """The chunked loss recomputes logits as head(hidden): refuse architectures whose
        logits are something else (scaled, capped)."""
        mine = _logits(h[:, -1].detach(), self._head.weight, self._head.bias)
        theirs = logits[:, -1].detach().float()
        tol = 5e-2 if mine.dtype != h.dtype or h.dtype != torch.float32 else 1e-4
        if not torch.allclose(mine, theirs, atol=tol * max(1.0, theirs.abs().max().item()),
                              rtol=tol):
            raise CuratorError("this model's logits are not its output embedding applied to "
                               "the decoder's last hidden state; NCE's chunked loss does not "
                               "support it")
        self._head_checked = True

    def _teacher_hidden(self, batch: dict, mode: str) -> torch.Tensor:
        """Final hidden states of the teacher in ``mode`` ("nat" or "neg"): same model
        instance, no gradient, eval mode (no dropout), student switched off by the mode."""
        model = self.model  # unwrapped: the teacher needs no DDP hooks
        was_training = model.training
        model.eval()
        try:
            with adapter_mode(model, mode), torch.no_grad(), self._autocast():
                return self._hidden(model, batch)
        finally:
            model.train(was_training)

    def teacher_betas(self, batch: dict, h_nat_sel: torch.Tensor | None = None,
                      sel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(beta, mean_kl, n_tokens)`` per row of ``batch`` from the teacher's "neg" and
        "nat" passes, over the distillation positions. ``h_nat_sel`` (the "nat" hidden
        states at the positions ``sel``) saves the "nat" pass when already computed."""
        _, kd = distill_positions(batch["labels"], batch["attention_mask"],
                                  self.args.distill_all_tokens)
        if h_nat_sel is None:
            sel = kd
            h_nat_sel = self._teacher_hidden(batch, NAT)[:, :-1][kd]
        h_neg = self._teacher_hidden(batch, NEG)[:, :-1][sel]
        kd_in_sel = kd[sel]
        chunk = self._chunk()
        kl = kl_rows(h_neg[kd_in_sel], h_nat_sel[kd_in_sel], self._head.weight,
                     self._head.bias, chunk)
        del h_neg
        rows = torch.arange(kd.shape[0], device=kd.device).unsqueeze(1).expand_as(kd)[kd]
        kl_sum = torch.zeros(kd.shape[0], dtype=torch.float32, device=kd.device)
        kl_sum.index_add_(0, rows, kl)
        n = kd.sum(-1)
        mean_kl = kl_sum / n.clamp(min=1)
        return beta_of_mean_kl(mean_kl), mean_kl, n

    def _chunk(self) -> int:
        return self.args.nce_chunk_tokens or auto_chunk(self._head.weight.shape[0])

    # -- the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model.training:
            self.check_trainable()
        args = self.args
        ce_mask, kd_mask = distill_positions(inputs["labels"], inputs["attention_mask"],
                                             args.distill_all_tokens)
        sel = ce_mask | kd_mask
        h_nat = self._teacher_hidden(inputs, NAT)[:, :-1][sel]
        if "beta" in inputs:
            beta = inputs["beta"].float()
        else:
            beta, mean_kl, n_kd_rows = self.teacher_betas(inputs, h_nat, sel)
            if self.model.training:
                for r, b, k, c in zip(inputs["row"].tolist(), beta.tolist(), mean_kl.tolist(),
                                      n_kd_rows.tolist()):
                    self.seen_betas[r] = (b, k, c)
        h_student = self._hidden(model, inputs)[:, :-1][sel]

        if num_items_in_batch is None:  # evaluation: this micro-batch alone
            num_items_in_batch = self.count_normaliser(inputs)
            scale = 1
        else:
            scale = self.accelerator.num_processes
        n_ce, n_kd = num_items_in_batch.to(h_student.device).float().clamp(min=1).unbind()
        lam = args.nce_lambda
        rows = torch.arange(sel.shape[0], device=sel.device).unsqueeze(1).expand_as(sel)[sel]
        ce_w = ce_mask[sel].float() * ((1 - lam) * scale / n_ce)
        kd_w = kd_mask[sel].float() * (0.5 + beta.to(h_student.device))[rows] * (lam * scale / n_kd)
        targets = inputs["labels"][:, 1:][sel]
        loss, ce_tok, kd_tok = nce_head_loss(h_student, h_nat, self._head.weight,
                                             self._head.bias, targets, ce_w, kd_w,
                                             args.nce_temperature, self._chunk())
        if self.model.training:
            s = self._stats
            s["ce"] += (ce_tok * ce_mask[sel]).sum().item() / max(1, int(ce_mask.sum()))
            s["kd"] += (kd_tok * kd_mask[sel]).sum().item() / max(1, int(kd_mask.sum()))
            s["beta"] += beta.mean().item()
            s["n"] += 1
        return (loss, {"loss": loss}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the mean CE, softCE and beta of the micro-batches since the last log (this
        process) to the training log."""
        s = self._stats
        if "loss" in logs and s["n"]:
            logs = {**logs, "nce_ce": s["ce"] / s["n"], "nce_softce": s["kd"] / s["n"],
                    "nce_beta": s["beta"] / s["n"]}
            self._stats = {"ce": 0.0, "kd": 0.0, "beta": 0.0, "n": 0}
        super().log(logs, *args, **kwargs)

    def gathered_seen_betas(self) -> dict[int, tuple[float, float, int]]:
        """Betas computed during online training, from every process."""
        if self.args.world_size <= 1:
            return dict(self.seen_betas)
        parts = [None] * self.args.world_size
        torch.distributed.all_gather_object(parts, self.seen_betas)
        merged: dict = {}
        for p in parts:
            merged.update(p)
        return merged

    # -- precomputed betas
    def precompute_betas(self, store: "BetaStore", batch_size: int | None = None,
                         progress=None) -> dict[str, float]:
        """beta of every training sample, computed with the same teacher passes as online
        training (same positions, chunking, autocast), batch by batch, appended to ``store``
        as they come (an interrupted pass resumes where it stopped). Under several
        processes each computes a strided share. Returns ``{sample_id: beta}``."""
        ds = self.train_dataset
        done = store.load()
        world, rank = self.args.world_size, self.args.process_index
        ids = ds["sample_id"]
        todo = [i for i, sid in enumerate(ids) if sid not in done and i % world == rank]
        # Batches of similar lengths: little padding (beta of a row does not depend on it).
        lengths = [len(x) for x in ds["input_ids"]]
        todo.sort(key=lambda i: lengths[i])
        bs = batch_size or self.args.per_device_train_batch_size
        device = self.args.device
        self.model.to(device)
        mine: dict[str, dict] = {}
        with adapter_mode(self.model, self.mode):
            for s in range(0, len(todo), bs):
                rows = [ds[i] for i in todo[s:s + bs]]
                batch = {k: v.to(device) if torch.is_tensor(v) else v
                         for k, v in self.data_collator(rows).items()}
                beta, mean_kl, n = self.teacher_betas(batch)
                recs = [{"sample_id": r["sample_id"], "beta": b, "mean_kl": k, "tokens": c}
                        for r, b, k, c in zip(rows, beta.tolist(), mean_kl.tolist(), n.tolist())]
                if rank == 0:
                    store.append(recs)
                else:
                    mine.update({r["sample_id"]: r for r in recs})
                if progress is not None:
                    progress(len(rows))
        if world > 1:
            parts = [None] * world
            torch.distributed.all_gather_object(parts, mine)
            if rank == 0:
                for p in parts[1:]:
                    store.append(list(p.values()))
            torch.distributed.barrier()
        done = store.load()
        missing = [sid for sid in ids if sid not in done]
        if missing:
            raise RuntimeError(f"beta missing for {len(missing)} samples, e.g. {missing[0]}")
        return {sid: rec["beta"] for sid, rec in done.items()}

    def use_betas(self, betas: dict[str, float]) -> None:
        """Train with these betas (no "neg" pass per step)."""
        self.train_dataset = self.train_dataset.add_column(
            "beta", [float(betas[sid]) for sid in self.train_dataset["sample_id"]])


# -- betas on disk --------------------------------------------------------------------------

class BetaStore:
    """``betas.jsonl`` in the run directory (one ``{sample_id, beta, mean_kl, tokens}`` per
    line, appended and flushed batch by batch) and ``betas.meta.json`` saying which
    teacher and encoding they belong to. Reusing betas of another teacher is refused."""

    def __init__(self, out: str | Path, meta: dict):
        self.dir = Path(out)
        self.path = self.dir / BETAS_FILE
        self.meta_path = self.dir / BETAS_META
        self.meta = meta

    def load(self) -> dict[str, dict]:
        if self.meta_path.is_file():
            saved = json.loads(self.meta_path.read_text())
            if saved != self.meta:
                diff = sorted(k for k in set(saved) | set(self.meta) if saved.get(k) != self.meta.get(k))
                raise CuratorError(f"{self.path} holds betas of another teacher or encoding "
                                   f"(differs in {', '.join(diff)}); use another --out or "
                                   f"remove {self.path} and {self.meta_path}")
        if not self.path.is_file():
            return {}
        out, good = {}, 0
        data = self.path.read_bytes()
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a line cut by an interruption: dropped and recomputed
            rec = json.loads(line)
            out[rec["sample_id"]] = rec
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return out

    def append(self, recs: list[dict]) -> None:
        import os
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.meta_path.is_file():
            self.meta_path.write_text(json.dumps(self.meta, indent=2))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs))
            f.flush()
            os.fsync(f.fileno())


def beta_summary(betas: list[float]) -> dict:
    """Count, mean, standard deviation, min, quartiles, max and the share of zeros."""
    if not betas:
        return {"count": 0}
    xs = sorted(betas)
    n = len(xs)

    def q(f):
        k = (n - 1) * f
        lo, hi = math.floor(k), math.ceil(k)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    mean = sum(xs) / n
    return {"count": n, "mean": mean, "std": math.sqrt(sum((x - mean) ** 2 for x in xs) / n),
            "min": xs[0], "p25": q(0.25), "median": q(0.5), "p75": q(0.75), "max": xs[-1],
            "zero_fraction": sum(1 for x in xs if x == 0.0) / n}


def write_beta_report(out: str | Path, records: list[dict], source: str) -> dict:
    """``beta_summary.json`` and ``beta_hist.png`` (histogram of beta over samples)."""
    out = Path(out)
    betas = [r["beta"] for r in records]
    summary = {**beta_summary(betas), "source": source}
    (out / BETA_SUMMARY).write_text(json.dumps(summary, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # The whole [0, 1) range unless every beta is small: one bar at 0 would say nothing.
    top = max(betas, default=0.0)
    ax.hist(betas, bins=40, range=(0.0, 1.0 if top > 0.5 else max(top * 1.05, 1e-9)),
            color="#4c72b0")
    ax.set_xlabel("beta = tanh(mean KL(p_neg || p_nat))")
    ax.set_ylabel("samples")
    ax.set_title(f"NCE calibration weights ({source}, n={len(betas)}, "
                 f"mean {summary.get('mean', 0):.3f})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / BETA_PLOT, dpi=100)
    plt.close(fig)
    return summary


# -- the job ---------------------------------------------------------------------------------

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
    from distill.train import load_base

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


def beta_meta(nat: Path, base: str | Path, config: NCEConfig, fmt: D.PromptFormat) -> dict:
    """What a precomputed beta depends on (a stored one is reused only when all match)."""
    from distill.train import model_dtype
    return {"nat": str(Path(nat).resolve()), "nat_sha256": nat_fingerprint(nat),
            "base_model": str(base), "positions": "attended" if config.distill_all_tokens
            else "targets", "train_on_prompt": config.train_on_prompt,
            "max_length": config.max_length, "prompt_format": fmt.to_json(),
            "dtype": model_dtype(config), "chunk_tokens": config.nce_chunk_tokens}


def _snapshot(model, adapters: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if any(f".{a}." in n for a in adapters)}


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
    from distill.train import CHECKPOINTS, checkpointing, fit

    out = Path(out)
    nat = resolve_nat_dir(nat)
    if is_nat_dir(out) or out.resolve() == nat.resolve():
        raise CuratorError(f"--out {out} holds a NAT model; write the student elsewhere")
    records = D.read_export(data, split)
    trainer, report = build_nce(records, base, nat, checkpointing(config, out), fmt)
    main = trainer.is_world_process_zero()
    store = BetaStore(out, beta_meta(nat, base, config, fmt))
    before = _snapshot(trainer.model, (NEG, POS))
    if config.precompute_beta:
        betas = trainer.precompute_betas(store)
        trainer.use_betas(betas)
    fit(trainer, resume)
    changed = [n for n, p in _snapshot(trainer.model, (NEG, POS)).items()
               if not torch.equal(before[n], p)]
    if changed:
        raise RuntimeError(f"NCE modified the frozen NAT adapters: {changed[:3]}")
    if config.precompute_beta:
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
