"""`distill eval` writes the student into the warehouse: its rationales are samples of a
run of kind `student`, graded by the teachers' grader, and each voting rule's result is a
row of `evaluations` with its interval; re-running adds nothing. On a tiny random model
(CPU, seconds) and a warehouse built through the curator CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.cli import app as curator_app
from curator.grading import GRADER_VERSION
from curator.warehouse import Warehouse
from distill.cli import app

DEMO = Path(__file__).resolve().parents[2] / "curator" / "demo"
EVAL_ARGS = ["--samples", "2", "--max-new-tokens", "5", "--device", "cpu"]


def _curator(db: Path, *args) -> str:
    r = CliRunner().invoke(curator_app, [*map(str, args), "--db", str(db)])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(warehouse with the 70 MATH test problems, an export-eval of 3 of them)."""
    root = tmp_path_factory.mktemp("evalwh")
    db = root / "curator.duckdb"
    _curator(db, "load", "math", DEMO / "math_test_70.jsonl", "--split", "test")
    _curator(db, "export-eval", root / "eval", "--dataset", "math", "--split", "test",
             "--limit", "3")
    return db, root / "eval"


@pytest.fixture
def wh_copy(exported, tmp_path) -> tuple[Path, Path]:
    db, ev = exported
    shutil.copy(db, tmp_path / "copy.duckdb")
    return tmp_path / "copy.duckdb", ev


def _counts(db: Path) -> dict:
    with Warehouse(db).read() as con:
        q = lambda sql: con.execute(sql).fetchall()[0][0]   # noqa: E731
        return {"runs": q("SELECT count(*) FROM runs WHERE kind = 'student'"),
                "samples": q("SELECT count(*) FROM samples s JOIN runs r USING (run_id) "
                             "WHERE r.kind = 'student'"),
                "grades": q("SELECT count(*) FROM grades g JOIN samples s USING (sample_id) "
                            "JOIN runs r USING (run_id) WHERE r.kind = 'student'"),
                "evaluations": q("SELECT count(*) FROM evaluations")}


def test_eval_stores_the_student_graded_with_one_row_per_rule_and_rerun_adds_nothing(
        tiny_model, wh_copy, tmp_path):
    db, ev = wh_copy
    out = tmp_path / "ev"
    args = ["eval", "--base", str(tiny_model), "--data", str(ev), "--out", str(out),
            *EVAL_ARGS, "--db", str(db)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    report = json.loads((out / "report.json").read_text())
    first = _counts(db)
    # the sampled run (3 problems x 2) and the greedy run (3 x 1), every sample graded
    assert first == {"runs": 2, "samples": 9, "grades": 9, "evaluations": len(report["rules"])}

    with Warehouse(db).read() as con:
        runs = con.execute("SELECT run_id, kind, role, model, metadata FROM runs "
                           "WHERE kind = 'student' ORDER BY model").fetchall()
        rows = con.execute("SELECT run_id, eval_dataset, eval_split, rule, n, correct, accuracy, "
                           "ci_low, ci_high, grader_version FROM evaluations "
                           "ORDER BY rule").fetchall()
        versions = {r[0] for r in con.execute(
            "SELECT DISTINCT g.grader_version FROM grades g JOIN samples s USING (sample_id) "
            "JOIN runs r USING (run_id) WHERE r.kind = 'student'").fetchall()}
    assert [r[1:4] for r in runs] == [("student", "student", "student:base:model"),
                                      ("student", "student", "student:base:model:greedy")]
    meta = json.loads(runs[0][4])
    assert meta["method"] == "base" and meta["base_model"] == str(tiny_model.resolve())
    assert versions == {GRADER_VERSION}
    assert sorted(r[3] for r in rows) == sorted(report["rules"])
    sampled = runs[0][0]
    for run_id, ds, split, rule, n, correct, acc, lo, hi, gv in rows:
        assert (run_id, ds, split, n, gv) == (sampled, "math", "test", 3, GRADER_VERSION)
        # the report's accuracy is the warehouse's
        assert acc == pytest.approx(correct / 3) == pytest.approx(report["accuracy"][rule]["all"])
        assert 0 <= lo <= acc <= hi <= 1 and hi - lo > 0
    assert report["warehouse"]["run_id"] == sampled
    assert len(report["warehouse"]["evaluations"]) == len(rows)
    assert "Stored in the warehouse" in (out / "report.md").read_text()

    # re-running (same OUT): nothing added, the same rows
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, (again.output, again.exception)
    assert _counts(db) == first
    assert "0 rationales stored (6 there already), 0 graded" in again.output

    # a second OUT for the same student: the warehouse resumes, nothing new either
    other = CliRunner().invoke(app, [*args[:6], str(tmp_path / "ev2"), *args[7:]])
    assert other.exit_code == 0, (other.output, other.exception)
    assert _counts(db) == first


def test_eval_uses_the_export_manifests_warehouse_and_opts_out(tiny_model, wh_copy, tmp_path,
                                                             monkeypatch):
    db, ev = wh_copy
    monkeypatch.delenv("CURATOR_DB", raising=False)
    recorded = json.loads((ev / "manifest.json").read_text())["warehouse"]
    # the eval export names the warehouse it came from: with no --db that one is used
    res = CliRunner().invoke(app, ["eval", "--base", str(tiny_model), "--data", str(ev),
                                   "--out", str(tmp_path / "a"), *EVAL_ARGS, "--no-greedy"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads((tmp_path / "a" / "report.json").read_text())["warehouse"]["db"] == recorded
    # --no-warehouse: nothing stored anywhere, the report has no warehouse part
    before = _counts(db)
    res = CliRunner().invoke(app, ["eval", "--base", str(tiny_model), "--data", str(ev),
                                   "--out", str(tmp_path / "b"), *EVAL_ARGS, "--db", str(db),
                                   "--no-warehouse"])
    assert res.exit_code != 0 and "contradict" in str(res.exception)
    res = CliRunner().invoke(app, ["eval", "--base", str(tiny_model), "--data", str(ev),
                                   "--out", str(tmp_path / "b"), *EVAL_ARGS, "--no-warehouse"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "warehouse" not in json.loads((tmp_path / "b" / "report.json").read_text())
    assert _counts(db) == before


def test_eval_refuses_a_warehouse_without_the_problems_and_stores_nothing(
        tiny_model, eval_file, wh_copy, tmp_path):
    db, _ = wh_copy
    before = _counts(db)
    res = CliRunner().invoke(app, ["eval", "--base", str(tiny_model), "--data", str(eval_file),
                                   "--out", str(tmp_path / "x"), *EVAL_ARGS, "--db", str(db)])
    assert res.exit_code != 0
    assert "eval problems are not in the warehouse" in str(res.exception)
    assert str(db) in str(res.exception)
    assert _counts(db) == before
    assert not (tmp_path / "x" / "samples.jsonl").exists()   # refused before sampling
    res = CliRunner().invoke(app, ["eval", "--base", str(tiny_model), "--data", str(eval_file),
                                   "--out", str(tmp_path / "y"), *EVAL_ARGS,
                                   "--db", str(tmp_path / "none.duckdb")])
    assert res.exit_code != 0 and "no such file" in str(res.exception)
