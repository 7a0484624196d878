"""`distill nce` end to end: what it writes, the student as a plain peft LoRA adapter that
`PeftModel.from_pretrained` and `distill generate` load, the stored betas (resumable,
refused for another teacher), an interrupted run resumed, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from curator.errors import CuratorError
from distill import data as D
from distill.cli import app
from distill.nce import BetaStore

runner = CliRunner()


def _invoke(*args, ok=True):
    res = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, (res.output, res.exception)
    return res


def _nce(tiny, nat_dir, export_file, out, *extra, ok=True):
    return _invoke("nce", "--data", export_file, "--base", tiny, "--nat", nat_dir, "--out", out,
                   "--max-steps", 3, "--batch-size", 4, "--max-length", 96, "--lr", 2e-2,
                   "--lora-r", 4, "--lora-alpha", 8, "--seed", 3, *extra, ok=ok)


def test_cli_writes_a_loadable_student_and_its_betas(tiny, nat_dir, export_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from distill.adapters import adapter_mode
    from distill.student import load_student

    out = tmp_path / "nce"
    _nce(tiny, nat_dir, export_file, out, "--lambda", 0.3, "--chunk-tokens", 32)
    for f in ("adapter_config.json", "adapter_model.safetensors", "training_args.json",
              "loss_curve.json", "loss_curve.png", "distill.json", "betas.jsonl",
              "betas.meta.json", "beta_summary.json", "beta_hist.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    manifest = json.loads((out / "distill.json").read_text())
    assert manifest["method"] == "nce" and manifest["nat"] == str(nat_dir)
    n = manifest["examples"]
    positives = len(D.select(D.read_export(export_file), ("positive",)))
    assert n + manifest["encode"]["dropped_prompt_too_long"] == positives and n > 12
    assert manifest["steps"] == 3
    assert manifest["nce"] == {"lambda": 0.3, "temperature": 1.0, "positions": "targets",
                               "beta": "precomputed"}
    args = json.loads((out / "training_args.json").read_text())
    assert (args["nce_lambda"], args["nce_chunk_tokens"], args["lora_r"], args["max_steps"]) == \
        (0.3, 32, 4, 3)
    curve = json.loads((out / "loss_curve.json").read_text())["points"]
    assert [p["step"] for p in curve] == [1, 2, 3]
    # betas of the 3 steps x 4 samples trained on only (tests/distill/nce/test_nce_beta_subset.py)
    betas = [json.loads(x) for x in (out / "betas.jsonl").read_text().splitlines()]
    assert len(betas) == 12 == len({b["sample_id"] for b in betas}) and n > 12
    assert all(0 < b["beta"] < 1 and b["tokens"] > 0 for b in betas)
    summary = json.loads((out / "beta_summary.json").read_text())
    assert summary["count"] == 12 and summary["min"] <= summary["median"] <= summary["max"]

    # only the student's weights, in peft's key scheme
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert keys and all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in keys)
    base = AutoModelForCausalLM.from_pretrained(str(tiny))
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    plain = PeftModel.from_pretrained(base, str(out))
    student, _, _, modes = load_student(tiny, out)
    assert modes == ["default", "base"]
    with adapter_mode(student, "default"), torch.no_grad():
        ours = student(input_ids=ids).logits
        theirs = plain(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(theirs, base_logits, atol=1e-4)  # the student did train

    eval_file = export_file.with_name("eval_small.jsonl")
    _invoke("generate", "--base", tiny, "--adapter", out, "--data", eval_file, "--samples", 2,
            "--max-new-tokens", 4, "--out", tmp_path / "s.jsonl")
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(recs) == 12 and {r["model"] for r in recs} == {"student:nce:default"}


def test_cli_online_beta_and_all_tokens(tiny, nat_dir, export_file, tmp_path):
    out = tmp_path / "online"
    _nce(tiny, nat_dir, export_file, out, "--online-beta", "--all-tokens", "--temperature", 2)
    manifest = json.loads((out / "distill.json").read_text())
    assert manifest["nce"]["beta"] == "online" and manifest["nce"]["positions"] == "attended"
    # 3 steps x 4 examples: the betas of the 12 samples trained on, as they were used
    betas = [json.loads(x) for x in (out / "betas.jsonl").read_text().splitlines()]
    assert len(betas) == 12 and all(0 < b["beta"] < 1 for b in betas)
    assert not (out / "betas.meta.json").exists()
    assert json.loads((out / "beta_summary.json").read_text())["source"].startswith("online")


def test_stored_betas_resume_and_belong_to_one_teacher(tmp_path):
    store = BetaStore(tmp_path, {"nat_sha256": "a"})
    store.append([{"sample_id": "s1", "beta": 0.1}, {"sample_id": "s2", "beta": 0.2}])
    with open(store.path, "a") as f:
        f.write('{"sample_id": "s3", "be')  # cut by an interruption
    assert sorted(store.load()) == ["s1", "s2"]
    assert store.path.read_text().endswith('"beta": 0.2}\n')  # the partial line is dropped
    store.append([{"sample_id": "s3", "beta": 0.3}])
    assert sorted(store.load()) == ["s1", "s2", "s3"]
    with pytest.raises(CuratorError, match="another teacher.*nat_sha256"):
        BetaStore(tmp_path, {"nat_sha256": "b"}).load()


def test_precompute_resumes_where_it_stopped(tiny, nat_dir, export_file, nce_config, tmp_path):
    from distill.nce import build_nce

    trainer, _ = build_nce(D.read_export(export_file), tiny, nat_dir, nce_config())
    store = BetaStore(tmp_path / "run", {"teacher": "t"})
    full = trainer.precompute_betas(BetaStore(tmp_path / "full", {"teacher": "t"}))
    ids = trainer.train_dataset["sample_id"]
    store.append([{"sample_id": s, "beta": -1.0, "mean_kl": 0, "tokens": 0} for s in ids[:10]])
    got = trainer.precompute_betas(store)
    lines = store.path.read_text().splitlines()
    assert len(lines) == len(ids)  # the first 10 were not computed again
    assert all(got[s] == -1.0 for s in ids[:10])
    assert all(got[s] == pytest.approx(full[s], rel=1e-6) for s in ids[10:])


def test_cli_errors_are_clear(tiny, nat_dir, export_file, tmp_path):
    res = _nce(tiny, tmp_path / "nowhere", export_file, tmp_path / "o", ok=False)
    assert res.exit_code != 0 and "not a finished `distill nat` output" in str(res.exception)
    res = _nce(tiny, nat_dir, export_file, nat_dir, ok=False)
    assert res.exit_code != 0 and "already holds a finished nat run" in str(res.exception)
    res = _nce(tiny, nat_dir, export_file, tmp_path / "o", "--lambda", 1.5, ok=False)
    assert res.exit_code != 0 and "--lambda must lie in [0, 1]" in str(res.exception)


@pytest.mark.parametrize("precompute", [True, False])
def test_interrupted_nce_resumes_to_the_same_student(precompute, tiny, nat_dir, export_file,
                                                     nce_config, tmp_path, monkeypatch):
    """Checkpointed at step 2, killed at step 3: resume continues from the checkpoint (the
    stored betas are kept) and ends where an uninterrupted run ends; the checkpoints are
    removed once the student is saved."""
    from distill.nce import NCETrainer, train_nce

    cfg = nce_config(max_steps=4, save_strategy="steps", save_steps=2, precompute_beta=precompute,
                     train_sampling_strategy="sequential")
    train_nce(export_file, tiny, nat_dir, tmp_path / "whole", cfg)

    real_step = NCETrainer.training_step

    def dying_step(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return real_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(NCETrainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_nce(export_file, tiny, nat_dir, tmp_path / "cut", cfg)
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    calls = []

    def counting_step(self, model, inputs, num_items_in_batch=None):
        calls.append(self.state.global_step)
        return real_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(NCETrainer, "training_step", counting_step)
    if precompute:
        stored = (tmp_path / "cut" / "betas.jsonl").read_text()
        monkeypatch.setattr(NCETrainer, "teacher_betas", lambda *a, **k: pytest.fail("recomputed"))
    res = train_nce(export_file, tiny, nat_dir, tmp_path / "cut", cfg, resume=True)
    assert calls == [2, 3]  # steps 3 and 4 only: it did continue from checkpoint-2
    assert res.steps == 4 and not (tmp_path / "cut" / "checkpoints").exists()
    if precompute:
        assert (tmp_path / "cut" / "betas.jsonl").read_text() == stored
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
