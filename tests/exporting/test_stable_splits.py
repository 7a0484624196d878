"""The split contract of `curator export`: a problem's split depends only on its id and
the seed (keyed hash), --splits-from keeps an earlier export's assignment exactly, and
nothing from evaluation (student runs, test-split problems, eval-exported problems)
reaches a training export by default. Pure checks on synthetic ids, and the real CLI on
the fixture warehouse."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.errors import CuratorError
from curator.exporting import ExportOptions, export_training
from curator.exporting.splits import (DEFAULT_SPLITS, hash_split, parse_splits,
                                      stable_assignment)
from curator.ids import problem_id, sample_id

from .conftest import CURRENT_GRADER, SHARED, fixture_grade

SPLITS = "train=0.6,validation=0.2,test=0.2"


def run(*args, db: Path, ok: bool = True):
    result = CliRunner().invoke(app, [*map(str, args), "--db", str(db)])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def assignment_of(out: Path) -> dict[str, str]:
    """problem_id -> split, read from the data files (not the manifest)."""
    m = json.loads((out / "manifest.json").read_text())
    got: dict[str, str] = {}
    for split in m["selection"]["splits"]:
        f = out / f"{split}.jsonl"
        if f.stat().st_size:
            for pid in pl.read_ndjson(f)["problem_id"].unique():
                assert got.setdefault(pid, split) == split
    return got


# -- the pure function -------------------------------------------------------------------

def _shares_within(assignment: dict[str, str], spec, points: float) -> None:
    sizes = Counter(assignment.values())
    for name, frac in zip(spec.names, spec.fractions):
        share = sizes[name] / len(assignment)
        assert abs(share - float(frac)) * 100 <= points, (name, sizes, len(assignment))


@pytest.mark.parametrize("n", [2000, 5000, 7500, 12500])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_sizes_within_two_points(n, seed):
    # real-looking ids: the MATH train set is 7,500 problems, test 5,000, both 12,500
    ids = [problem_id("math", "train", f"synthetic/{i}") for i in range(n)]
    spec = parse_splits(DEFAULT_SPLITS)
    _shares_within(stable_assignment(ids, spec, seed).assignment, spec, 2.0)
    spec = parse_splits("train=0.8,test=0.2")
    _shares_within(stable_assignment(ids, spec, seed).assignment, spec, 2.0)


def test_removing_or_adding_problems_moves_none():
    spec = parse_splits(DEFAULT_SPLITS)
    ids = [f"p{i}" for i in range(3000)]
    full = stable_assignment(ids, spec, 5).assignment
    for drop in (0, 1234, 2999):
        fewer = stable_assignment(ids[:drop] + ids[drop + 1:], spec, 5).assignment
        assert sum(full[p] != s for p, s in fewer.items()) == 0
    more = stable_assignment(ids + [f"q{i}" for i in range(500)], spec, 5).assignment
    assert all(more[p] == s for p, s in full.items())
    # order of the ids does not matter either, and each is the hash of the id alone
    assert stable_assignment(ids[::-1], spec, 5).assignment == full
    assert all(hash_split(p, spec, 5) == s for p, s in full.items())
    other_seed = stable_assignment(ids, spec, 6).assignment
    assert sum(full[p] != other_seed[p] for p in ids) > 300


def test_earlier_assignment_is_reused_and_checked():
    spec = parse_splits("train=0.5,test=0.5")
    earlier = {"a": "test", "b": "test", "c": "train"}
    got = stable_assignment(["a", "b", "c", "d"], spec, 0, earlier)
    assert {k: got.assignment[k] for k in earlier} == earlier
    assert (got.reused, got.hashed) == (3, 1)
    assert got.assignment["d"] == hash_split("d", spec, 0)
    with pytest.raises(CuratorError, match=r"split\(s\) \['validation'\].*same split names"):
        stable_assignment(["a"], spec, 0, {"a": "validation"})


def test_real_math_ids_within_two_points():
    math = (SHARED / "MATH").resolve()
    if not (math / "train").is_dir():
        pytest.skip(f"{math} is not present")
    spec = parse_splits(DEFAULT_SPLITS)
    for split in ("train", "test"):
        # the ids `curator load math` gives: the file's subject folder and number
        ids = [problem_id("math", split, f"{f.parent.name}/{f.stem}")
               for f in (math / split).rglob("*.json")]
        assert len(ids) == {"train": 7500, "test": 5000}[split]
        for seed in range(3):
            _shares_within(stable_assignment(ids, spec, seed).assignment, spec, 2.0)


# -- the real CLI on the fixture warehouse -------------------------------------------

def test_exports_differing_by_one_problem_move_none(fresh_graded_wh, tmp_path):
    db = fresh_graded_wh.path
    run("export", tmp_path / "a", "--splits", SPLITS, "--seed", "4", db=db)
    a = assignment_of(tmp_path / "a")
    gone = sorted(a)[17]
    run("export", tmp_path / "b", "--splits", SPLITS, "--seed", "4",
        "--where", f"problem_id != '{gone}'", db=db)
    b = assignment_of(tmp_path / "b")
    assert set(a) - set(b) == {gone}
    assert sum(a[p] != s for p, s in b.items()) == 0
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["split_assignment"]["method"] == "keyed-hash"
    assert m["split_assignment"]["seed"] == 4
    assert m["split_assignment"]["problems"]["test"] == sorted(
        p for p, s in b.items() if s == "test")


def test_splits_from_reproduces_an_earlier_export(fresh_graded_wh, tmp_path):
    db = fresh_graded_wh.path
    # the earlier export: 3.5-turbo problems only, another seed
    run("export", tmp_path / "old", "--splits", SPLITS, "--seed", "9", "--runs",
        "gpt-3.5-turbo", db=db)
    old = assignment_of(tmp_path / "old")
    r = run("export", tmp_path / "new", "--splits", SPLITS, "--splits-from", tmp_path / "old",
            db=db)
    new = assignment_of(tmp_path / "new")
    assert len(new) > len(old)
    assert all(new[p] == s for p, s in old.items())
    spec = parse_splits(SPLITS)
    assert all(new[p] == hash_split(p, spec, 0) for p in set(new) - set(old))
    m = json.loads((tmp_path / "new" / "manifest.json").read_text())
    block = m["split_assignment"]
    assert block["reused"] == len(old) and block["hashed"] == len(new) - len(old)
    assert block["splits_from"]["read_from"] == "manifest"
    assert "kept the split of" in r.output and "seed 0" in r.output  # seeds differ: warned


def test_splits_from_an_export_without_an_assignment_block(fresh_graded_wh, tmp_path):
    """Exports written before the keyed hash (balanced, no split_assignment in the
    manifest) are read back from their data files, in every format."""
    db = fresh_graded_wh.path
    for fmt in ("jsonl", "parquet", "hf"):
        old = tmp_path / f"old-{fmt}"
        export_training(fresh_graded_wh, old, ExportOptions(
            splits=SPLITS, split_method="balanced", format=fmt), record=False)
        mpath = old / "manifest.json"
        m = json.loads(mpath.read_text())
        expected = {p: s for s, ids in m.pop("split_assignment")["problems"].items() for p in ids}
        mpath.write_text(json.dumps(m))
        new = tmp_path / f"new-{fmt}"
        run("export", new, "--splits", SPLITS, "--splits-from", mpath, db=db)
        assert assignment_of(new) == expected
        block = json.loads((new / "manifest.json").read_text())["split_assignment"]
        assert block["splits_from"]["read_from"] == "data files"
        assert block["hashed"] == 0


def test_splits_from_errors(fresh_graded_wh, tmp_path):
    db = fresh_graded_wh.path
    r = run("export", tmp_path / "x", "--splits-from", tmp_path / "nowhere", db=db, ok=False)
    assert r.exit_code != 0 and "--splits-from" in str(r.exception or r.output)
    run("export-eval", tmp_path / "ev", "--dataset", "math", "--limit", "5", db=db)
    with pytest.raises(CuratorError, match="not the manifest of a training export"):
        export_training(fresh_graded_wh, tmp_path / "y",
                        ExportOptions(splits_from=str(tmp_path / "ev")))
    run("export", tmp_path / "three", db=db)
    with pytest.raises(CuratorError, match="does not name"):
        export_training(fresh_graded_wh, tmp_path / "z", ExportOptions(
            splits="train=0.5,test=0.5", splits_from=str(tmp_path / "three")))
    with pytest.raises(CuratorError, match="balanced only"):
        export_training(fresh_graded_wh, tmp_path / "z", ExportOptions(stratify=("level",)))
    with pytest.raises(CuratorError, match="unknown method"):
        export_training(fresh_graded_wh, tmp_path / "z", ExportOptions(split_method="random"))
    assert not (tmp_path / "z").exists()


# -- nothing from evaluation into training -----------------------------------------

def _add_student_run(wh, tmp_path: Path, db: Path) -> set[str]:
    """Import a student's samples on the 70 MATH test problems through the CLI (as the
    README does with distill's samples.jsonl) and grade them with the current grader."""
    with wh.read() as con:
        probs = con.execute("SELECT problem_id, reference_answer FROM problems "
                            "WHERE split = 'test' ORDER BY problem_id").fetchall()
    path = tmp_path / "student.jsonl"
    with path.open("w") as f:
        for pid, ref in probs:
            for k, text in enumerate((f"So the answer is $\\boxed{{{ref}}}$.",
                                      "I think the answer is $\\boxed{0}$.")):
                f.write(json.dumps({"problem_id": pid, "model": "student:nat-tiny",
                                    "sample_index": k, "completion": text}) + "\n")
    run("import", "jsonl", path, "--dataset", "math", "--split", "test", db=db)
    with wh.write() as con:
        rows = con.execute("""SELECT s.sample_id, s.completion, p.reference_answer
                              FROM samples s JOIN runs r USING (run_id)
                              JOIN problems p USING (problem_id)
                              WHERE r.model = 'student:nat-tiny'""").fetchall()
        for sid, text, ref in rows:
            ok, status, got = fixture_grade(text, ref)
            con.execute("INSERT INTO grades (sample_id, grader_version, correct, status, "
                        "extracted) VALUES (?, ?, ?, ?, ?)", [sid, CURRENT_GRADER, ok, status, got])
        role = con.execute("SELECT DISTINCT role FROM runs WHERE model = 'student:nat-tiny'"
                           ).fetchall()
    assert role == [("student",)]
    return {sid for sid, _, _ in rows}


