"""The NAT layer on peft: gate math, identity at initialisation, modes, widths under
grouped-query attention, dtypes, save/load in peft's format, and the peft internals it
relies on."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill import adapters as A
from distill.models import attach_lora, load_model, load_peft


def _nat_model(path, width=16, dtype="float32", randomise=True, seed=0):
    """Base + neg + pos + gates, with neg (and optionally pos/gates) randomised so that
    every mode computes something different."""
    torch.manual_seed(seed)
    model = load_model(path, dtype=dtype)
    model = attach_lora(model, A.NEG, 4, 8, 0.0)
    model = attach_lora(model, A.POS, 4, 8, 0.0)
    A.add_gates(model, A.POS, A.GateConfig(width=width))
    model.eval()
    if randomise:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".neg." in n or ".pos." in n:
                    p.normal_(0, 0.2)
    return model


def _logits(model, mode, ids):
    with A.adapter_mode(model, mode), torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.randint(5, 2000, (2, 12), generator=torch.Generator().manual_seed(0))


def test_peft_internals_the_extension_relies_on():
    """Fails loudly (naming what broke) if a peft upgrade changes a hooked internal."""
    A.check_peft_extension()
    from peft.tuners.lora import layer as lora_layer
    from peft.tuners.lora.model import LoraModel
    assert issubclass(A.GatedLoraLinear, lora_layer.Linear)
    assert set(A.GatedLoraLinear.gate_parts) <= set(A.GatedLoraLinear.adapter_layer_names)
    assert "_custom_modules" in LoraModel._create_new_module.__code__.co_names or \
        "_custom_modules" in __import__("inspect").getsource(LoraModel._create_new_module)


def test_integration_gate_formula_by_hand():
    # width 1, features 1: q = x, k = h, V(h) = value_out(gelu(value_in h))
    def lin(w, b=None):
        m = nn.Linear(1, 1, bias=b is not None)
        with torch.no_grad():
            m.weight.fill_(w)
            if b is not None:
                m.bias.fill_(b)
        return m
    x, base, hp, hn = (torch.tensor([[v]]) for v in (1.0, 0.5, 2.0, -1.0))
    y = A.integration_gate(x, base, hp, hn, lin(1.0), lin(1.0), lin(1.0, 0.0), lin(3.0, 0.0),
                           beta=0.5, temperature=2.0)
    a_neg = math.exp(-1 / 2) / (math.exp(2 / 2) + math.exp(-1 / 2))
    alpha = (2 * a_neg - 1) * 0.5
    gelu = lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    expect = 0.5 + (1 - alpha) * 3 * gelu(2.0) + alpha * 3 * gelu(-1.0)
    assert math.isclose(y.item(), expect, rel_tol=1e-6)


def test_lowrank_gate_equals_reference():
    """The layer's factored computation is the METHOD.md formula, to rounding."""
    torch.manual_seed(0)
    d_in, d_out, r, w = 12, 6, 3, 5
    x, base = torch.randn(2, 7, d_in, dtype=torch.float64), torch.randn(2, 7, d_out, dtype=torch.float64)
    a_pos, a_neg = torch.randn(r, d_in, dtype=torch.float64), torch.randn(r, d_in, dtype=torch.float64)
    b_pos, b_neg = torch.randn(d_out, r, dtype=torch.float64), torch.randn(d_out, r, dtype=torch.float64)
    q, k = nn.Linear(d_in, w, bias=False).double(), nn.Linear(d_out, w, bias=False).double()
    v_in, v_out = nn.Linear(d_out, w).double(), nn.Linear(w, d_out).double()
    h_pos, h_neg = base + x @ a_pos.T @ b_pos.T, base + x @ a_neg.T @ b_neg.T
    ref = A.integration_gate(x, base, h_pos, h_neg, q, k, v_in, v_out, beta=0.4, temperature=0.7)
    got = A.integration_gate_lowrank(x, base, x @ a_pos.T, x @ a_neg.T, b_pos, b_neg, q, k,
                                     v_in, v_out, beta=0.4, temperature=0.7)
    assert torch.allclose(got, ref, atol=1e-12)


def test_recomputed_gate_gives_same_gradients(tiny_model):
    grads = {}
    for on in (False, True):
        model = _nat_model(tiny_model, seed=3)
        model.train()
        A.set_gate_recompute(model, on)
        A.train_only(model, [A.POS])
        with A.adapter_mode(model, A.NAT):
            model(input_ids=IDS).logits.square().mean().backward()
        grads[on] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(torch.allclose(grads[True][n], grads[False][n], atol=1e-6) for n in grads[False])
    assert any(g.abs().sum() > 0 for g in grads[True].values())


