"""curator.evaluations: student runs, samples, grades and evaluations in the warehouse,
and the method_comparison view. A small real warehouse built through the CLI (the demo
MATH problems, a teacher imported and graded by the real grader, a training export);
students are written through the API as `distill eval` will. No torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.errors import CuratorError
from curator.evaluations import (StudentSample, add_samples, ensure_student_run,
                                 grade_student_run, read_evaluations, record_evaluation,
                                 record_evaluations, student_grades, wilson_interval)
from curator.grading import GRADER_VERSION
from curator.latex import last_boxed
from curator.warehouse import Warehouse

DEMO = Path(__file__).resolve().parents[1] / "curator" / "demo"
SAMPLING = {"k": 2, "temperature": 0.7, "max_new_tokens": 512, "seed": 0}


def _cli(db: Path, *args) -> str:
    r = CliRunner().invoke(app, [*map(str, args), "--db", str(db)])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.output


def _problems(wh: Warehouse, split: str, limit: int) -> list[tuple[str, str]]:
    with wh.read() as con:
        return con.execute("SELECT problem_id, reference_answer FROM problems WHERE split = ? "
                           "ORDER BY problem_id LIMIT ?", [split, limit]).fetchall()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """(warehouse, training export): 200 train + 70 test MATH problems; a teacher
    'gpt-4' with 2 samples on 40 train problems (one right, one wrong), graded by the
    real grader; an export of it."""
    root = tmp_path_factory.mktemp("evals")
    db = root / "curator.duckdb"
    _cli(db, "load", "math", DEMO / "math_train_200.jsonl", "--split", "train")
    _cli(db, "load", "math", DEMO / "math_test_70.jsonl", "--split", "test")
    wh = Warehouse(db)
    teacher = root / "teacher.jsonl"
    with teacher.open("w") as f:
        for pid, ref in _problems(wh, "train", 40):
            for k, text in enumerate((f"Thus the answer is $\\boxed{{{ref}}}$.",
                                      "Thus the answer is $\\boxed{-123456}$.")):
                f.write(json.dumps({"problem_id": pid, "model": "gpt-4", "sample_index": k,
                                    "completion": text}) + "\n")
    _cli(db, "import", "jsonl", teacher)
    _cli(db, "grade")
    _cli(db, "export", root / "train-export", "--splits", "train=0.9,test=0.1")
    return db, root / "train-export"


@pytest.fixture
def wh(base, tmp_path) -> Warehouse:
    import shutil
    shutil.copy(base[0], tmp_path / "copy.duckdb")
    return Warehouse(tmp_path / "copy.duckdb")


def _student_samples(problems, right_every: int) -> list[StudentSample]:
    out = []
    for i, (pid, ref) in enumerate(problems):
        good = i % right_every == 0
        for k in range(2):
            answer = ref if good else "-7"
            out.append(StudentSample(pid, k, f"... so the answer is $\\boxed{{{answer}}}$.",
                                     finish_reason="stop", completion_tokens=20,
                                     metadata={"logprob": -1.5 - k}))
    return out


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # textbook value
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    low, high = wilson_interval(37.5, 100)  # partial credit is allowed
    assert low < 0.375 < high
    with pytest.raises(CuratorError, match="n > 0"):
        wilson_interval(0, 0)


def test_student_run_is_created_once_and_classified_as_student(wh, base):
    adapter = Path(base[1]).parent / "nat-adapter"
    a = ensure_student_run(wh, base_model="tiny-llama", adapter_path=adapter, method="nat",
                           sampling=SAMPLING, training_config={"lr": 1e-4, "epochs": 2},
                           training_export=base[1])
    b = ensure_student_run(wh, base_model="tiny-llama", adapter_path=adapter, method="nat",
                           sampling=dict(reversed(list(SAMPLING.items()))),
                           training_config={"epochs": 2, "lr": 1e-4}, training_export=base[1])
    assert a.created and not b.created and a.run_id == b.run_id
    assert a.model == "student:nat:nat-adapter"
    with wh.read() as con:
        teacher = con.execute("SELECT run_id FROM runs WHERE model = 'gpt-4'").fetchall()[0][0]
        rows = con.execute("SELECT kind, role, params->>'temperature', metadata FROM runs "
                           "WHERE run_id = ?", [a.run_id]).fetchall()
        roles = dict(con.execute("SELECT run_id, role FROM run_roles").fetchall())
    kind, role, temp, meta = rows[0]
    meta = json.loads(meta)
    assert (kind, role, temp) == ("student", "student", "0.7")
    assert meta["adapter_path"] == str(adapter.resolve())
    assert meta["teacher_run_ids"] == [teacher]
    assert meta["training_config"] == {"lr": 1e-4, "epochs": 2}
    assert roles == {teacher: "teacher", a.run_id: "student"}
    # other sampling settings: another run
    c = ensure_student_run(wh, base_model="tiny-llama", adapter_path=adapter, method="nat",
                           sampling={**SAMPLING, "temperature": 0.0},
                           training_config={"lr": 1e-4, "epochs": 2})
    assert c.created and c.run_id != a.run_id
    # the same adapter recorded with another training config: refused, nothing written
    with pytest.raises(CuratorError, match="retrained in place"):
        ensure_student_run(wh, base_model="tiny-llama", adapter_path=adapter, method="nat",
                           sampling=SAMPLING, training_config={"lr": 2e-4, "epochs": 2})
    with pytest.raises(CuratorError, match="training_export: cannot read .*teacher.jsonl"):
        ensure_student_run(wh, base_model="x", adapter_path=None, method="base",
                           sampling=SAMPLING, training_export=base[0].parent / "teacher.jsonl")


def test_samples_append_idempotently_grade_and_evaluate(wh):
    run = ensure_student_run(wh, base_model="tiny-llama", adapter_path=None, method="base",
                             sampling=SAMPLING)
    test = _problems(wh, "test", 30)
    samples = _student_samples(test, right_every=3)
    first = add_samples(wh, run.run_id, samples[:40])
    assert (first.added, first.present) == (40, 0)
    # an interrupted evaluation resumed: the whole list again adds only the rest
    again = add_samples(wh, run.run_id, [s.__dict__ for s in samples])
    assert (again.added, again.present) == (20, 40)
    assert add_samples(wh, run.run_id, samples).added == 0

    report = grade_student_run(wh, run.run_id, workers=1)
    assert report.graded == 60 and report.grader_version == GRADER_VERSION
    assert grade_student_run(wh, run.run_id, workers=1).graded == 0  # re-run grades nothing
    grades = student_grades(wh, run.run_id)
    assert len(grades) == 60
    assert sum(g["correct"] for g in grades) == 20  # problems 0, 3, ..., 27: 10 x 2 samples
    assert grades[0]["metadata"] == {"logprob": -1.5}

    # vote (first sample) and record, as distill eval will
    first_right = sum(g["correct"] for g in grades if g["sample_index"] == 0)
    rows = record_evaluations(wh, run.run_id, [
        {"rule": "first", "n": 30, "correct": first_right},
        {"rule": "majority", "n": 30, "correct": first_right + 0.5,
         "metadata": {"ties": 1}}], eval_dataset="math", eval_split="test")
    assert [r.rule for r in rows] == ["first", "majority"]
    assert rows[0].accuracy == pytest.approx(10 / 30)
    assert rows[0].ci_low < rows[0].accuracy < rows[0].ci_high
    # re-running replaces, never duplicates
    record_evaluation(wh, run.run_id, eval_dataset="math", eval_split="test", rule="first",
                      n=30, correct=11)
    stored = read_evaluations(wh, run_id=run.run_id)
    assert [(e.rule, e.correct, e.grader_version) for e in stored] == [
        ("first", 11.0, GRADER_VERSION), ("majority", 10.5, GRADER_VERSION)]
    assert stored[1].metadata == {"ties": 1}
    with wh.read() as con:
        assert con.execute("SELECT count(*) FROM samples WHERE run_id = ?",
                           [run.run_id]).fetchall()[0][0] == 60
        assert con.execute("SELECT count(*) FROM evaluations").fetchall()[0][0] == 2


@pytest.mark.parametrize("samples, message", [
    ([{"problem_id": "p_nope", "sample_index": 0, "completion": "x"}], "not in the warehouse"),
    ([{"problem_id": "P", "sample_index": -1, "completion": "x"}], "sample_index must be"),
    ([{"problem_id": "P", "sample_index": 0, "completion": "x", "logprob": 1}], "unknown field"),
    ([{"problem_id": "P", "sample_index": 0, "completion": "a"},
      {"problem_id": "P", "sample_index": 0, "completion": "b"}], "given twice"),
    (["text"], "expected a StudentSample"),
])
def test_bad_samples_store_nothing(wh, samples, message):
    run = ensure_student_run(wh, base_model="m", adapter_path=None, method="base",
                             sampling=SAMPLING)
    pid = _problems(wh, "test", 1)[0][0]
    samples = [dict(s, problem_id=pid) if isinstance(s, dict) and s["problem_id"] == "P" else s
               for s in samples]
    with pytest.raises(CuratorError, match=message):
        add_samples(wh, run.run_id, samples)
    with wh.read() as con:
        assert con.execute("SELECT count(*) FROM samples WHERE run_id = ?",
                           [run.run_id]).fetchall()[0][0] == 0


def test_bad_evaluations_and_runs_rejected(wh):
    run = ensure_student_run(wh, base_model="m", adapter_path=None, method="base",
                             sampling=SAMPLING)
    for kw, message in (({"n": 0, "correct": 0}, "n must be a positive integer"),
                        ({"n": 10, "correct": 11}, r"correct must be a number in \[0, n=10\]"),
                        ({"n": 10, "correct": 1, "rule": ""}, "rule must be a non-empty")):
        args = {"rule": "first", **kw}
        with pytest.raises(CuratorError, match=message):
            record_evaluation(wh, run.run_id, eval_dataset="math", eval_split="test", **args)
    with pytest.raises(CuratorError, match="given twice"):
        record_evaluations(wh, run.run_id, [{"rule": "a", "n": 1, "correct": 1}] * 2,
                           eval_dataset="math", eval_split="test")
    with wh.read() as con:
        teacher = con.execute("SELECT run_id FROM runs WHERE model = 'gpt-4'").fetchall()[0][0]
    with pytest.raises(CuratorError, match="only student runs"):
        add_samples(wh, teacher, [])
    with pytest.raises(CuratorError, match="no run r_missing"):
        record_evaluation(wh, "r_missing", eval_dataset="math", eval_split="test", rule="a",
                          n=1, correct=1)
    assert read_evaluations(wh) == []


def test_method_comparison_puts_students_beside_their_teachers(wh, base):
    """Two students of one comparison, evaluated on 20 *train* problems the teacher also
    answered (so the teacher's pass rate there is available) and on the test split (where
    it is not)."""
    train = _problems(wh, "train", 20)
    test = _problems(wh, "test", 10)
    students = {}
    for method, right_every in (("nat", 2), ("nce", 1)):
        run = ensure_student_run(wh, base_model="tiny-llama", adapter_path=base[1].parent / method,
                                 method=method, sampling=SAMPLING,
                                 training_config={"method": method}, training_export=base[1])
        add_samples(wh, run.run_id, _student_samples(train + test, right_every))
        grade_student_run(wh, run.run_id, workers=1)
        for split, probs in (("train", train), ("test", test)):
            ids = {p for p, _ in probs}
            right = sum(g["correct"] for g in student_grades(wh, run.run_id)
                        if g["problem_id"] in ids and g["sample_index"] == 0)
            record_evaluation(wh, run.run_id, eval_dataset="math", eval_split=split,
                              rule="first", n=len(probs), correct=right,
                              comparison_id="cmp-1", label=method.upper())
        students[method] = run.run_id
    with wh.read() as con:
        rows = con.execute("""SELECT role, label, method, eval_split, n, correct, accuracy,
                                     ci_low, ci_high, training_config->>'method'
                              FROM method_comparison WHERE comparison_id = 'cmp-1'
                              ORDER BY eval_split, role, label""").fetchall()
    got = {(r[0], r[1], r[3]): r for r in rows}
    assert set(got) == {("student", "NAT", "train"), ("student", "NCE", "train"),
                        ("teacher", "gpt-4", "train"), ("student", "NAT", "test"),
                        ("student", "NCE", "test"), ("teacher", "gpt-4", "test")}
    assert got[("student", "NAT", "train")][4:7] == (20, 10.0, 0.5)
    assert got[("student", "NCE", "train")][6] == 1.0
    assert got[("student", "NAT", "train")][9] == "nat"
    # the teacher: one right and one wrong sample on each of the 20 train problems
    role, label, method, split, n, correct, acc, low, high, _ = got[("teacher", "gpt-4", "train")]
    assert (n, correct, acc) == (40, 20.0, 0.5)
    assert (low, high) == pytest.approx(wilson_interval(20, 40))
    # ... and no samples on the test problems: no pass rate
    assert got[("teacher", "gpt-4", "test")][4:7] == (0, 0.0, None)


def test_migration_classifies_the_runs_of_an_older_warehouse(tmp_path):
    """A warehouse written before migration 005: its runs get a role (students by the
    names distill gives them), and the new tables and views appear."""
    import duckdb

    from curator.warehouse import migrations
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR "
                "NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
    for version, name, sql in migrations():
        if version < 5:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        [version, name])
    con.execute("""INSERT INTO runs (run_id, kind, model) VALUES
                   ('r1', 'import', 'gpt-4'), ('r2', 'import', 'student:nat-out:nat'),
                   ('r3', 'import', 'base:Qwen2.5-0.5B'), ('r4', 'generate', 'claude-3-haiku')""")
    con.close()
    wh = Warehouse(db)
    with wh.read() as con:
        roles = dict(con.execute("SELECT run_id, role FROM runs").fetchall())
        assert con.execute("SELECT count(*) FROM evaluations").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM method_comparison").fetchall() == [(0,)]
    assert roles == {"r1": "teacher", "r2": "student", "r3": "student", "r4": "teacher"}
