"""What a training command does with what OUT already holds: a finished run is kept by
--resume (nothing retrained), an interrupted one is continued by --resume and never
silently restarted; checkpoints are written by default (at most ~10 per run, the last 2
kept) and --save-steps 0 turns them off; progress is one line per logging step."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.knobs import Knobs

runner = CliRunner()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _common(tiny, export_file):
    return [str(a) for a in ("--data", export_file, "--base", tiny, "--batch-size", 2,
                             "--max-length", 64, "--lr", 1e-3, "--seed", 1, "--device", "cpu")]


def test_resume_keeps_a_finished_nat_run(tiny_model, export_file, tmp_path):
    common = _common(tiny_model, export_file) + ["--gate-width", "8", "--max-steps", "2"]
    out = tmp_path / "nat"
    res = runner.invoke(app, ["nat", *common, "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "step 2/2 loss " in res.output and "{'loss'" not in res.output
    files = {p: _sha(p) for p in out.rglob("*") if p.is_file()}
    res = runner.invoke(app, ["nat", *common, "--out", str(out), "--resume"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "already holds a finished nat run; --resume keeps it" in " ".join(res.output.split())
    assert "step 1/" not in res.output                       # nothing trained
    assert {p: _sha(p) for p in out.rglob("*") if p.is_file()} == files
    res = runner.invoke(app, ["nat", *common, "--out", str(out), "--resume", "--overwrite"])
    assert res.exit_code != 0 and "choose one of --resume" in str(res.exception)


def test_an_interrupted_run_is_refused_then_resumed(tiny_model, export_file, tmp_path,
                                                    monkeypatch):
    from distill.baselines import SFTTrainer
    common = _common(tiny_model, export_file) + ["--max-steps", "4"]
    out = tmp_path / "sft"
    real = SFTTrainer.training_step

    def dying(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == 3:
            raise RuntimeError("killed")
        return real(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(SFTTrainer, "training_step", dying)
    res = runner.invoke(app, ["train", *common, "--out", str(out)])
    assert "killed" in str(res.exception)
    ckpt = out / "checkpoints"
    # checkpointed by default: every step of a 4-step run, the last 2 kept
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    monkeypatch.setattr(SFTTrainer, "training_step", real)

    res = runner.invoke(app, ["train", *common, "--out", str(out)])
    msg = " ".join(str(res.exception).split())
    assert res.exit_code != 0 and "holds an interrupted run" in msg
    assert "up to step 3" in msg and "--resume" in msg and "--overwrite" in msg
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-2", "checkpoint-3"]

    res = runner.invoke(app, ["train", *common, "--out", str(out), "--resume"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "step 4/4" in res.output and "step 1/4" not in res.output   # continued at 4
    assert json.loads((out / "distill.json").read_text())["steps"] == 4
    assert not ckpt.exists()


def test_overwrite_starts_an_interrupted_run_again(tiny_model, export_file, tmp_path):
    out = tmp_path / "sft"
    (out / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    common = _common(tiny_model, export_file) + ["--max-steps", "2", "--save-steps", "0"]
    res = runner.invoke(app, ["train", *common, "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "step 1/2" in res.output and not (out / "checkpoints").exists()


def _knobs(**kw) -> Knobs:
    base = dict(epochs=1, max_steps=-1, batch_size=2, grad_accum=1, lr=1e-3, lora_r=4,
                lora_alpha=8, lora_dropout=0.0, target_modules=None, seed=0, bf16=False,
                fp16=False, max_length=64, train_on_prompt=False,
                gradient_checkpointing=False, logging_steps=1, warmup_steps=0, device="cpu")
    return Knobs(**{**base, **kw})


def test_checkpoint_settings(tmp_path):
    from distill.baselines import SFTConfig
    auto = _knobs(save_steps=None).config(SFTConfig, tmp_path)
    assert (auto.save_strategy, auto.auto_save_steps, auto.save_total_limit, auto.use_cpu) == \
        ("steps", True, 2, True)
    fixed = _knobs(save_steps=25).config(SFTConfig, tmp_path)
    assert (fixed.save_strategy, fixed.save_steps, fixed.auto_save_steps) == ("steps", 25, False)
    # an explicit interval keeps the last 2 checkpoints too, as --save-steps' help says
    assert fixed.save_total_limit == 2
    off = _knobs(save_steps=0).config(SFTConfig, tmp_path)
    assert off.save_strategy == "no"
    with pytest.raises(Exception, match="--save-steps -1"):
        _knobs(save_steps=-1).config(SFTConfig, tmp_path)


def _interrupt_sft(monkeypatch, common, out, at=2):
    """`distill train --method sft` into ``out``, killed at step ``at`` (checkpoints kept)."""
    from distill.baselines import SFTTrainer
    real = SFTTrainer.training_step

    def dying(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == at:
            raise RuntimeError("killed")
        return real(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(SFTTrainer, "training_step", dying)
    res = runner.invoke(app, ["train", *common, "--out", str(out)])
    assert "killed" in str(res.exception)
    monkeypatch.setattr(SFTTrainer, "training_step", real)


def test_resume_with_other_settings_is_refused(tiny_model, export_file, tmp_path, monkeypatch):
    common = _common(tiny_model, export_file) + ["--max-steps", "4"]
    out = tmp_path / "sft"
    _interrupt_sft(monkeypatch, common, out)
    record = json.loads((out / "distill-run.json").read_text())
    assert record["command"] == "train" and record["settings"]["method"] == "sft"
    assert record["settings"]["lr"] == 1e-3
    before = {p: _sha(p) for p in out.rglob("*") if p.is_file()}
    other = [a if a != "1e-3" and a != "0.001" else "0.5" for a in common]
    res = runner.invoke(app, ["train", *other, "--method", "mix", "--out", str(out), "--resume"])
    msg = " ".join(str(res.exception).split())
    assert res.exit_code != 0 and "interrupted run started with other settings" in msg, msg
    assert "--method: 'sft' there, 'mix' now" in msg and "--lr: 0.001 there, 0.5 now" in msg
    assert "--overwrite" in msg
    assert {p: _sha(p) for p in out.rglob("*") if p.is_file()} == before
    # options that do not change the result may differ
    res = runner.invoke(app, ["train", *common, "--out", str(out), "--resume",
                              "--logging-steps", "2", "--save-steps", "1"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "step 4/4" in res.output and "step 1/4" not in res.output
    # a finished run is kept (nothing trained), with a note of what differs
    res = runner.invoke(app, ["train", *common, "--method", "mix", "--out", str(out),
                              "--resume"])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "started with other settings" in said, said
    assert "--method: 'sft' there, 'mix' now" in said and "--resume keeps it" in said


def test_nat_resume_with_another_gate_or_neg_is_refused(tiny_model, export_file, tmp_path):
    out = tmp_path / "nat"
    (out / "neg").mkdir(parents=True)
    common = _common(tiny_model, export_file) + ["--gate-width", "8", "--max-steps", "1"]
    from distill.cli_options import write_run_record
    write_run_record(out, "nat", {"data": export_file, "gate_width": 16})
    (out / "neg" / "adapter_model.safetensors").write_bytes(b"")   # a finished stage 1
    res = runner.invoke(app, ["nat", *common, "--out", str(out), "--resume"])
    msg = " ".join(str(res.exception).split())
    assert res.exit_code != 0 and "--gate-width: 16 there, 8 now" in msg, msg


def test_training_out_must_be_a_training_folder(tiny_model, export_file, tmp_path):
    common = _common(tiny_model, export_file) + ["--max-steps", "1", "--save-steps", "0"]
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "README.md").write_text("my project\n")
    res = runner.invoke(app, ["train", *common, "--out", str(proj)])
    assert res.exit_code != 0 and "not a previous training output" in str(res.exception)
    assert (proj / "README.md").read_text() == "my project\n"
    assert sorted(p.name for p in proj.iterdir()) == ["README.md"]
    wh = tmp_path / "warehouse"
    wh.mkdir()
    (wh / "curator.duckdb").write_bytes(b"\0" * 8 + b"DUCK" + b"\0" * 100)
    for cmd in (["train", *common], ["nce", *common, "--nat", str(tmp_path / "nat")]):
        res = runner.invoke(app, [*cmd, "--out", str(wh)])
        assert res.exit_code != 0 and "holds the DuckDB database curator.duckdb" in \
            str(res.exception), (res.output, res.exception)
    assert sorted(p.name for p in wh.iterdir()) == ["curator.duckdb"]


def test_an_interrupted_overwrite_of_a_finished_run_reads_as_interrupted(
        tiny_model, export_file, tmp_path, monkeypatch):
    """--overwrite replaces a finished run: killed before it ends, OUT is an interrupted
    run of the new settings (resumable with them), never the old run 'finished' under a
    record of the new settings."""
    out = tmp_path / "sft"
    first = _common(tiny_model, export_file) + ["--max-steps", "2", "--save-steps", "0"]
    res = runner.invoke(app, ["train", *first, "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    again = _common(tiny_model, export_file) + ["--max-steps", "4", "--save-steps", "1"]
    _interrupt_sft(monkeypatch, again + ["--overwrite"], out, at=2)
    assert not (out / "distill.json").exists()
    res = runner.invoke(app, ["train", *again, "--out", str(out)])
    assert res.exit_code != 0 and "holds an interrupted run" in " ".join(str(res.exception).split())
    res = runner.invoke(app, ["train", *again, "--out", str(out), "--resume"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "step 4/4" in res.output and "step 1/4" not in res.output
    assert json.loads((out / "distill.json").read_text())["steps"] == 4
