"""Samples nobody graded yet: an export cannot label them, so it leaves them out, and says
so (a warning, in the manifest too) naming `curator grade`; an export of only such a
run fails saying to grade it, not that --runs is wrong."""

from __future__ import annotations

import json

import pytest

from curator.errors import CuratorError
from curator.exporting import ExportOptions, export_training

from .test_stable_splits import run

SPLITS = "train=0.6,validation=0.2,test=0.2"


def _import_ungraded(wh, tmp_path, model: str = "gpt-3.5-new", problems: int = 31) -> int:
    """A teacher run imported (as `curator import` does) and never graded; returns its
    number of samples."""
    with wh.read() as con:
        probs = con.execute("SELECT problem_id, reference_answer FROM problems WHERE split = "
                            f"'train' ORDER BY problem_id LIMIT {problems}").fetchall()
    path = tmp_path / "new.jsonl"
    with path.open("w") as f:
        for pid, ref in probs:
            for k, text in enumerate((f"So the answer is $\\boxed{{{ref}}}$.",
                                      "Hence $\\boxed{-1}$.")):
                f.write(json.dumps({"problem_id": pid, "model": model, "sample_index": k,
                                    "completion": text}) + "\n")
    run("import", "jsonl", path, db=wh.path)
    return 2 * len(probs)


def test_export_warns_about_ungraded_samples(fresh_graded_wh, tmp_path):
    wh = fresh_graded_wh
    clean = export_training(wh, tmp_path / "before", ExportOptions(splits=SPLITS), record=False)
    assert clean.manifest["ungraded_left_out"] == []
    assert not [w for w in clean.warnings if "curator grade" in w]

    n = _import_ungraded(wh, tmp_path)
    r = run("export", tmp_path / "x", "--splits", SPLITS, db=wh.path)
    text = " ".join(r.output.split())
    assert f"{n} sample(s) of the selected runs are not graded by the current grader" in text
    assert "run `curator grade` to grade them" in text
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    [left] = m["ungraded_left_out"]
    assert left["model"] == "gpt-3.5-new" and left["samples"] == n
    assert any(left["run_id"] in w and "curator grade" in w for w in m["warnings"])
    # the export itself is what it was: the ungraded run contributes nothing
    assert m["totals"] == clean.manifest["totals"]
    # --dataset counts only that dataset's samples
    res = export_training(wh, tmp_path / "y", ExportOptions(splits=SPLITS, datasets=("math",)),
                          record=False)
    assert res.manifest["ungraded_left_out"][0]["samples"] == n


def test_runs_of_an_ungraded_run_says_to_grade(fresh_graded_wh, tmp_path):
    wh = fresh_graded_wh
    n = _import_ungraded(wh, tmp_path)
    r = run("export", tmp_path / "x", "--runs", "gpt-3.5-new", db=wh.path, ok=False)
    assert r.exit_code != 0
    text = " ".join(str(r.exception or r.output).split())
    assert "--runs gpt-3.5-new has no sample graded by the current grader" in text
    assert f"{n} not graded" in text and "run `curator grade` first" in text
    assert "left 0 of" not in text
    # a run that is graded but filtered out still gets the usual funnel message
    with pytest.raises(CuratorError, match=r"--where 'level > 9' left 0 of the .*"
                                           r"run `curator grade` to grade them"):
        export_training(wh, tmp_path / "z", ExportOptions(where="level > 9"), record=False)
