"""Every loss on small hand-computed tensors, away from any model."""

from __future__ import annotations

import math

import torch

from distill import losses as L

I = L.IGNORE


def test_token_logprobs_shift_and_mask():
    # vocab 2; position t predicts label t+1
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[I, 0, 1]])
    logp, mask = L.token_logprobs(logits, labels)
    assert mask.tolist() == [[1.0, 1.0]]
    # p(0 | pos 0) = 1/2; p(1 | pos 1) = 1/(3+1)
    assert torch.allclose(logp, torch.tensor([[math.log(0.5), math.log(0.25)]]))
    logp, mask = L.token_logprobs(logits, torch.tensor([[I, I, 1]]))
    assert mask.tolist() == [[0.0, 1.0]] and logp[0, 0] == 0


LOGP = torch.log(torch.tensor([[0.5, 0.25, 1.0], [0.8, 0.1, 0.5]]))
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
NEG = torch.tensor([False, True])


def test_nll_sum_and_nt_weights():
    a = -(math.log(0.5) + math.log(0.25))
    b = -(math.log(0.8) + math.log(0.1) + math.log(0.5))
    assert math.isclose(L.nll_sum(LOGP, MASK).item(), a + b, rel_tol=1e-6)
    w = L.nt_weights(NEG, -0.05)
    assert torch.allclose(w, torch.tensor([1.0, -0.05]))
    assert math.isclose(L.nll_sum(LOGP, MASK, w).item(), a - 0.05 * b, rel_tol=1e-6)


def test_unlikelihood_sum():
    pos = -(math.log(0.5) + math.log(0.25))
    neg = -(math.log(1 - 0.8) + math.log(1 - 0.1) + math.log(1 - 0.5))
    assert math.isclose(L.unlikelihood_sum(LOGP, MASK, NEG).item(), pos + neg, rel_tol=1e-5)
    assert math.isclose(L.unlikelihood_sum(LOGP, MASK, NEG, ul_weight=2.0).item(),
                        pos + 2 * neg, rel_tol=1e-5)
    # p = 1 on a negative token is clipped, not infinite
    sure = L.unlikelihood_sum(torch.zeros(1, 1), torch.ones(1, 1), torch.tensor([True]))
    assert math.isclose(sure.item(), -math.log(1e-6), rel_tol=1e-4)


def test_contrastive_sum_by_hand():
    # group 0: positive (scores s0) vs negative (s1); group 1: a positive alone (no term)
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.25], [0.9, 0.9]]))
    mask = torch.ones(3, 2)
    neg = torch.tensor([False, True, False])
    group = torch.tensor([0, 0, 1])
    s0, s1 = math.log(0.5), math.log(0.25)
    expect = 2 * -(s0 - math.log(math.exp(s0) + math.exp(s1)))   # weighted by 2 tokens
    got = L.contrastive_sum(logp, mask, neg, group, temperature=1.0)
    assert math.isclose(got.item(), expect, rel_tol=1e-6)
    t = 0.5
    expect_t = 2 * -(s0 / t - math.log(math.exp(s0 / t) + math.exp(s1 / t)))
    assert math.isclose(L.contrastive_sum(logp, mask, neg, group, t).item(), expect_t, rel_tol=1e-6)


def test_contrastive_only_within_group():
    logp = torch.log(torch.tensor([[0.5], [0.25], [0.9], [0.1]]))
    mask = torch.ones(4, 1)
    neg = torch.tensor([False, True, False, True])
    group = torch.tensor([0, 0, 1, 1])
    s = [math.log(x) for x in (0.5, 0.25, 0.9, 0.1)]
    expect = -(s[0] - math.log(math.exp(s[0]) + math.exp(s[1]))) \
        - (s[2] - math.log(math.exp(s[2]) + math.exp(s[3])))
    assert math.isclose(L.contrastive_sum(logp, mask, neg, group).item(), expect, rel_tol=1e-6)


def test_sequence_scores_and_counts():
    assert torch.allclose(L.sequence_scores(LOGP, MASK),
                          torch.tensor([(math.log(0.5) + math.log(0.25)) / 2,
                                        (math.log(0.8) + math.log(0.1) + math.log(0.5)) / 3]))
    labels = torch.tensor([[I, 1, 2, I], [I, I, 3, 4]])
    assert L.count_targets(labels).item() == 4
    assert L.count_targets(labels, torch.tensor([True, False])).item() == 2


def test_losses_have_gradients_to_logits():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    labels = torch.tensor([[I, 1, 2, 3], [I, 4, 0, I]])
    logp, mask = L.token_logprobs(logits, labels)
    total = (L.nll_sum(logp, mask) + L.unlikelihood_sum(logp, mask, NEG)
             + L.contrastive_sum(logp, mask, NEG, torch.tensor([0, 0])))
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
