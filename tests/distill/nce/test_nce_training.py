"""NCE on the tiny model: the trainer's loss against a naive full-logits computation,
what is trainable, the NAT adapters untouched, one copy of the base, precomputed and
online beta, chunking, the global normalisation, and the memory the loss keeps."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from distill import data as D
from distill.adapters import NAT, NEG, POS, adapter_mode
from distill.collate import IGNORE
from distill.nce import STUDENT, BetaStore, build_nce


def _build(export_file, tiny, nat_dir, cfg):
    trainer, _ = build_nce(D.read_export(export_file), tiny, nat_dir, cfg)
    return trainer


def _batch(trainer, n=6, start=0, betas=None):
    rows = [dict(trainer.train_dataset[i]) for i in range(start, start + n)]
    if betas is not None:
        for r in rows:
            r["beta"] = betas[r["sample_id"]]
    return trainer.data_collator(rows)


def _eval_loss(trainer, batch):
    """compute_loss as the evaluation path runs it (this micro-batch's own counts)."""
    trainer.model.eval()
    with adapter_mode(trainer.model, STUDENT):
        return trainer.compute_loss(trainer.model, batch)


def _full_logits(model, batch, mode):
    with adapter_mode(model, mode):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _naive_loss(model, batch, lam, temperature=1.0, all_tokens=False):
    """METHOD.md's loss written out on full logits from three separate passes."""
    model.eval()
    with torch.no_grad():
        nat, neg = _full_logits(model, batch, NAT)[:, :-1], _full_logits(model, batch, NEG)[:, :-1]
    student = _full_logits(model, batch, STUDENT)[:, :-1]
    targets = batch["labels"][:, 1:]
    ce_mask = targets.ne(IGNORE)
    att = batch["attention_mask"].bool()
    kd_mask = (att[:, 1:] & att[:, :-1]) if all_tokens else ce_mask
    lp_neg, lp_nat = F.log_softmax(neg, -1), F.log_softmax(nat, -1)
    kl = (lp_neg.exp() * (lp_neg - lp_nat)).sum(-1)
    beta = torch.tanh((kl * kd_mask).sum(1) / kd_mask.sum(1))
    ce = F.cross_entropy(student.transpose(1, 2), targets.clamp(min=0), reduction="none")
    p = F.softmax(nat / temperature, -1)
    soft_ce = -(p * F.log_softmax(student / temperature, -1)).sum(-1)
    kd = ((0.5 + beta)[:, None] * soft_ce)[kd_mask].mean()
    return (1 - lam) * ce[ce_mask].mean() + lam * kd, beta


@pytest.mark.parametrize("kw", [dict(), dict(nce_lambda=0.3, nce_temperature=2.0),
                                dict(distill_all_tokens=True, nce_chunk_tokens=7)])
def test_trainer_loss_equals_naive_full_logits_loss(kw, tiny, nat_dir, export_file, nce_config):
    trainer = _build(export_file, tiny, nat_dir, nce_config(**kw))
    batch = _batch(trainer)
    trainer.model.train()  # give the student nonzero weights first (lora_B starts at 0)
    for p in trainer.model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    got = _eval_loss(trainer, batch)
    want, beta = _naive_loss(trainer.model, batch, trainer.args.nce_lambda,
                             trainer.args.nce_temperature, trainer.args.distill_all_tokens)
    assert (beta > 0).all() and (beta < 1).all()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    g_got = torch.autograd.grad(got, [p for p in trainer.model.parameters() if p.requires_grad])
    want, _ = _naive_loss(trainer.model, batch, trainer.args.nce_lambda,
                          trainer.args.nce_temperature, trainer.args.distill_all_tokens)
    g_want = torch.autograd.grad(want, [p for p in trainer.model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(g_got, g_want))


def test_beta_is_zero_when_the_teacher_modes_coincide(tiny, nat_dir, export_file, nce_config):
    """With neg's B matrices and the gates' value outputs zeroed, "neg" and "nat" both
    compute the base model exactly: every beta is exactly 0 (and > 0 before)."""
    trainer = _build(export_file, tiny, nat_dir, nce_config())
    batch = _batch(trainer)
    trainer.model.eval()
    beta, mean_kl, n = trainer.teacher_betas(batch)
    assert ((beta > 0) & (beta < 1)).all() and (n > 0).all()
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if ".lora_B.neg." in name or ".lora_gate_value_out.pos." in name:
                p.zero_()
    beta, mean_kl, _ = trainer.teacher_betas(batch)
    assert torch.equal(beta, torch.zeros_like(beta)) and torch.equal(mean_kl, torch.zeros_like(mean_kl))


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _saved_as_param_names(saved: dict, adapter: str) -> dict[str, torch.Tensor]:
    """peft's saved keys (``...lora_A.weight``) as parameter names (``...lora_A.neg.weight``)."""
    out = {}
    for k, t in saved.items():
        head, tail = k.rsplit(".", 1)
        out[f"{head}.{adapter}.{tail}"] = t
    return out


def test_only_the_student_trains_and_nat_adapters_stay_bit_identical(tiny, nat_dir, export_file,
                                                                     nce_config):
    trainer = _build(export_file, tiny, nat_dir, nce_config(max_steps=4))
    model = trainer.model
    trainable = _trainable(model)
    assert trainable and all(f".{STUDENT}." in n and (".lora_A." in n or ".lora_B." in n)
                             for n in trainable)
    assert trainable == {n for n, _ in model.named_parameters() if f".{STUDENT}." in n}
    trainer.create_optimizer()
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in model.named_parameters() if n in trainable}
    student_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}

    trainer.train()
    params = dict(model.named_parameters())
    for adapter in (NEG, POS):
        saved = _saved_as_param_names(load_file(str(nat_dir / adapter / "adapter_model.safetensors")), adapter)
        mine = {n: p for n, p in params.items() if f".{adapter}." in n}
        assert saved.keys() == mine.keys()
        for n, t in saved.items():
            assert torch.equal(mine[n].detach(), t), n
    assert any(not torch.equal(params[n], t) for n, t in student_before.items()), "student not trained"
    assert _trainable(model) == trainable


