"""The NCE loss (METHOD.md step 2), as trained, in one place::

    beta_i = tanh( mean over tokens of KL(p_neg || p_nat) )               in [0, 1)
    L_KD   = mean over tokens of (0.5 + beta_i) * softCE(p_nat, q_student)
    L      = (1 - lambda) * CE(student, rationale) + lambda * L_KD

with ``p_nat`` the NAT model ("nat" mode: base + ``neg`` + ``pos`` + gates), ``p_neg`` the
base + ``neg`` alone, and ``q_student`` the base + ``student``. The temperature T divides
both the teacher's and the student's logits in softCE, exactly as written (no Hinton T^2
factor, so T != 1 also changes the weight of the KD term); beta always uses T = 1, since it
measures the frozen teacher and does not depend on training knobs.

Reading order: :func:`distill_positions` (where each term is computed),
:func:`beta_from_kl` (beta), :func:`nce_objective` (the loss the trainer minimises: the
weights ``(1 - lambda) / N_ce`` and ``lambda (0.5 + beta_i) / N_kd`` of
:func:`mixing_weights` on the per-token CE and softCE of :func:`nce_head_loss`).
:func:`nce_sums` and :func:`nce_loss` state the same loss on full logits by calling that
code with the logits as hidden states (no output embedding), so the tests of the formula
test the code that trains. :func:`kl_divergence` and :func:`soft_cross_entropy` are the
per-position definitions the chunked computations are tested against.

No full-vocabulary tensor: the trainer (:class:`distill.nce.trainer.NCETrainer`) passes
final hidden states, and :func:`nce_head_loss` walks them in chunks: for each chunk it
computes the student's and the teacher's logits from the output embedding, the loss, and
the gradient with respect to the student's hidden states, so at most one chunk of
teacher (and student) distributions is alive at a time and nothing of size
``[tokens, vocab]`` is kept for backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from curator.errors import CuratorError
from distill.collate import IGNORE

# Bytes of one float32 [chunk, vocab] distribution when the chunk size is automatic; the
# chunk loops keep two such tensors alive (three with a temperature other than 1).
AUTO_CHUNK_BYTES = 64 * 2**20


# -- definitions per position ------------------------------------------------------------------

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


# -- where, and beta -----------------------------------------------------------------------------

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


def row_ids(mask: torch.Tensor) -> torch.Tensor:
    """The row of each ``True`` of the ``[B, P]`` ``mask``, in row-major order (the order of
    ``x[mask]``)."""
    return torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)[mask]


def beta_from_kl(kl: torch.Tensor, mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(beta, mean_kl, n_tokens)`` per row of the boolean ``[B, P]`` ``mask``, from
    ``kl``, the KL(p_neg || p_nat) at the positions of ``mask`` (``[mask.sum()]``,
    row-major): beta_i = tanh(mean KL over row i's positions); 0 for a row without any."""
    kl_sum = torch.zeros(mask.shape[0], dtype=torch.float32, device=mask.device)
    kl_sum.index_add_(0, row_ids(mask), kl.float())
    n = mask.sum(-1)
    mean_kl = kl_sum / n.clamp(min=1)
    return beta_of_mean_kl(mean_kl), mean_kl, n


