"""NAT's dynamic integration gate (METHOD.md step 1), for one adapted linear layer with
input x and base output b = W x::

    h_pos = b + s_pos B_pos A_pos x        h_neg = b + s_neg B_neg A_neg x
    a     = softmax([q.k_pos, q.k_neg] / T)  with q = Q x, k_* = K h_*
    alpha = (2 a_neg - 1) * beta            in [-beta, beta]: add or subtract negative knowledge
    y     = b + (1 - alpha) V(h_pos) + alpha V(h_neg)

Q is sized from the layer's input width, K and V from its output width (so the narrower
``k_proj``/``v_proj`` of grouped-query attention work), and V's output projection starts
at zero, so the gated layer starts as the base layer.

:func:`integration_gate` is the definition; :func:`integration_gate_lowrank` is what the
"nat" mode of :class:`distill.adapters.GatedLoraLinear` computes (equal up to rounding).
The layer holding the gate's weights, and the modes, are in :mod:`distill.adapters`; the
NAT trainers and job in :mod:`distill.nat.trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NEG, POS, NAT = "neg", "pos", "nat"


@dataclass(frozen=True)
class GateConfig:
    """Hyper-parameters of the integration gate (METHOD.md defaults)."""
    width: int = 128          # attention and value-MLP width in the paper's code
    beta: float = 0.5         # |alpha| <= beta
    temperature: float = 1.0  # softmax temperature T
    partner: str = NEG        # the frozen adapter the gated one is combined with


def integration_gate(x: torch.Tensor, base: torch.Tensor, h_pos: torch.Tensor,
                     h_neg: torch.Tensor, query: nn.Module, key: nn.Module,
                     value_in: nn.Module, value_out: nn.Module, beta: float,
                     temperature: float) -> torch.Tensor:
    """NAT's dynamic integration unit (METHOD.md step 1) for one linear layer:
    ``y = b + (1 - alpha) V(h_pos) + alpha V(h_neg)`` with a per-token signed weight
    ``alpha = (2 a_neg - 1) beta`` from attention of ``Q x`` over ``K h_pos``, ``K h_neg``."""
    q = query(x)
    scores = torch.stack([(q * key(h_pos)).sum(-1), (q * key(h_neg)).sum(-1)], dim=-1)
    a_neg = torch.softmax(scores / temperature, dim=-1)[..., 1:]
    alpha = (2 * a_neg - 1) * beta

    def value(h):
        return value_out(torch.nn.functional.gelu(value_in(h)))

    return base + (1 - alpha) * value(h_pos) + alpha * value(h_neg)


def integration_gate_lowrank(x: torch.Tensor, base: torch.Tensor, ax_pos: torch.Tensor,
                             ax_neg: torch.Tensor, b_pos: torch.Tensor, b_neg: torch.Tensor,
                             query: nn.Linear, key: nn.Linear, value_in: nn.Linear,
                             value_out: nn.Linear, beta: float, temperature: float) -> torch.Tensor:
    """:func:`integration_gate` computed without forming ``h_pos``/``h_neg``; equal to it up
    to rounding (a test checks). ``ax_* = A_* x`` (rank r) and ``b_* = s_* B_*`` (d x r).

    - A softmax over two scores only depends on their difference, and
      ``q.k_neg - q.k_pos = q.K (b_neg ax_neg - b_pos ax_pos)``: the ``K b`` term cancels, so
      with ``m_* = Q^T K b_*`` (in x r) the scores cost two rank-r products per token.
    - V's first layer is linear: ``V_in h_* = V_in b + (V_in b_*) ax_*``, one d-wide product.
    - V's output layer is linear: ``(1 - alpha) V(h_pos) + alpha V(h_neg) =
      V_out((1 - alpha) g_pos + alpha g_neg)`` with ``g_* = gelu(V_in h_*)``: one product.
    The unit thus costs about two d x width products per token instead of seven."""
    m_pos = query.weight.T @ (key.weight @ b_pos)                       # [in, r]
    m_neg = query.weight.T @ (key.weight @ b_neg)
    score_diff = ((x @ m_neg) * ax_neg).sum(-1) - ((x @ m_pos) * ax_pos).sum(-1)
    a_neg = torch.sigmoid(score_diff / temperature).unsqueeze(-1)       # softmax of 2 scores
    alpha = (2 * a_neg - 1) * beta
    v_base = value_in(base)
    gelu = torch.nn.functional.gelu
    g_pos = gelu(v_base + ax_pos @ (value_in.weight @ b_pos).T)
    g_neg = gelu(v_base + ax_neg @ (value_in.weight @ b_neg).T)
    return base + value_out((1 - alpha) * g_pos + alpha * g_neg)
