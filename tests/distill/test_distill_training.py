"""Training: what is trainable in each NAT stage and what the optimiser holds, neg frozen
bit-for-bit, every method lowering its own loss, gradients reaching every trainable
parameter in one step, GQA, resuming from a finished stage 1."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from distill import data as D
from distill.adapters import NEG, POS, adapter_mode
from distill.models import load_tokenizer
from distill.baselines import TRAINERS, build_baseline
from distill.nat.trainer import NATConfig, build_nat_stage1, build_nat_stage2, train_nat
from distill.run import load_base

FAST = dict(max_length=64, per_device_train_batch_size=4, learning_rate=2e-2,
            lora_dropout=0.0, logging_steps=1, disable_tqdm=True, seed=0)


def _cfg(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path / "trainer"), **{**FAST, **kw})


def _optimizer_params(trainer) -> set[int]:
    trainer.create_optimizer()
    return {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}


def _named(model, pred) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters() if pred(n, p)}


def test_nat_stages_train_only_their_parameters(tiny_model, export_file, tmp_path):
    records = D.read_export(export_file)
    tok = load_tokenizer(tiny_model)
    cfg = _cfg(NATConfig, tmp_path, gate_width=16, max_steps=2)
    model = load_base(tiny_model, cfg)

    t1, _ = build_nat_stage1(model, D.select(records, ("negative",)), tok, cfg)
    trainable = _named(t1.model, lambda n, p: p.requires_grad)
    assert trainable and all(".neg." in n and ("lora_A" in n or "lora_B" in n)
                             for n in trainable.values())
    assert _optimizer_params(t1) == set(trainable)
    t1.train()

    t2, _ = build_nat_stage2(t1.model, D.select(records, ("positive",)), tok, cfg)
    trainable = _named(t2.model, lambda n, p: p.requires_grad)
    expected = _named(t2.model, lambda n, p: ".pos." in n)
    assert set(trainable) == set(expected)
    assert {n.split(".")[-3] for n in trainable.values()} == {
        "lora_A", "lora_B", "lora_gate_query", "lora_gate_key", "lora_gate_value_in",
        "lora_gate_value_out"}
    assert _optimizer_params(t2) == set(trainable)
    neg_before = {n: p.detach().clone() for n, p in t2.model.named_parameters() if ".neg." in n}
    t2.train()
    for n, p in t2.model.named_parameters():
        if ".neg." in n:
            assert torch.equal(p, neg_before[n]), n
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in t2.model.named_parameters()
               if "lora_gate_value_out.pos" in n), "the gates were not trained"


def _loss_on(trainer, batch):
    trainer.model.eval()
    with adapter_mode(trainer.model, trainer.mode), torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def _fixed_batch(trainer):
    rows = [trainer.train_dataset[i] for i in range(min(8, len(trainer.train_dataset)))]
    return trainer.data_collator(rows)


@pytest.mark.parametrize("method", ["sft", "mix", "nt", "ul", "cl"])
def test_every_baseline_lowers_its_loss(method, tiny_model, export_file, tmp_path):
    cls = TRAINERS[method][1]
    trainer, _ = build_baseline(method, D.read_export(export_file), tiny_model,
                                _cfg(cls, tmp_path, max_steps=12))
    batch = _fixed_batch(trainer)
    before = _loss_on(trainer, batch)
    trainer.train()
    after = _loss_on(trainer, batch)
    assert after < before - 0.02, (method, before, after)
    assert len(trainer.curve.points) == 12


def test_nat_lowers_its_loss_in_both_stages(tiny_model, export_file, tmp_path):
    records = D.read_export(export_file)
    tok = load_tokenizer(tiny_model)
    cfg = _cfg(NATConfig, tmp_path, gate_width=16, max_steps=12)
    model = load_base(tiny_model, cfg)
    for build, label in ((build_nat_stage1, "negative"), (build_nat_stage2, "positive")):
        trainer, _ = build(model, D.select(records, (label,)), tok, cfg)
        batch = _fixed_batch(trainer)
        before = _loss_on(trainer, batch)
        trainer.train()
        assert _loss_on(trainer, batch) < before - 0.02, label
        model = trainer.model


@pytest.mark.parametrize("method", ["mix", "nt", "ul", "cl"])
def test_one_forward_pass_reaches_every_trainable_parameter(method, tiny_model, export_file,
                                                           tmp_path):
    """DDP needs a gradient for every trainable parameter every step: positives and
    negatives are in the same batch and the same forward pass."""
    trainer, _ = build_baseline(method, D.read_export(export_file), tiny_model,
                                _cfg(TRAINERS[method][1], tmp_path))
    batch = _fixed_batch(trainer)
    assert batch["is_negative"].any() and (~batch["is_negative"]).any()
    trainer.model.train()
    trainer.compute_loss(trainer.model, batch).backward()
    missing = [n for n, p in trainer.model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_nat_on_gqa_model_and_resume_from_stage1(gqa_model, export_file, tmp_path):
    cfg = _cfg(NATConfig, tmp_path, gate_width=16, max_steps=2)
    first = train_nat(export_file, gqa_model, tmp_path / "a", cfg)
    assert set(first) == {NEG, POS}
    for f in ("adapter_config.json", "adapter_model.safetensors", "training_args.json",
              "loss_curve.json", "loss_curve.png"):
        assert (tmp_path / "a" / NEG / f).is_file() and (tmp_path / "a" / POS / f).is_file()
    v = load_file(str(tmp_path / "a" / POS / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_gate_value_out.weight"
    assert v[key].shape == (32, 16)  # GQA: v_proj's real output width

    second = train_nat(export_file, gqa_model, tmp_path / "b", cfg, neg=tmp_path / "a")
    assert set(second) == {POS}  # stage 1 skipped
    a = load_file(str(tmp_path / "a" / NEG / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / NEG / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from distill.student import load_student
    model, _, _, _ = load_student(gqa_model, tmp_path / "b")
    state = {n: p for n, p in model.named_parameters() if ".neg." in n}
    assert len(state) == len(a)
    for k, t in a.items():
        name = k.replace(".lora_A.weight", ".lora_A.neg.weight").replace(".lora_B.weight", ".lora_B.neg.weight")
        assert torch.equal(state[name], t), k


def test_resume_rejects_unfinished_stage1(tiny_model, export_file, tmp_path):
    from curator.errors import CuratorError
    (tmp_path / "half" / NEG).mkdir(parents=True)
    with pytest.raises(CuratorError, match="no finished stage-1 adapter"):
        train_nat(export_file, tiny_model, tmp_path / "o", _cfg(NATConfig, tmp_path),
                  neg=tmp_path / "half")


def _stage2_weights(tiny_model, records, tmp_path, **kw):
    tok = load_tokenizer(tiny_model)
    cfg = _cfg(NATConfig, tmp_path, gate_width=16, max_steps=2, optim="sgd", learning_rate=0.5,
               max_grad_norm=0.0, train_sampling_strategy="sequential", **kw)
    model = load_base(tiny_model, cfg)
    t1, _ = build_nat_stage1(model, D.select(records, ("negative",)), tok, cfg)
    t1.train()
    t2, _ = build_nat_stage2(t1.model, D.select(records, ("positive",)), tok, cfg)
    t2.train()
    return t2, {n: p.detach().float().clone() for n, p in t2.model.named_parameters()
                if p.requires_grad}


def test_nat_with_activation_checkpointing_matches(tiny_model, export_file, tmp_path):
    """Recomputation in backward happens inside the "nat" mode: same weights as without."""
    records = D.read_export(export_file)
    _, plain = _stage2_weights(tiny_model, records, tmp_path)
    t, ckpt = _stage2_weights(tiny_model, records, tmp_path, activation_checkpointing=True)
    assert t.model.is_activation_checkpointing
    assert plain.keys() == ckpt.keys()
    assert all(torch.allclose(plain[k], ckpt[k], atol=1e-6) for k in plain)


def test_nat_trains_in_bf16(tiny_model, export_file, tmp_path):
    t, w = _stage2_weights(tiny_model, D.read_export(export_file), tmp_path, bf16=True)
    layer = t.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert all(torch.isfinite(v).all() for v in w.values())
    assert all(p["loss"] == p["loss"] for p in t.curve.points)  # no NaN


def test_interrupted_nat_resumes_to_the_same_weights(tiny_model, export_file, tmp_path,
                                                     monkeypatch):
    """Stage 1 finished and stage 2 checkpointed at step 2, killed at step 3: --resume
    keeps stage 1, continues stage 2 from its checkpoint, and ends where an uninterrupted
    run ends."""
    from distill.run import DistillTrainer
    cfg = _cfg(NATConfig, tmp_path, gate_width=16, max_steps=4, save_strategy="steps",
               save_steps=2, train_sampling_strategy="sequential")
    train_nat(export_file, tiny_model, tmp_path / "whole", cfg)

    real_step = DistillTrainer.training_step

    def dying_step(self, model, inputs, num_items_in_batch=None):
        if self.mode == "nat" and self.state.global_step == 3:
            raise KeyboardInterrupt
        return real_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(DistillTrainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_nat(export_file, tiny_model, tmp_path / "cut", cfg)
    assert (tmp_path / "cut" / NEG / "adapter_model.safetensors").is_file()
    assert (tmp_path / "cut" / POS / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(DistillTrainer, "training_step", real_step)

    res = train_nat(export_file, tiny_model, tmp_path / "cut", cfg, resume=True)
    assert set(res) == {POS} and res[POS].steps == 4
    assert [p["step"] for p in res[POS].curve] == [1, 2, 3, 4]
    assert not (tmp_path / "cut" / POS / "checkpoints").exists()
    for stage in (NEG, POS):
        a = load_file(str(tmp_path / "whole" / stage / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "cut" / stage / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), stage
