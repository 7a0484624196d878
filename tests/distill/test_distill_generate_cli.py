"""Generation (records for `curator import jsonl`, logprob, resume) and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from distill.adapters import adapter_mode
from distill.cli import app
from distill.data import PromptFormat, read_eval
from distill.generate import SamplingConfig, _done_pairs, generate, score_completions
from distill.student import load_student

runner = CliRunner()


def _invoke(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def test_greedy_logprob_matches_step_by_step_scores(tiny_model, eval_file):
    model, tok, fmt, _ = load_student(tiny_model, None)
    problems = read_eval(eval_file)[:3]
    cfg = SamplingConfig(samples=1, max_new_tokens=6, temperature=0.0, batch_size=3)
    recs = list(generate(model, tok, fmt, problems, cfg, "base:tiny"))
    for p, r in zip(problems, recs):
        prompt = fmt.prompt_ids(tok, p["question"])
        ids = prompt[:]
        total = 0.0
        for _ in range(r["completion_tokens"]):  # greedy, unbatched, token by token
            with torch.no_grad():
                logp = model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            nxt = int(logp.argmax())
            total += float(logp[nxt])
            ids.append(nxt)
        assert tok.decode(ids[len(prompt):], skip_special_tokens=True) == r["completion"]
        assert r["logprob"] == pytest.approx(total, abs=1e-3)
        assert r["finish_reason"] == ("stop" if ids[-1] == tok.eos_token_id else "length")


def test_records_are_importable_and_resume(tiny_model, eval_file, tmp_path):
    model, tok, fmt, _ = load_student(tiny_model, None)
    problems = read_eval(eval_file)
    out = tmp_path / "s.jsonl"
    cfg = SamplingConfig(samples=2, max_new_tokens=5, temperature=1.0, batch_size=4)
    first = list(generate(model, tok, fmt, problems[:2], cfg, "m", out=out))
    assert len(first) == 4
    with open(out, "a") as f:
        f.write('{"problem_id": "half a line')  # an interrupted write
    more = list(generate(model, tok, fmt, problems[:3], cfg, "m", out=out))
    assert [(r["problem_id"], r["sample_index"]) for r in more] == \
        [(problems[2]["problem_id"], 0), (problems[2]["problem_id"], 1)]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6
    for r in lines:
        assert set(r) >= {"problem_id", "question", "reference_answer", "sample_index",
                          "completion", "model", "finish_reason", "completion_tokens", "logprob"}
        assert r["finish_reason"] in ("stop", "length") and r["completion_tokens"] <= 5
    with pytest.raises(Exception, match="already holds samples of model"):
        _done_pairs(out, "another")


def test_score_completions_is_batch_invariant(tiny_model):
    model, tok, _, _ = load_student(tiny_model, None)
    prompts = [[1, 50, 60], [1, 70], [1, 80, 90, 100]]
    comps = [[5, 6], [7, 8, 9], [10]]
    together = score_completions(model, prompts, comps, tok.pad_token_id, batch_size=3)
    alone = [score_completions(model, [p], [c], tok.pad_token_id)[0] for p, c in zip(prompts, comps)]
    assert together == pytest.approx(alone, abs=1e-4)


def test_cli_main_job(tmp_path, export_file, eval_file):
    """init-tiny -> nat -> generate (nat mode) -> train sft -> generate; outputs as documented."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tiny = tmp_path / "tiny"
    _invoke("init-tiny", tiny, "--kv-heads", 2)
    common = ["--base", tiny, "--data", export_file, "--max-steps", 2, "--batch-size", 2,
              "--max-length", 64, "--lr", 1e-3, "--seed", 1]
    _invoke("nat", *common, "--out", tmp_path / "nat", "--gate-width", 8, "--neg-max-steps", 1)
    manifest = json.loads((tmp_path / "nat" / "distill.json").read_text())
    assert manifest["kind"] == "nat" and manifest["stages"]["neg"]["steps"] == 1
    assert manifest["stages"]["pos"]["steps"] == 2
    args = json.loads((tmp_path / "nat" / "pos" / "training_args.json").read_text())
    assert args["max_steps"] == 2 and args["gate_width"] == 8 and args["lora_r"] == 8

    _invoke("generate", "--base", tiny, "--adapter", tmp_path / "nat", "--data", eval_file,
            "--samples", 2, "--max-new-tokens", 4, "--out", tmp_path / "nat.jsonl")
    recs = [json.loads(x) for x in (tmp_path / "nat.jsonl").read_text().splitlines()]
    assert len(recs) == 12 and {r["model"] for r in recs} == {"student:nat:nat"}

    # a finished run is not replaced by accident
    before = (tmp_path / "nat" / "distill.json").read_text()
    res = runner.invoke(app, [str(a) for a in ("nat", *common, "--out", tmp_path / "nat")])
    assert res.exit_code != 0 and "already holds a finished nat run" in str(res.exception)
    assert (tmp_path / "nat" / "distill.json").read_text() == before
    # --resume keeps it (nothing is trained again: tests/distill/test_distill_runs.py)
    _invoke("nat", *common, "--out", tmp_path / "nat", "--gate-width", 8, "--resume")
    assert (tmp_path / "nat" / "distill.json").read_text() == before

    _invoke("train", *common, "--method", "sft", "--out", tmp_path / "sft", "--train-on-prompt",
            "--save-steps", 1)
    assert not (tmp_path / "sft" / "checkpoints").exists()  # removed once the adapter is saved
    for f in ("adapter_config.json", "adapter_model.safetensors", "training_args.json",
              "loss_curve.json", "loss_curve.png", "distill.json"):
        assert (tmp_path / "sft" / f).is_file(), f
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny)),
                                      str(tmp_path / "sft"))
    student, _, _, modes = load_student(tiny, tmp_path / "sft")
    ids = torch.tensor([[1, 40, 41, 42]])
    with adapter_mode(student, modes[0]), torch.no_grad():
        assert torch.allclose(student(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-6)
    _invoke("generate", "--base", tiny, "--adapter", tmp_path / "sft", "--data", eval_file,
            "--limit", 2, "--max-new-tokens", 3, "--out", tmp_path / "sft.jsonl",
            "--temperature", 0)
    assert {json.loads(x)["model"] for x in (tmp_path / "sft.jsonl").read_text().splitlines()} \
        == {"student:sft:default"}


def test_cli_errors_are_clear(tmp_path, tiny_model, export_file):
    bad = tmp_path / "bad.jsonl"
    rec = json.loads(export_file.read_text().splitlines()[0])
    rec["label"] = "unsure"
    bad.write_text(json.dumps(rec) + "\n")
    res = runner.invoke(app, ["train", "--data", str(bad), "--base", str(tiny_model),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and f"{bad}:1" in str(res.exception)
    res = runner.invoke(app, ["generate", "--base", str(tiny_model), "--data", str(export_file),
                              "--out", str(tmp_path / "x.jsonl"), "--mode", "nat"])
    assert res.exit_code != 0 and "supports base" in str(res.exception)
    with pytest.raises(Exception, match="must contain"):
        PromptFormat(template="{q}")


def test_cli_errors_name_the_problem(export_file, tmp_path):
    res = runner.invoke(app, ["nat", "--base", str(tmp_path / "no-model"), "--data", str(export_file),
                              "--out", str(tmp_path / "nat"), "--cpu"])
    assert res.exit_code != 0
    assert "no model directory at" in str(res.exception)
    res = runner.invoke(app, ["nat", "--base", str(tmp_path), "--data", str(export_file),
                              "--out", str(tmp_path / "nat"), "--max-length", "0"])
    assert res.exit_code == 2 and "--max-length" in res.output
