"""`distill eval` on the tiny model end to end: sampling, grading with the curator's
grader, every voting rule, reports, resuming, and the samples importable by curator."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curator.errors import CuratorError
from distill.evaluate import (GRADES, REPORT_JSON, SAMPLES, EvalConfig, evaluate,
                              markdown_report, read_jsonl, summarise)
from distill.asc.voting import RULES

CFG = EvalConfig(samples=3, max_new_tokens=8, temperature=1.0, batch_size=8, limit=3)


def test_eval_end_to_end_with_ranker_and_resume(tiny, trained_ranker, eval_file, tmp_path):
    out = tmp_path / "ev"
    rep = evaluate(tiny, eval_file, out, CFG, ranker=trained_ranker, device="cpu")
    assert rep["problems"] == 3 and rep["samples"] == 3
    assert rep["rules"] == ["greedy", *RULES]
    samples = read_jsonl(out / SAMPLES)
    assert len(samples) == 9 and len(read_jsonl(out / "greedy.jsonl")) == 3
    assert {(r["problem_id"], r["sample_index"]) for r in samples} == \
        {(p, k) for p in {r["problem_id"] for r in samples} for k in range(3)}
    assert all(r["completion_tokens"] <= 8 and "logprob" in r for r in samples)
    # graded by the curator's grader, every sampled and greedy rationale once
    grades = read_jsonl(out / GRADES)
    from curator.grading import GRADER_VERSION, grade
    assert len(grades) == 12 and {g["grader"] for g in grades} == {GRADER_VERSION}
    by_key = {g["key"]: g for g in grades}
    first = samples[0]
    g = grade(first["reference_answer"], first["completion"], question=first["question"])
    mine = [v for k, v in by_key.items() if k.startswith(f"samples|{first['problem_id']}|0|")]
    assert mine and (mine[0]["correct"], mine[0]["status"], mine[0]["extracted"]) == \
        (g.correct, g.status, g.extracted)
    # votes: ASC with w = 1 is plain majority, on every problem
    votes = read_jsonl(out / "votes.jsonl")
    assert len(votes) == 3
    for v in votes:
        assert v["rules"]["asc:1"] == v["rules"]["majority"]
        assert set(v["rules"]) == {"greedy", *RULES}
    assert rep["accuracy"]["asc:1"] == rep["accuracy"]["majority"]
    for rule in rep["rules"]:
        a = rep["accuracy"][rule]
        assert set(a) == {"all", "avg", "by_subject", "by_level", "by_dataset"}
        assert 0.0 <= a["all"] <= 1.0
    assert rep["ranker"]["dir"] == str(trained_ranker)
    assert len(read_jsonl(out / "scores.jsonl")) == 9
    md = (out / "report.md").read_text()
    assert "| self-consistency |" in md and "ASC w=s" in md and "## By level" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / REPORT_JSON).read_text())["accuracy"] == rep["accuracy"]

    # a second run computes nothing new and reports the same
    again = evaluate(tiny, eval_file, out, CFG, ranker=trained_ranker, device="cpu")
    assert again["throughput"]["new_rationales"] == 0
    assert again["accuracy"] == rep["accuracy"]
    assert len(read_jsonl(out / GRADES)) == 12 and len(read_jsonl(out / "scores.jsonl")) == 9

    # an interrupted sampling run (a half-written line) resumes with the missing samples only
    lines = (out / SAMPLES).read_text().splitlines(keepends=True)
    (out / SAMPLES).write_text("".join(lines[:5]) + lines[5][:20])
    resumed = evaluate(tiny, eval_file, out, CFG, ranker=trained_ranker, device="cpu")
    assert resumed["throughput"]["new_rationales"] == 4
    assert len(read_jsonl(out / SAMPLES)) == 9

    # more samples per problem: only the new ones are drawn
    more = evaluate(tiny, eval_file, out, EvalConfig(**{**CFG.__dict__, "samples": 4}),
                    ranker=trained_ranker, device="cpu")
    assert more["throughput"]["new_rationales"] == 3 and more["samples"] == 4

    # other sampling settings in the same OUT are refused
    with pytest.raises(CuratorError, match="other settings"):
        evaluate(tiny, eval_file, out, EvalConfig(**{**CFG.__dict__, "temperature": 0.5}),
                 device="cpu")


def test_samples_import_into_the_warehouse(tiny, eval_file, tmp_path, db_path):
    from curator.cli import app as curator_app
    out = tmp_path / "ev"
    cfg = EvalConfig(samples=2, max_new_tokens=6, temperature=1.0, greedy=False, limit=2)
    evaluate(tiny, eval_file, out, cfg, device="cpu")
    res = CliRunner().invoke(curator_app, ["import", "jsonl", str(out / SAMPLES),
                                           "--skip-invalid", "--rejects",
                                           str(tmp_path / "rejects.jsonl"), "--db", str(db_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    from curator.warehouse import Warehouse
    with Warehouse(db_path).read() as con:
        n_samples, = con.execute("SELECT count(*) FROM samples").fetchone()
    empty = sum(1 for r in read_jsonl(out / SAMPLES) if not r["completion"])
    assert n_samples == 4 - empty


def test_greedy_at_temperature_zero_is_the_first_sample(tiny, eval_file, tmp_path):
    cfg = EvalConfig(samples=2, max_new_tokens=6, temperature=0.0, limit=2)
    rep = evaluate(tiny, eval_file, tmp_path / "ev", cfg, device="cpu")
    assert not (tmp_path / "ev" / "greedy.jsonl").exists()
    assert rep["accuracy"]["greedy"] == rep["accuracy"]["first"]
    assert "asc:s" not in rep["accuracy"]      # no ranker, no ASC rules


def test_summarise_by_subject_level_and_average():
    def row(subject, level, credit, dataset="math"):
        return {"problem_id": "x", "dataset": dataset, "subject": subject, "level": level,
                "rules": {"majority": {"credit": credit}}}
    rows = [row("Algebra", 1, 1.0), row("Algebra", 2, 0.0), row("Algebra", 2, 0.5),
            row("Geometry", 1, 1.0), row(None, None, 0.0, dataset="gsm8k")]
    s = summarise(["majority"], rows)
    a = s["accuracy"]["majority"]
    assert a["by_subject"] == {"Algebra": 0.5, "Geometry": 1.0, "gsm8k": 0.0}
    assert list(a["by_subject"]) == ["Algebra", "Geometry", "gsm8k"]    # paper order first
    assert a["avg"] == pytest.approx(0.5)           # mean over subjects
    assert a["all"] == pytest.approx(2.5 / 5)       # mean over problems
    assert a["by_level"] == {"1": 1.0, "2": 0.25, "none": 0.0}
    assert a["by_dataset"] == {"gsm8k": 0.0, "math": 0.625}
    assert s["counts"]["by_subject"] == {"Algebra": 3, "Geometry": 1, "gsm8k": 1}
    report = {"model": "m", "problems": 5, "data": "d", "samples": 1,
              "sampling": {"temperature": 0.7, "max_new_tokens": 8}, "rules": ["majority"],
              "sample_grades": {"correct": 1, "total": 5, "status": {"correct": 1, "wrong": 4}},
              "ranker": None, **s}
    md = markdown_report(report)
    assert "| rule | Alg (3) | Geo (1) | gsm8k (1) | Avg | All |" in md
    assert "| self-consistency | 50.00 | 100.00 | 0.00 | 50.00 | 50.00 |" in md


def test_cli(tiny, eval_file, tmp_path):
    from distill.cli import app
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", "--base", str(tiny), "--data", str(eval_file),
                                   "--out", str(out), "--samples", "2", "--max-new-tokens", "5",
                                   "--limit", "2", "--device", "cpu"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "## By subject" in res.output and "self-consistency" in res.output
    assert (out / "report.json").is_file()
    bad = CliRunner().invoke(app, ["eval", "--base", str(tiny), "--data", str(eval_file),
                                   "--out", str(tmp_path / "x"), "--asc-weight", "2s"])
    assert bad.exit_code != 0 and "1+2s" in str(bad.exception)
    bad = CliRunner().invoke(app, ["eval", "--base", str(tiny), "--data", str(eval_file),
                                   "--out", str(tmp_path / "y"), "--mode", "nat"])
    assert bad.exit_code != 0 and "supports base" in str(bad.exception)