def test_mixing_weight_bounded_by_beta():
    q = nn.Linear(8, 4, bias=False)
    k = nn.Linear(8, 4, bias=False)
    x, hp, hn = torch.randn(3, 8) * 50, torch.randn(3, 8) * 50, torch.randn(3, 8) * 50
    v_in, v_out = nn.Linear(8, 4), nn.Linear(4, 8)
    base = torch.zeros(3, 8)
    y_pos = v_out(nn.functional.gelu(v_in(hp)))
    y_neg = v_out(nn.functional.gelu(v_in(hn)))
    y = A.integration_gate(x, base, hp, hn, q, k, v_in, v_out, beta=0.3, temperature=1.0)
    # y = (1 - alpha) y_pos + alpha y_neg  =>  alpha per row, must lie in [-0.3, 0.3]
    alpha = ((y - y_pos) * (y_neg - y_pos)).sum(-1) / ((y_neg - y_pos) ** 2).sum(-1)
    assert (alpha.abs() <= 0.3 + 1e-5).all()


def test_gate_is_identity_at_initialisation(tiny_model):
    model = _nat_model(tiny_model, randomise=False)
    with torch.no_grad():  # a trained neg and a non-zero pos: still identity (V out = 0)
        for n, p in model.named_parameters():
            if ".neg." in n or ("lora_B.pos" in n):
                p.normal_(0, 0.2)
    base = _logits(model, A.BASE, IDS)
    assert not torch.equal(base, _logits(model, A.NEG, IDS))
    assert torch.equal(_logits(model, A.NAT, IDS), base)


def test_modes_match_plain_peft_and_restore(tiny_model):
    model = _nat_model(tiny_model)
    from transformers import AutoModelForCausalLM
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    assert torch.equal(_logits(model, A.BASE, IDS), plain(input_ids=IDS).logits.detach())
    # mode "neg" == peft's own forward with the neg adapter active
    model.set_adapter(A.NEG)
    with torch.no_grad():
        peft_neg = model(input_ids=IDS).logits
    assert torch.allclose(_logits(model, A.NEG, IDS), peft_neg, atol=1e-6)
    outs = {m: _logits(model, m, IDS) for m in (A.BASE, A.NEG, A.POS, A.NAT)}
    for a in outs:
        for b in outs:
            assert a == b or not torch.allclose(outs[a], outs[b])
    with A.adapter_mode(model, A.NAT):
        with A.adapter_mode(model, A.NEG):
            assert {layer.mode for layer in A.gated_layers(model)} == {A.NEG}
        assert {layer.mode for layer in A.gated_layers(model)} == {A.NAT}
    assert {layer.mode for layer in A.gated_layers(model)} == {None}
    with pytest.raises(ValueError, match="no adapter of that name"):
        A.set_mode(model, "nope")


def test_gqa_gate_sized_from_real_widths(gqa_model):
    model = _nat_model(gqa_model)
    layer = model.base_model.model.model.layers[0].self_attn.v_proj
    assert (layer.in_features, layer.out_features) == (64, 32)
    assert layer.lora_gate_query[A.POS].in_features == 64
    assert layer.lora_gate_key[A.POS].in_features == 32
    assert layer.lora_gate_value_out[A.POS].out_features == 32
    out = _logits(model, A.NAT, IDS)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_bases(tiny_model, dtype):
    model = _nat_model(tiny_model, dtype=dtype)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.base_layer.weight.dtype == getattr(torch, dtype)
    # adapters and gates are kept in float32 (peft's autocast), outputs in the base dtype
    assert layer.lora_gate_query[A.POS].weight.dtype == torch.float32
    for mode in (A.NAT, A.POS, A.NEG):
        out = _logits(model, mode, IDS)
        assert out.dtype == getattr(torch, dtype) and torch.isfinite(out).all()
    ref = _logits(_nat_model(tiny_model), A.NAT, IDS)
    assert torch.allclose(_logits(model, A.NAT, IDS).float(), ref, atol=0.1)


def test_save_load_reproduces_logits_in_every_mode(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from distill.student import load_student
    model = _nat_model(tiny_model)
    A.save_adapter(model, A.NEG, tmp_path / "nat" / "neg")
    A.save_adapter(model, A.POS, tmp_path / "nat" / "pos")
    assert (tmp_path / "nat" / "pos" / A.GATE_FILE).is_file()
    loaded, _, _, modes = load_student(tiny_model, tmp_path / "nat")
    assert modes[0] == A.NAT
    for mode in (A.NAT, A.POS, A.NEG, A.BASE):
        assert torch.equal(_logits(loaded, mode, IDS), _logits(model, mode, IDS)), mode
    # Standard peft loads each adapter directory as a plain LoRA model.
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)),
                                      str(tmp_path / "nat" / "pos"))
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=IDS).logits, _logits(model, A.POS, IDS), atol=1e-6)
    # the gate loads under another adapter name too (peft's key mapping, no names baked in)
    other = load_peft(load_model(tiny_model), tmp_path / "nat" / "neg", A.NEG)
    A.load_adapter(other, tmp_path / "nat" / "pos", "pos2")
    assert "pos2" in A.gated_layers(other)[0].lora_gate_query


def test_train_only_selects_adapter_parameters(tiny_model):
    model = _nat_model(tiny_model)
    names = A.train_only(model, [A.POS])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(names)
    assert all(".pos." in n for n in names)
    kinds = {n.split(".")[-3] for n in names}
    assert kinds == {"lora_A", "lora_B", "lora_gate_query", "lora_gate_key",
                     "lora_gate_value_in", "lora_gate_value_out"}
