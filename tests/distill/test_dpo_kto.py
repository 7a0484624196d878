"""DPO and KTO baselines (`distill train --method dpo|kto`, TRL's trainers), their pairs
(curator's `--layout preference` SQL), the SFT-then-DPO start, their rows in `distill
compare`, and experiment tracking (`--report-to`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from curator.errors import CuratorError
from distill.cli import app
from distill.data import PromptFormat, read_export

SMALL = ["--max-steps", "2", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8",
         "--max-length", "96", "--lr", "1e-2", "--cpu"]


def run(args: list[str]):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(out / "adapter_model.safetensors"))


def loads_with_peft(base: Path, out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(out))
    assert any("lora_B" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_train_writes_a_peft_adapter(method, tiny_model, export_file, eval_file, tmp_path):
    out = tmp_path / method
    run(["train", "--method", method, "--data", str(export_file), "--base", str(tiny_model),
         "--out", str(out), "--beta", "0.2", *SMALL])
    for f in ("adapter_config.json", "adapter_model.safetensors", "distill.json",
              "training_args.json", "loss_curve.json", "loss_curve.png"):
        assert (out / f).is_file(), f
    assert not (out / "checkpoints").exists()
    manifest = json.loads((out / "distill.json").read_text())
    assert manifest["method"] == method and manifest["beta"] == 0.2
    assert manifest["steps"] == 2 and manifest["reference"].startswith("the base model")
    args = json.loads((out / "training_args.json").read_text())
    assert args["beta"] == 0.2 and args["learning_rate"] == 1e-2 and args["max_length"] == 96
    curve = json.loads((out / "loss_curve.json").read_text())["points"]
    assert [p["step"] for p in curve] == [1, 2]
    # the adapter moved off its zero initialisation
    assert any(t.abs().sum() > 0 for n, t in adapter_weights(out).items() if "lora_B" in n)
    loads_with_peft(tiny_model, out)
    # `distill generate` samples from it like any other student
    samples = tmp_path / "samples.jsonl"
    run(["generate", "--base", str(tiny_model), "--adapter", str(out), "--data", str(eval_file),
         "--out", str(samples), "--limit", "2", "--max-new-tokens", "4", "--temperature", "0"])
    recs = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(recs) == 2 and recs[0]["model"] == f"student:{method}:default"


def test_dpo_pairs_are_curators_and_in_distills_prompt_format(tiny_model, export_file):
    from curator.exporting.layouts import layout_rows
    from distill.models import load_tokenizer
    from distill.preference import preference_rows

    records = read_export(export_file)
    by_id = {r["sample_id"]: r for r in records}
    pairs = layout_rows(records, "preference", seed=3, pairs_per_problem=2)
    for p in pairs:
        c, r = by_id[p["chosen_sample_id"]], by_id[p["rejected_sample_id"]]
        assert c["label"] == "positive" and r["label"] == "negative"
        assert c["problem_id"] == r["problem_id"] == p["problem_id"]
    per_problem: dict[str, int] = {}
    for p in pairs:
        per_problem[p["problem_id"]] = per_problem.get(p["problem_id"], 0) + 1
    assert max(per_problem.values()) == 2

    tok = load_tokenizer(tiny_model)
    fmt = PromptFormat()
    rows = preference_rows("dpo", records, tok, fmt, 4096, seed=3, pairs_per_problem=2)
    assert len(rows) == len(pairs)
    first = by_id[pairs[0]["chosen_sample_id"]]
    # the prompt tokens are exactly those `distill generate` feeds the model
    assert rows[0]["prompt_ids"] == fmt.prompt_ids(tok, first["question"])
    assert rows[0]["chosen_ids"] == fmt.completion_ids(tok, first["question"], first["rationale"])
    assert rows[0]["chosen_ids"][-1] == tok.eos_token_id

    kto = preference_rows("kto", records, tok, fmt, 4096, seed=3)
    assert len(kto) == len(records)
    assert sum(r["label"] for r in kto) == sum(r["label"] == "positive" for r in records)


def test_methods_refuse_data_they_cannot_use(tiny_model, export_file, tmp_path):
    from distill.models import load_tokenizer
    from distill.preference import preference_rows
    positives = [r for r in read_export(export_file) if r["label"] == "positive"]
    tok = load_tokenizer(tiny_model)
    with pytest.raises(CuratorError, match="both a positive and a negative"):
        preference_rows("dpo", positives, tok, PromptFormat(), 96, 0)
    with pytest.raises(CuratorError, match="only one kind"):
        preference_rows("kto", positives, tok, PromptFormat(), 96, 0)
    res = CliRunner().invoke(app, ["train", "--method", "sft", "--data", str(export_file),
                                   "--base", str(tiny_model), "--out", str(tmp_path / "o"),
                                   "--init-adapter", str(tmp_path)])
    assert res.exit_code != 0 and "apply to --method dpo or kto" in str(res.exception)


def test_dpo_from_an_sft_adapter_keeps_its_reference_frozen(tiny_model, export_file, tmp_path):
    sft = tmp_path / "sft"
    run(["train", "--method", "sft", "--data", str(export_file), "--base", str(tiny_model),
         "--out", str(sft), *SMALL])
    dpo = tmp_path / "dpo"
    run(["train", "--method", "dpo", "--data", str(export_file), "--base", str(tiny_model),
         "--out", str(dpo), "--init-adapter", str(sft), "--pairs-per-problem", "1", *SMALL])
    manifest = json.loads((dpo / "distill.json").read_text())
    assert manifest["init_adapter"] == str(sft) and "frozen copy" in manifest["reference"]
    before, after = adapter_weights(sft), adapter_weights(dpo)
    assert before.keys() == after.keys()          # one adapter, saved under the same names
    assert any(not torch.equal(before[k], after[k]) for k in before)   # trained from sft's
    loads_with_peft(tiny_model, dpo)
    # a start trained with another prompt format is refused
    res = CliRunner().invoke(app, ["train", "--method", "dpo", "--data", str(export_file),
                                   "--base", str(tiny_model), "--out", str(tmp_path / "x"),
                                   "--init-adapter", str(sft), "--prompt-template",
                                   "Q: {question}\nA: ", *SMALL])
    assert res.exit_code != 0 and "prompt format" in str(res.exception)


def test_report_to_tensorboard_writes_events_in_out(tiny_model, export_file, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "sft"
    run(["train", "--method", "sft", "--data", str(export_file), "--base", str(tiny_model),
         "--out", str(out), "--report-to", "tensorboard", *SMALL])
    runs = out / "runs"
    events = list(runs.glob("events.out.tfevents.*"))
    assert events, list(out.iterdir())
    acc = EventAccumulator(str(runs))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert len(acc.Scalars("train/loss")) == 2
    assert "train/train_loss" in acc.Tags()["scalars"]      # the final metrics
    assert any("args" in t for t in acc.Tags()["tensors"])   # the run's config
    assert json.loads((out / "training_args.json").read_text())["report_to"] == ["tensorboard"]


def test_report_to_is_checked(tiny_model, export_file, tmp_path, monkeypatch):
    from distill import tracking
    res = CliRunner().invoke(app, ["train", "--data", str(export_file), "--base",
                                   str(tiny_model), "--out", str(tmp_path / "o"),
                                   "--report-to", "comet"])
    assert res.exit_code != 0 and "--report-to 'comet': choose one of" in str(res.exception)
    monkeypatch.setattr(tracking, "_available", lambda module: False)
    with pytest.raises(CuratorError, match="the 'mlflow' package is not installed"):
        tracking.check_report_to("mlflow")
    # compare configs: `[train] report_to`, checked with the file and table named
    from distill.baselines import SFTConfig
    from distill.knobs import training_config
    with pytest.raises(CuratorError, match=r"c.toml \[train.sft\]: report_to 'comet'"):
        training_config(SFTConfig, tmp_path / "o", {"report_to": "comet"}, "c.toml [train.sft]")
    env = tracking.tracker_env("mlflow", tmp_path / "run")
    assert env["MLFLOW_TRACKING_URI"] == (tmp_path / "run" / "mlruns").as_uri()
    assert not (tmp_path / "o").exists()


def test_compare_prints_dpo_and_kto_rows(tiny_model, export_file, eval_file, tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
out = "{out}"
[model]
base = "{tiny_model}"
[data]
train = "{export_file}"
[[eval]]
name = "MATH"
data = "{eval_file}"
limit = 2
[methods]
run = ["dpo", "kto"]
[train]
max_steps = 1
batch_size = 4
lora_r = 4
lora_alpha = 8
max_length = 96
cpu = true
[train.dpo]
beta = 0.3
pairs_per_problem = 1
[evaluate]
samples = 1
max_new_tokens = 4
batch_size = 16
""")
    res = run(["compare", "--config", str(cfg)])
    assert "| DPO (greedy) |" in res.output and "| KTO (greedy) |" in res.output
    args = json.loads((out / "students" / "dpo" / "training_args.json").read_text())
    assert args["beta"] == 0.3 and args["pairs_per_problem"] == 1
    assert json.loads((out / "students" / "kto" / "distill.json").read_text())["method"] == "kto"


