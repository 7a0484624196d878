"""NCE's math on small tensors, away from any model: beta's range and its zero, the loss
against a hand computation, and the chunked distillation term against the unchunked
reference (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.nce.loss import (calibration_beta, distill_positions, kl_divergence, kl_rows,
                              nce_head_loss, nce_loss, nce_sums, soft_cross_entropy)

LN2, LN3 = math.log(2), math.log(3)


def test_beta_in_zero_one_and_zero_when_distributions_coincide():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 7, 11, generator=g) * 4
    q = torch.randn(5, 7, 11, generator=g) * 4
    mask = torch.rand(5, 7, generator=g) > 0.3
    kl = kl_divergence(p, q)
    assert (kl >= 0).all()
    beta = calibration_beta(kl, mask)
    assert ((beta >= 0) & (beta < 1)).all() and (beta > 0).all()
    # identical teacher modes: KL is exactly 0, so is beta
    assert torch.equal(kl_divergence(p, p), torch.zeros(5, 7))
    assert torch.equal(calibration_beta(kl_divergence(p, p), mask), torch.zeros(5))
    # a row without positions gets 0, not NaN
    assert calibration_beta(kl, torch.zeros(5, 7, dtype=torch.bool)).eq(0).all()


def test_beta_stays_below_one_for_huge_kl():
    """tanh rounds to exactly 1.0 in float32 from about 9; beta must stay < 1."""
    kl = torch.tensor([[0.5, 30.0], [200.0, 1e6]])
    beta = calibration_beta(kl, torch.ones(2, 2, dtype=torch.bool))
    assert (beta < 1).all() and beta[1] > 0.999
    assert beta[0] == pytest.approx(math.tanh(15.25))


def _example():
    """Two samples, vocabulary of 2, logits chosen so that everything is closed-form:
    sample 0 has two target positions, teacher p_nat = (3/4, 1/4) at both and p_neg
    uniform, so KL(p_neg || p_nat) = ln(4/3) / 2 and beta_0 = tanh(ln(4/3) / 2) = 1/7;
    sample 1 has one position where "neg" and "nat" agree, so beta_1 = 0."""
    student = torch.tensor([[[0.0, 0.0], [LN3, 0.0]],
                            [[0.0, 0.0], [5.0, -5.0]]])       # sample 1, pos 1: padding
    nat = torch.tensor([[[LN3, 0.0], [LN3, 0.0]],
                        [[0.0, LN3], [1.0, 2.0]]])
    neg = torch.tensor([[[0.0, 0.0], [0.0, 0.0]],
                        [[0.0, LN3], [9.0, -9.0]]])
    targets = torch.tensor([[0, 1], [0, 0]])
    mask = torch.tensor([[True, True], [True, False]])
    return student, nat, neg, targets, mask


def test_loss_equals_hand_computation():
    student, nat, neg, targets, mask = _example()
    beta = calibration_beta(kl_divergence(neg, nat), mask)
    assert beta.tolist() == pytest.approx([1 / 7, 0.0], abs=1e-6)

    # by hand: CE per target token -log q(target): ln 2, ln 4 (q = (3/4, 1/4), target 1), ln 2
    ce_mean = (LN2 + 2 * LN2 + LN2) / 3
    # softCE(p_nat, q): ln 2 against a uniform q; H(3/4, 1/4) = 2 ln 2 - (3/4) ln 3 where
    # q = p; ln 2 again in sample 1; weights 0.5 + beta = 9/14, 9/14, 1/2
    kd_mean = (9 / 14 * LN2 + 9 / 14 * (2 * LN2 - 0.75 * LN3) + 0.5 * LN2) / 3
    lam = 0.5
    expected = (1 - lam) * ce_mean + lam * kd_mean

    ce_sum, kd_sum = nce_sums(student, nat, targets, mask, mask, beta)
    assert ce_sum.item() == pytest.approx(3 * ce_mean, rel=1e-6)
    assert kd_sum.item() == pytest.approx(3 * kd_mean, rel=1e-6)
    assert nce_loss(ce_sum, kd_sum, 3, 3, lam).item() == pytest.approx(expected, rel=1e-6)
    # lambda = 0.2 and 1: the two terms really are mixed by lambda
    assert nce_loss(ce_sum, kd_sum, 3, 3, 0.2).item() == pytest.approx(0.8 * ce_mean + 0.2 * kd_mean, rel=1e-6)
    assert nce_loss(ce_sum, kd_sum, 3, 3, 1.0).item() == pytest.approx(kd_mean, rel=1e-6)

    # the chunked path on hidden states: with an identity output embedding the hidden
    # states are the logits; weights carry (1 - lambda) / N and lambda (0.5 + beta_i) / N
    sel = mask
    rows = torch.tensor([0, 0, 1])
    h_s = student[sel].clone().requires_grad_(True)
    ce_w = torch.full((3,), (1 - lam) / 3)
    kd_w = (0.5 + beta)[rows] * lam / 3
    for chunk in (1, 2, 3):
        loss, ce_tok, kd_tok = nce_head_loss(h_s, nat[sel], torch.eye(2), None, targets[sel],
                                             ce_w, kd_w, chunk=chunk)
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        assert ce_tok.tolist() == pytest.approx([LN2, 2 * LN2, LN2], rel=1e-6)
        assert kd_tok.tolist() == pytest.approx([LN2, 2 * LN2 - 0.75 * LN3, LN2], rel=1e-6)
    assert kl_rows(neg[sel], nat[sel], torch.eye(2), None, 2).tolist() == \
        pytest.approx([math.log(4 / 3) / 2] * 2 + [0.0], abs=1e-6)


def test_temperature_divides_both_distributions():
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    got = soft_cross_entropy(t, s, temperature=2.0)
    p, log_q = torch.softmax(t / 2, -1), torch.log_softmax(s / 2, -1)
    assert torch.allclose(got, -(p * log_q).sum(-1))
    assert not torch.allclose(got, soft_cross_entropy(t, s))


def test_positions_completion_by_default_all_attended_behind_the_switch():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, 3]])
    att = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    ce, kd = distill_positions(labels, att)
    assert torch.equal(ce, kd)
    assert ce.tolist() == [[False, True, True, False], [True, True, True, True]]
    ce, kd = distill_positions(labels, att, all_tokens=True)
    assert kd.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert (kd | ~ce).all() and kd.sum() > ce.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_distillation_term_agrees_with_unchunked(temperature):
    """Random hidden states and a random head: the chunked loss, its per-row values and
    the gradient with respect to the student's hidden states equal the reference computed
    on full logits with autograd, for chunks that do and do not divide the rows."""
    g = torch.Generator().manual_seed(2)
    n, d, v = 23, 8, 50
    weight, bias = torch.randn(v, d, generator=g), torch.randn(v, generator=g)
    h_t = torch.randn(n, d, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    ce_w = torch.rand(n, generator=g) * (torch.rand(n, generator=g) > 0.2)
    kd_w = torch.rand(n, generator=g)
    h0 = torch.randn(n, d, generator=g)

    ref_h = h0.clone().requires_grad_(True)
    zs, zt = ref_h @ weight.T + bias, h_t @ weight.T + bias
    ce = torch.nn.functional.cross_entropy(zs, targets, reduction="none")
    kd = soft_cross_entropy(zt, zs, temperature)
    ref = (ce_w * ce).sum() + (kd_w * kd).sum()
    ref.backward()

    for chunk in (1, 5, n, 1000):
        h = h0.clone().requires_grad_(True)
        loss, ce_tok, kd_tok = nce_head_loss(h, h_t, weight, bias, targets, ce_w, kd_w,
                                             temperature, chunk)
        loss.backward()
        assert torch.allclose(loss, ref, rtol=1e-5), chunk
        assert torch.allclose(ce_tok, ce.detach(), rtol=1e-5, atol=1e-6)
        assert torch.allclose(kd_tok, kd.detach(), rtol=1e-5, atol=1e-6)
        assert torch.allclose(h.grad, ref_h.grad, rtol=1e-4, atol=1e-6), chunk


def test_chunked_loss_refuses_a_trainable_head():
    from curator.errors import CuratorError
    w = torch.randn(5, 3, requires_grad=True)
    with pytest.raises(CuratorError, match="frozen output embedding"):
        nce_head_loss(torch.randn(2, 3), torch.randn(2, 3), w, None, torch.tensor([0, 1]),
                      torch.ones(2), torch.ones(2))