def calibration_beta(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """beta_i = tanh(mean of ``kl`` over the positions of row i where ``mask``), ``[B]``
    from ``[B, P]``; 0 for a row without positions. In [0, 1) since KL >= 0."""
    mask = mask.bool()
    return beta_from_kl(kl[mask], mask)[0]


# -- the loss --------------------------------------------------------------------------------------

def mixing_weights(lam: float, n_ce, n_kd, scale=1):
    """``((1 - lambda) scale / N_ce, lambda scale / N_kd)``: what a summed CE and a summed
    (0.5 + beta)-weighted softCE are multiplied by to make L (``scale``: the number of
    processes, see :class:`distill.run.DistillTrainer`)."""
    return (1 - lam) * scale / n_ce, lam * scale / n_kd


def nce_objective(h_student: torch.Tensor, h_nat: torch.Tensor, weight: torch.Tensor | None,
                  bias: torch.Tensor | None, targets: torch.Tensor, ce_mask: torch.Tensor,
                  kd_mask: torch.Tensor, beta: torch.Tensor, lam: float, n_ce, n_kd,
                  scale=1, temperature: float = 1.0, chunk: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The NCE loss as trained, ``(loss, ce_tok, kd_tok)``. ``h_student``/``h_nat``: final
    hidden states ``[N, d]`` at the positions ``ce_mask | kd_mask`` (row-major) of a batch
    whose next-token ``targets``, ``ce_mask`` and ``kd_mask`` are ``[B, P]``; ``beta``
    ``[B]``; ``n_ce``/``n_kd`` the token counts of the global batch; ``weight``/``bias``
    the frozen output embedding (None: the hidden states are the logits)."""
    sel = ce_mask | kd_mask
    a, b = mixing_weights(lam, n_ce, n_kd, scale)
    ce_w = ce_mask[sel].float() * a
    kd_w = kd_mask[sel].float() * (0.5 + beta.to(h_student.device))[row_ids(sel)] * b
    return nce_head_loss(h_student, h_nat, weight, bias, targets[sel], ce_w, kd_w,
                         temperature, chunk)


def nce_sums(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
             targets: torch.Tensor, ce_mask: torch.Tensor, kd_mask: torch.Tensor,
             beta: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ce_sum, kd_sum)`` over a batch, from full logits ``[B, P, V]`` aligned with
    ``targets`` ``[B, P]`` (position t predicts ``targets[:, t]``):
    ``ce_sum = sum over ce_mask of -log q(target)`` and
    ``kd_sum = sum over kd_mask of (0.5 + beta_i) softCE(p_nat, q_student)``; computed by
    :func:`nce_objective` (lambda = 0 gives the first, lambda = 1 the second)."""
    ce_mask, kd_mask = ce_mask.bool(), kd_mask.bool()
    sel = ce_mask | kd_mask
    s, t = student_logits[sel], teacher_logits[sel]
    return tuple(nce_objective(s, t, None, None, targets, ce_mask, kd_mask, beta, lam, 1, 1,
                               temperature=temperature)[0] for lam in (0.0, 1.0))


def nce_loss(ce_sum, kd_sum, n_ce, n_kd, lam: float = 0.5):
    """L = (1 - lambda) * CE + lambda * L_KD, each a mean over its own token count."""
    a, b = mixing_weights(lam, max(n_ce, 1), max(n_kd, 1))
    return a * ce_sum + b * kd_sum


# -- the chunked computation on hidden states ------------------------------------------------

def _logits(h: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
            ) -> torch.Tensor:
    # In the head's dtype (bf16 stays bf16, as in the model's own forward), then float32.
    # Without a head the rows are logits already.
    if weight is None:
        return h.float()
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
            grad[s:e] = (g if weight is None else g.to(weight.dtype) @ weight).to(grad.dtype)
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
    embedding ``weight`` ``[V, d]`` (+ ``bias``; ``weight`` None: the rows are logits)::

        loss = sum_i ce_weights[i] * -log q(targets[i]) + kd_weights[i] * softCE_i

    (rows with ``ce_weights == 0`` may carry any target id). Returns ``(loss, ce_tok,
    kd_tok)``, the last two being the per-row CE and softCE values (no gradient). At most
    one ``[chunk, V]`` block of distributions is alive at a time."""
    if (weight is not None and weight.requires_grad) or (bias is not None and bias.requires_grad):
        raise CuratorError("NCE's chunked loss needs a frozen output embedding; do not put "
                           "LoRA or training on lm_head")
    chunk = chunk or auto_chunk(h_student.shape[-1] if weight is None else weight.shape[0])
    targets = targets.clamp(min=0)  # masked rows: any valid id, weight 0
    return _NCEHead.apply(h_student, h_teacher.detach(),
                          None if weight is None else weight.detach(),
                          None if bias is None else bias.detach(), targets,
                          ce_weights.detach(), kd_weights.detach(), temperature, chunk)