def test_dpo_resumes_from_its_checkpoint(tiny_model, export_file, tmp_path):
    from distill.knobs import Knobs
    from distill.preference import CONFIGS, build_preference
    from distill.run import checkpointing, fit
    out = tmp_path / "dpo"
    records = read_export(export_file)

    def trainer(steps: int):
        knobs = Knobs(epochs=1, max_steps=steps, batch_size=4, grad_accum=1, lr=1e-2, lora_r=4,
                      lora_alpha=8, lora_dropout=0.0, target_modules=None, seed=0, bf16=False,
                      fp16=False, max_length=96, train_on_prompt=False,
                      gradient_checkpointing=False, logging_steps=1, warmup_steps=0, cpu=True,
                      save_steps=1)
        return build_preference("dpo", records, tiny_model,
                                checkpointing(knobs.config(CONFIGS["dpo"], out), out))[0]

    first = trainer(2)
    fit(first, resume=False)              # "interrupted" after step 2: checkpoints 1 and 2
    assert (out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    second = trainer(3)
    fit(second, resume=True)
    assert second.state.global_step == 3
    assert [p["step"] for p in second.curve.points] == [1, 2, 3]   # the whole run's curve


@pytest.mark.parametrize("command", ["nat", "ranker"])
def test_report_to_on_other_training_commands(command, tiny_model, export_file, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / command
    small = ["--max-steps", "1", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8",
             "--max-length", "96", "--cpu", "--report-to", "tensorboard"]
    if command == "nat":
        run(["nat", "--data", str(export_file), "--base", str(tiny_model), "--out", str(out),
             "--gate-width", "16", *small])
        dirs = [out / "neg" / "runs", out / "pos" / "runs"]       # one run per stage
    else:
        run(["ranker", "--data", str(export_file), "--base", str(tiny_model), "--out", str(out),
             "--holdout", "0.25", *small])
        dirs = [out / "runs"]
    for d in dirs:
        assert list(d.glob("events.out.tfevents.*")), d


def test_the_tiny_preference_config_is_valid():
    from distill.compare import load_config, plan
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "distill" / "configs" / "compare-tiny-preference.toml", out="/tmp/x")
    names = [s.name for s in plan(cfg, echo=lambda s: None)]
    for m in ("sft", "dpo", "kto", "nat"):
        assert f"train:{m}" in names and f"eval:MATH:{m}" in names
    assert cfg.per_method["dpo"] == {"beta": 0.1, "pairs_per_problem": 4}