def test_trainable_set_is_asserted_not_trusted(tiny, nat_dir, export_file, nce_config):
    """peft's set_adapter makes the adapter it activates trainable (and freezes the
    student): the next training step refuses to run."""
    trainer = _build(export_file, tiny, nat_dir, nce_config(max_steps=2))
    trainer.model.set_adapter(NEG)
    assert any(".neg." in n for n in _trainable(trainer.model))
    with pytest.raises(RuntimeError, match="trainable parameters changed"):
        trainer.train()


def _models_alive() -> list:
    import warnings

    from transformers import PreTrainedModel
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some lazy torch objects warns
        warnings.simplefilter("ignore")
        return [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]


def test_one_model_instance_serves_teacher_and_student(tiny, nat_dir, export_file, nce_config):
    from distill.models import load_model
    before = {id(m) for m in _models_alive()}
    trainer = _build(export_file, tiny, nat_dir, nce_config())
    new = [m for m in _models_alive() if id(m) not in before]
    # the causal LM and its inner decoder, sharing one set of weights
    assert sorted(type(m).__name__ for m in new) == ["LlamaForCausalLM", "LlamaModel"]
    assert len({m.get_input_embeddings().weight.data_ptr() for m in new}) == 1

    base_numel = sum(p.numel() for p in load_model(tiny).parameters())
    frozen = [p for n, p in trainer.model.named_parameters() if ".lora_" not in n]
    assert sum(p.numel() for p in frozen) == base_numel
    assert len({p.data_ptr() for p in frozen}) == len(frozen)

    embed = trainer.model.get_input_embeddings()
    calls = []
    hook = embed.register_forward_hook(lambda m, i, o: calls.append(id(m)))
    try:
        trainer.model.train()
        with adapter_mode(trainer.model, STUDENT):
            trainer.compute_loss(trainer.model, _batch(trainer))  # online: nat, neg, student
    finally:
        hook.remove()
    assert calls == [id(embed)] * 3


def test_precomputed_and_online_beta_give_the_same_loss(tiny, nat_dir, export_file, nce_config,
                                                        tmp_path):
    trainer = _build(export_file, tiny, nat_dir, nce_config(per_device_train_batch_size=5))
    store = BetaStore(tmp_path / "run", {"teacher": "test"})
    betas = trainer.precompute_betas(store)
    assert set(betas) == set(trainer.train_dataset["sample_id"])
    assert all(0 < b < 1 for b in betas.values())
    assert len(store.load()) == len(betas)

    online, pre = _batch(trainer, 6, start=3), _batch(trainer, 6, start=3, betas=betas)
    assert "beta" not in online and "beta" in pre
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    l_on = _eval_loss(trainer, online)
    g_on = torch.autograd.grad(l_on, trainable)
    l_pre = _eval_loss(trainer, pre)
    g_pre = torch.autograd.grad(l_pre, trainable)
    assert l_pre.item() == pytest.approx(l_on.item(), rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(g_on, g_pre))
    # control: the betas matter (0 everywhere gives another loss)
    zero = _batch(trainer, 6, start=3, betas={k: 0.0 for k in betas})
    assert abs(_eval_loss(trainer, zero).item() - l_on.item()) > 1e-4

    # the online path records the same betas it trained with
    trainer.model.train()
    with adapter_mode(trainer.model, STUDENT):
        trainer.compute_loss(trainer.model, online)
    ids = trainer.train_dataset["sample_id"]
    for row, (b, _, _) in trainer.seen_betas.items():
        assert b == pytest.approx(betas[ids[row]], rel=1e-6)