def test_default_export_holds_back_students_and_eval_problems(fresh_graded_wh, tmp_path):
    wh, db = fresh_graded_wh, fresh_graded_wh.path
    student_samples = _add_student_run(wh, tmp_path, db)
    # an eval set drawn from *train* problems: they must be held back from now on
    run("export-eval", tmp_path / "ev", "--dataset", "math", "--split", "train", "--limit", "15",
        db=db)
    eval_ids = set(pl.read_ndjson(tmp_path / "ev" / "train.jsonl")["problem_id"])
    with wh.read() as con:
        test_ids = {r[0] for r in con.execute(
            "SELECT problem_id FROM problems WHERE split = 'test'").fetchall()}
        recorded = {r[0] for r in con.execute(
            "SELECT problem_id FROM eval_export_problems").fetchall()}
    assert eval_ids <= recorded

    r = run("export", tmp_path / "train", "--splits", SPLITS, db=db)
    out = tmp_path / "train"
    df = pl.concat([pl.read_ndjson(out / f"{s}.jsonl") for s in ("train", "validation", "test")])
    assert not set(df["sample_id"]) & student_samples
    assert not set(df["teacher_model"]) - {"gpt-4", "gpt-3.5-turbo"}
    assert not set(df["problem_id"]) & (test_ids | eval_ids)
    assert "held back 15 evaluation problem(s)" in r.output
    assert "15 written by curator export-eval" in r.output
    assert "left out student run" in r.output and "student:nat-tiny" in r.output
    m = json.loads((out / "manifest.json").read_text())
    held = m["held_back"]
    # the test problems have only student samples, which are already left out
    assert held["problems"] == 15
    assert set(held["reasons"]["eval_export"]) == eval_ids
    assert [s["model"] for s in held["student_runs_left_out"]] == ["student:nat-tiny"]
    steps = [s["step"] for s in m["funnel"]]
    assert steps[1].startswith("teacher runs only") and steps[-2].startswith("holding back")

    # naming the student run takes it; its test problems are still held back ...
    with pytest.raises(CuratorError, match="empty: holding back evaluation problems"):
        export_training(wh, tmp_path / "s1", ExportOptions(runs=("student:nat-tiny",)))
    # ... unless the loud flag says otherwise
    r = run("export", tmp_path / "s2", "--runs", "student:nat-tiny", "--splits", SPLITS,
            "--allow-eval-problems", db=db)
    df2 = pl.concat([pl.read_ndjson(tmp_path / "s2" / f"{s}.jsonl")
                     for s in ("train", "validation", "test")])
    assert set(df2["problem_id"]) == test_ids
    m2 = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert m2["held_back"] == {"allow_eval_problems": True, "problems": 0, "reasons": {},
                               "student_runs_left_out": []}
    assert "held back" not in r.output


