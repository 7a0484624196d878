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


def _fetch(db: Path, *sqls: str) -> list[list[tuple]]:
    """The rows of each query, read in one connection to the warehouse."""
    with Warehouse(db).read() as con:
        return [con.execute(sql).fetchall() for sql in sqls]


def _counts(db: Path) -> dict:
    counts = {"runs": "SELECT count(*) FROM runs WHERE kind = 'student'",
              "samples": "SELECT count(*) FROM samples s JOIN runs r USING (run_id) "
                         "WHERE r.kind = 'student'",
              "grades": "SELECT count(*) FROM grades g JOIN samples s USING (sample_id) "
                        "JOIN runs r USING (run_id) WHERE r.kind = 'student'",
              "evaluations": "SELECT count(*) FROM evaluations"}
    return {k: rows[0][0] for k, rows in zip(counts, _fetch(db, *counts.values()))}


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

    runs, rows, graded_by = _fetch(
        db, "SELECT run_id, kind, role, model, metadata FROM runs "
            "WHERE kind = 'student' ORDER BY model",
        "SELECT run_id, eval_dataset, eval_split, rule, n, correct, accuracy, "
        "ci_low, ci_high, grader_version FROM evaluations ORDER BY rule",
        "SELECT DISTINCT g.grader_version FROM grades g JOIN samples s USING (sample_id) "
        "JOIN runs r USING (run_id) WHERE r.kind = 'student'")
    versions = {r[0] for r in graded_by}
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


def test_an_interrupted_evaluation_keeps_what_it_stored_and_resumes(tiny_model, wh_copy,
                                                                     tmp_path, monkeypatch):
    import curator.evaluations as evaluations
    db, ev = wh_copy
    args = ["eval", "--base", str(tiny_model), "--data", str(ev), "--out", str(tmp_path / "ev"),
            *EVAL_ARGS, "--db", str(db), "--no-greedy"]
    real = evaluations.grade_student_run

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluations, "grade_student_run", interrupted)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 130, (res.output, res.exception)   # interrupted (Ctrl-C)
    assert _counts(db) == {"runs": 1, "samples": 6, "grades": 0, "evaluations": 0}
    monkeypatch.setattr(evaluations, "grade_student_run", real)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert "0 rationales stored (6 there already), 6 graded" in res.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert _counts(db) == {"runs": 1, "samples": 6, "grades": 6,
                           "evaluations": len(report["rules"])}


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


@pytest.mark.slow
def test_compare_puts_every_student_and_seed_under_one_comparison(tiny_model, tmp_path):
    """Two seeds of CoT KD and the base, in the warehouse of their training export: one
    comparison id, a run per seed with the seed in its metadata, the export's teacher
    beside them in method_comparison; re-running (and redoing the evaluations) adds
    nothing."""
    from distill.compare import compare

    db = tmp_path / "curator.duckdb"
    _curator(db, "load", "math", DEMO / "math_train_200.jsonl", "--split", "train")
    _curator(db, "load", "math", DEMO / "math_test_70.jsonl", "--split", "test")
    _curator(db, "import", "tdg", DEMO / "tdg_gpt4_200.jsonl.gz", "--model", "gpt-4")
    _curator(db, "grade")
    _curator(db, "export", tmp_path / "export", "--dataset", "math", "--splits", "train=1.0")
    _curator(db, "export-eval", tmp_path / "eval", "--dataset", "math", "--split", "test",
             "--limit", "2")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
name = "two seeds"
out = "{tmp_path / 'out'}"
[model]
base = "{tiny_model}"
[data]
train = "{tmp_path / 'export' / 'train.jsonl'}"
[[eval]]
name = "MATH"
data = "{tmp_path / 'eval' / 'test.jsonl'}"
[methods]
run = ["base", "sft"]
[warehouse]
db = "{db}"
comparison = "c1"
[train]
max_steps = 1
batch_size = 2
max_length = 128
cpu = true
[evaluate]
samples = 1
max_new_tokens = 4
""")
    compare(cfg, seeds=[0, 1], echo=lambda s: None)
    first = _counts(db)
    labels, seeds, roles = _fetch(
        db, "SELECT DISTINCT label, run_id FROM evaluations "
            "WHERE comparison_id = 'c1' ORDER BY label",
        "SELECT metadata->>'method', metadata->'training_config'->>'seed' "
        "FROM runs WHERE run_id IN (SELECT run_id FROM evaluations) ORDER BY 1, 2",
        "SELECT role, label, count(*) FROM method_comparison "
        "WHERE comparison_id = 'c1' GROUP BY ALL ORDER BY 1 DESC, 2")
    assert [lb for lb, _ in labels] == ["base", "sft@s0", "sft@s1"]
    assert len({r for _, r in labels}) == 3                       # a run per seed
    assert seeds == [("base", None), ("sft", "0"), ("sft", "1")]
    rules = first["evaluations"] // 3
    assert roles == [("teacher", "gpt-4", 1), ("student", "base", rules),
                     ("student", "sft@s0", rules), ("student", "sft@s1", rules)]
    compare(cfg, seeds=[0, 1], echo=lambda s: None)                # everything skipped
    compare(cfg, seeds=[0, 1], redo=("eval:*",), echo=lambda s: None)
    assert _counts(db) == first