def test_chunked_and_unchunked_trainer_losses_agree(tiny, nat_dir, export_file, nce_config):
    batch = None
    losses = []
    for chunk in (0, 100000, 3):
        trainer = _build(export_file, tiny, nat_dir, nce_config(nce_chunk_tokens=chunk))
        batch = batch or _batch(trainer)
        losses.append(_eval_loss(trainer, batch).item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[2] == pytest.approx(losses[0], rel=1e-6)


def _saved_bytes(fn, params) -> list[tuple[torch.Size, int]]:
    """(shape, bytes of its storage) of every tensor autograd saves for backward while
    ``fn`` runs, except views of ``params`` (the frozen weights: no extra memory)."""
    own = {p.untyped_storage().data_ptr() for p in params}
    saved = []

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            saved.append((t.shape, st.nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


def test_no_full_vocabulary_tensor_is_kept_for_backward(tiny, nat_dir, export_file, nce_config):
    """What autograd saves for the backward pass of one step: no vocabulary-wide tensor
    as large as one float32 distribution per sequence (the naive loss keeps several of
    [positions, vocab]); views of the frozen weights cost nothing and are not counted."""
    trainer = _build(export_file, tiny, nat_dir, nce_config(nce_chunk_tokens=16))
    batch = _batch(trainer)
    vocab = trainer.model.get_output_embeddings().weight.shape[0]
    positions = int(batch["labels"][:, 1:].ne(IGNORE).sum())
    assert positions > 16
    params = list(trainer.model.parameters())

    def ours():
        trainer.model.train()
        with adapter_mode(trainer.model, STUDENT):
            trainer.compute_loss(trainer.model, batch)

    one_per_sequence = batch["input_ids"].shape[0] * vocab * 4
    saved = _saved_bytes(ours, params)
    assert saved and not [s for s in saved if vocab in s[0] and s[1] >= one_per_sequence]
    naive = _saved_bytes(lambda: _naive_loss(trainer.model, batch, 0.5), params)
    assert [s for s in naive if vocab in s[0] and s[1] >= positions * vocab * 4]  # seen


def test_one_backward_reaches_every_student_parameter(tiny, nat_dir, export_file, nce_config):
    """DDP needs a gradient for every trainable parameter in every step."""
    trainer = _build(export_file, tiny, nat_dir, nce_config())
    trainer.model.train()
    with adapter_mode(trainer.model, STUDENT):
        trainer.compute_loss(trainer.model, _batch(trainer)).backward()
    grads = {n: p.grad for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if ".lora_B." in n)
    assert all(p.grad is None for p in trainer.model.parameters() if not p.requires_grad)


def _weights_after(tiny, nat_dir, export_file, nce_config, tmp_path, batch, accum, **kw):
    cfg = nce_config(per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                     max_steps=2, optim="sgd", learning_rate=0.5, max_grad_norm=0.0,
                     train_sampling_strategy="sequential", logging_steps=100, **kw)
    trainer = _build(export_file, tiny, nat_dir, cfg)
    if cfg.precompute_beta:
        trainer.use_betas(trainer.precompute_betas(BetaStore(tmp_path / f"betas{accum}", {})))
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("all_tokens", [False, True])
def test_update_does_not_depend_on_accumulation(all_tokens, tiny, nat_dir, export_file,
                                                nce_config, tmp_path):
    """Global normalisation over both token counts (CE targets and distillation
    positions): 1 x 8 examples and 4 x 2 accumulated give the same weights; so does
    precomputed beta. (tests/distill/test_distill_ddp.py checks the same machinery
    across processes.)"""
    kw = dict(distill_all_tokens=all_tokens)
    whole = _weights_after(tiny, nat_dir, export_file, nce_config, tmp_path, 8, 1, **kw)
    accum = _weights_after(tiny, nat_dir, export_file, nce_config, tmp_path, 2, 4, **kw)
    assert any(v.abs().sum() > 0 for n, v in whole.items() if ".lora_B." in n)
    assert whole.keys() == accum.keys()
    assert all(torch.allclose(whole[k], accum[k], rtol=1e-4, atol=1e-6) for k in whole)
    if not all_tokens:
        pre = _weights_after(tiny, nat_dir, export_file, nce_config, tmp_path, 2, 4,
                             precompute_beta=True, **kw)
        assert all(torch.allclose(whole[k], pre[k], rtol=1e-4, atol=1e-6) for k in whole)


def test_trains_in_bf16(tiny, nat_dir, export_file, nce_config):
    trainer = _build(export_file, tiny, nat_dir, nce_config(max_steps=2, bf16=True))
    layer = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.base_layer.weight.dtype == torch.bfloat16
    trainer.train()
    assert all(p["loss"] == p["loss"] for p in trainer.curve.points)  # no NaN
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters() if p.requires_grad)