def test_test_split_problems_with_teacher_samples_are_held_back(fresh_graded_wh, tmp_path):
    """A teacher run on a test split (e.g. a teacher baseline) stays out of training."""
    wh = fresh_graded_wh
    with wh.write() as con:
        con.execute("INSERT INTO runs (run_id, kind, model, role) VALUES "
                    "('r_base', 'generate', 'gpt-4-baseline', 'teacher')")
        rows = con.execute("SELECT problem_id, reference_answer FROM problems "
                           "WHERE split = 'test' ORDER BY problem_id LIMIT 12").fetchall()
        for pid, ref in rows:
            sid = sample_id("r_base", pid, 0)
            con.execute("INSERT INTO samples (sample_id, run_id, problem_id, sample_index, "
                        "completion, finish_reason) VALUES (?, 'r_base', ?, 0, ?, 'stop')",
                        [sid, pid, f"The answer is $\\boxed{{{ref}}}$"])
            con.execute("INSERT INTO grades (sample_id, grader_version, correct, status) "
                        "VALUES (?, ?, true, 'correct')", [sid, CURRENT_GRADER])
    res = export_training(wh, tmp_path / "o", ExportOptions(splits=SPLITS))
    held = res.manifest["held_back"]
    assert held["problems"] == 12
    assert held["reasons"]["dataset_test_split"] == sorted(r[0] for r in rows)
    # (other tests' eval exports of the test split may have been recorded too)
    assert set(held["reasons"].get("eval_export", [])) <= {r[0] for r in rows}
    assert "r_base" not in {r["run_id"] for r in res.manifest["selection"]["runs"]}
