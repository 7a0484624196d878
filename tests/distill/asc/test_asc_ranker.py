"""The ranking model: losses on hand-computed tensors, pairs, inputs, training on the tiny
model, held-out pairwise accuracy, reloading, and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from curator.errors import CuratorError
from distill.data import PromptFormat, read_export
from distill.asc.ranker import (Ranker, by_problem, make_pairs, pairwise_accuracy, ranker_ids,
                            ranker_loss, split_problems)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


POS = torch.tensor([0.0, 2.0])
NEG = torch.tensor([1.0, -1.0])


def test_poly3_loss_by_hand():
    want = ((1 - sig(0)) ** 3 + sig(1) ** 3 + (1 - sig(2)) ** 3 + sig(-1) ** 3) / 2
    assert ranker_loss(POS, NEG, "poly3").item() == pytest.approx(want, rel=1e-6)
    # perfect separation costs nothing, the reverse costs 2 per pair
    assert ranker_loss(torch.tensor([50.0]), torch.tensor([-50.0]), "poly3").item() == pytest.approx(0, abs=1e-6)
    assert ranker_loss(torch.tensor([-50.0]), torch.tensor([50.0]), "poly3").item() == pytest.approx(2)


def test_pairwise_loss_by_hand():
    want = (math.log(1 + math.exp(1 - 0)) + math.log(1 + math.exp(-1 - 2))) / 2
    assert ranker_loss(POS, NEG, "pairwise").item() == pytest.approx(want, rel=1e-6)
    # only the difference matters
    assert ranker_loss(POS + 7, NEG + 7, "pairwise").item() == pytest.approx(want, rel=1e-6)


def test_bce_loss_by_hand():
    want = (-math.log(sig(0)) - math.log(sig(2)) - math.log(1 - sig(1)) - math.log(1 - sig(-1))) / 4
    assert ranker_loss(POS, NEG, "bce").item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("kind", ["poly3", "pairwise", "bce"])
def test_every_loss_pushes_positives_up_and_negatives_down(kind):
    pos, neg = POS.clone().requires_grad_(), NEG.clone().requires_grad_()
    ranker_loss(pos, neg, kind).backward()
    assert (pos.grad < 0).all() and (neg.grad > 0).all()


def test_unknown_loss():
    with pytest.raises(CuratorError, match="poly3, pairwise, bce"):
        ranker_loss(POS, NEG, "hinge")


def test_pairwise_accuracy_counts_ties_half():
    acc = pairwise_accuracy([([0.9, 0.5], [0.5, 0.1]),     # 0.9>0.5, 0.9>0.1, tie, 0.5>0.1
                             ([0.2], [0.8]),                # wrong
                             ([0.3], [])])                  # no pair: ignored
    assert acc["pairs"] == 5 and acc["problems"] == 2
    assert acc["micro"] == pytest.approx(3.5 / 5)
    assert acc["macro"] == pytest.approx((3.5 / 4 + 0) / 2)
    assert pairwise_accuracy([])["micro"] is None


def test_pairs_are_distinct_and_within_one_problem(export_file):
    records = read_export(export_file)
    groups = by_problem(records)
    train, held = split_problems(list(groups), 0.25, seed=1)
    assert not set(train) & set(held) and len(held) == round(len(groups) * 0.25)
    pairs = make_pairs(groups, train, pairs_per_problem=3, seed=0)
    assert pairs
    seen = set()
    for p, n in pairs:
        assert p["label"] == "positive" and n["label"] == "negative"
        assert p["problem_id"] == n["problem_id"] and p["problem_id"] in train
        seen.add((p["sample_id"], n["sample_id"]))
    assert len(seen) == len(pairs)
    per = {}
    for p, _ in pairs:
        per[p["problem_id"]] = per.get(p["problem_id"], 0) + 1
    for pid, k in per.items():
        g = groups[pid]
        assert k == min(3, len(g["positive"]) * len(g["negative"]))
    assert make_pairs(groups, train, 3, seed=0) == pairs    # seeded


def test_long_inputs_keep_the_end_of_the_rationale(tiny):
    from distill.models import load_tokenizer
    tok = load_tokenizer(tiny)
    fmt = PromptFormat()
    rationale = "word " * 300 + "so the answer is \\boxed{42}"
    ids = ranker_ids(tok, fmt, "What is 6 times 7?", rationale, 64)
    assert len(ids) == 64
    assert tok.decode(ids).endswith("\\boxed{42}")
    assert ids[:3] == fmt.prompt_ids(tok, "What is 6 times 7?")[:3]
    # a very long question keeps at most half the budget
    ids = ranker_ids(tok, fmt, "why " * 200, rationale, 64)
    assert len(ids) == 64 and tok.decode(ids).endswith("\\boxed{42}")
    # never ends in the pad id (the head reads the rightmost non-pad token)
    ids = ranker_ids(tok, fmt, "q", "a" + tok.pad_token, 64)
    assert ids[-1] != tok.pad_token_id


def test_training_saves_heldout_accuracy_and_reloads(trained_ranker, export_file):
    manifest = json.loads((trained_ranker / "ranker.json").read_text())
    assert manifest["loss"] == "poly3" and manifest["lora"] is True
    after = manifest["heldout_pairwise_accuracy"]["after"]
    assert after["pairs"] > 0 and 0.0 <= after["micro"] <= 1.0
    for f in ("adapter_config.json", "adapter_model.safetensors", "loss_curve.json",
              "loss_curve.png", "training_args.json"):
        assert (trained_ranker / f).is_file(), f
    # the reloaded ranker reproduces the held-out accuracy it was saved with
    from distill.asc.ranker import heldout_accuracy
    records = read_export(export_file)
    groups = by_problem(records)
    _, held = split_problems(list(groups), 0.25, seed=3)
    ranker = Ranker.load(trained_ranker)
    assert heldout_accuracy(ranker, groups, held) == after
    scores = ranker.score(["1+1?", "1+1?", "2+2?"], ["\\boxed{2}", "\\boxed{3}", "4"])
    assert all(0.0 < s < 1.0 for s in scores)
    # batching and order do not change a score
    ranker.batch_size = 1
    assert ranker.score(["2+2?", "1+1?"], ["4", "\\boxed{2}"]) == pytest.approx([scores[2], scores[0]], abs=1e-5)


def test_ranker_learns_an_obvious_signal(tiny, tmp_path):
    """Positives end in '\\boxed{7}', negatives in '\\boxed{8}': a few steps of the pairwise
    loss must rank held-out pairs right."""
    from distill.asc.ranker import RankerConfig, train_ranker
    recs = []
    for i in range(24):
        for k, (lab, ans) in enumerate([("positive", 7), ("negative", 8)] * 2):
            recs.append({"problem_id": f"p{i}", "dataset": "toy", "subject": None, "level": None,
                         "question": f"Question {i}: what is {i} + 7 - {i}?",
                         "reference_answer": "7", "rationale": f"We compute. The answer is \\boxed{{{ans}}}",
                         "extracted_answer": str(ans), "label": lab, "teacher_model": "toy",
                         "run_id": "r", "sample_id": f"s{i}-{k}", "grader_version": "toy"})
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = RankerConfig(output_dir=str(tmp_path / "rk"), max_steps=30, learning_rate=1e-2,
                       per_device_train_batch_size=8, lora_r=4, lora_alpha=8, max_length=64,
                       holdout=0.25, loss="pairwise", seed=0, logging_steps=10)
    r = train_ranker(data, tiny, tmp_path / "rk", cfg)
    assert r.heldout_after["micro"] == 1.0, r


def test_validation_file_must_not_share_problems(tiny, export_file, tmp_path):
    from distill.asc.ranker import RankerConfig, train_ranker
    cfg = RankerConfig(output_dir=str(tmp_path / "rk"), max_steps=1)
    with pytest.raises(CuratorError, match="shares .* problems"):
        train_ranker(export_file, tiny, tmp_path / "rk", cfg, validation=export_file)


def test_cli(tiny, export_file, tmp_path):
    from distill.cli import app
    out = tmp_path / "rk"
    res = CliRunner().invoke(app, ["ranker", "--data", str(export_file), "--base", str(tiny),
                                   "--out", str(out), "--loss", "bce", "--max-steps", "2",
                                   "--lora-r", "4", "--max-length", "96", "--holdout", "0.3",
                                   "--cpu"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "held-out pairwise accuracy" in res.output
    assert json.loads((out / "ranker.json").read_text())["loss"] == "bce"
    res = CliRunner().invoke(app, ["ranker", "--data", str(export_file), "--base", str(tiny),
                                   "--out", str(out), "--loss", "hinge"])
    assert res.exit_code != 0 and "poly3" in str(res.exception)
