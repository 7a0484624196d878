"""The loss of every method, as small pure functions of token log-probabilities.

Each function returns a *sum* over target tokens (or over sequences, weighted by their
token count); the trainer divides it by the number of target tokens in the whole global
batch (all processes, all accumulation steps), so that the effective learning rate does
not depend on how the batch is split. See :class:`distill.run.DistillTrainer`.

Shapes: ``logp`` and ``mask`` are ``[batch, positions]``: the log-probability of each
target token and 1 where a position is a target (0 on prompt and padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
# -log(1 - p) is infinite at p = 1; unlikelihood is clipped at -log(1e-6) ~ 13.8 nats.
_MIN_ONE_MINUS_P = 1e-6


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token and the target mask, from causal-LM ``logits``
    ``[B, T, V]`` and ``labels`` ``[B, T]`` (-100 = not a target). Position t predicts
    label t+1; the returned tensors have T-1 positions. Computed in float32."""
    targets = labels[:, 1:]
    mask = targets.ne(IGNORE)
    flat = logits[:, :-1].float().reshape(-1, logits.size(-1))
    nll = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    logp = -nll.view(targets.shape)
    return logp * mask, mask.to(logp.dtype)


def nll_sum(logp: torch.Tensor, mask: torch.Tensor,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood summed over target tokens; ``weights`` (per sequence)
    scale each sequence's tokens. SFT, MIX and NAT use no weights."""
    per_seq = -(logp * mask).sum(-1)
    if weights is not None:
        per_seq = per_seq * weights.to(per_seq.dtype)
    return per_seq.sum()


def nt_weights(is_negative: torch.Tensor, neg_weight: float = -0.05) -> torch.Tensor:
    """NT (negative training): +1 for positives, ``neg_weight`` for negatives (the paper's
    released data class used -0.05)."""
    return torch.where(is_negative, torch.as_tensor(neg_weight), torch.as_tensor(1.0))


def unlikelihood_sum(logp: torch.Tensor, mask: torch.Tensor, is_negative: torch.Tensor,
                     ul_weight: float = 1.0) -> torch.Tensor:
    """UL: -log p(token) on positives' tokens plus ``ul_weight * -log(1 - p(token))`` on
    negatives' tokens, summed."""
    likelihood = -logp
    one_minus_p = (-torch.expm1(logp)).clamp(min=_MIN_ONE_MINUS_P)
    unlikelihood = -torch.log(one_minus_p) * ul_weight
    neg = is_negative.view(-1, 1)
    per_token = torch.where(neg, unlikelihood, likelihood)
    return (per_token * mask).sum()


def sequence_scores(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised log-likelihood of each sequence (mean log-prob per target token)."""
    return (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def contrastive_sum(logp: torch.Tensor, mask: torch.Tensor, is_negative: torch.Tensor,
                    group: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """CL: within each problem (``group``), every positive is contrasted against that
    problem's negatives with an InfoNCE term on length-normalised scores::

        l_p = -log( exp(s_p / t) / (exp(s_p / t) + sum_n exp(s_n / t)) )

    Each l_p is weighted by the positive's number of target tokens so that the sum lives
    on the same per-token scale as the likelihood term. Positives without a negative in
    their group contribute nothing."""
    scores = sequence_scores(logp, mask) / temperature
    n_tokens = mask.sum(-1)
    same = group.view(-1, 1) == group.view(1, -1)                    # [N, N]
    neg_of_group = same & is_negative.view(1, -1)                   # column j is a negative
    # log(exp(s_p) + sum_n exp(s_n)) for every row p, over its own group's negatives.
    others = scores.view(1, -1).expand(len(scores), -1).masked_fill(~neg_of_group, float("-inf"))
    denom = torch.logsumexp(torch.cat([scores.view(-1, 1), others], dim=1), dim=1)
    per_pos = denom - scores
    use = (~is_negative) & neg_of_group.any(dim=1)
    return (per_pos * n_tokens * use).sum()


def count_targets(labels: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Number of target tokens (after the causal shift) in ``labels``, optionally only in
    the rows selected by the boolean ``rows``."""
    mask = labels[:, 1:].ne(IGNORE)
    if rows is not None:
        mask = mask & rows.view(-1, 1)
    return mask.sum()
