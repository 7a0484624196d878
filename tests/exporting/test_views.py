"""The failure-chain views, checked against the same facts computed in Python."""

from __future__ import annotations

from collections import defaultdict

import pytest


@pytest.fixture(scope="module")
def graded(fixture_db):
    from curator.warehouse import Warehouse
    with Warehouse(fixture_db).read() as con:
        rows = con.execute("""SELECT g.sample_id, g.problem_id, r.model, g.correct, g.extracted_answer
                              FROM graded_samples g JOIN runs r USING (run_id)""").fetchall()
    return rows


def test_failure_chains_are_the_negatives(graded_wh, graded):
    with graded_wh.read() as con:
        rows = con.sql("SELECT * FROM failure_chains").pl()
        neg = {r[0] for r in con.execute("SELECT sample_id FROM negatives").fetchall()}
    assert set(rows["sample_id"]) == neg == {s for s, _, _, ok, _ in graded if not ok}
    for col in ("question", "reference_answer", "extracted_answer", "grade_status", "teacher",
                "rationale"):
        assert col in rows.columns
    assert set(rows["grade_status"]) <= {"wrong", "no_answer"}
    assert set(rows["teacher"]) == {"gpt-4", "gpt-3.5-turbo"}


def test_hard_problems_have_only_negatives(graded_wh, graded):
    verdicts = defaultdict(list)
    for _, pid, _, ok, _ in graded:
        verdicts[pid].append(ok)
    expected = {pid for pid, v in verdicts.items() if not any(v)}
    with graded_wh.read() as con:
        rows = con.execute("SELECT problem_id, rationales, commonest_wrong_answer "
                           "FROM hard_problems").fetchall()
    assert {r[0] for r in rows} == expected
    assert expected  # the fixture has problems no teacher solved
    for pid, n, _ in rows:
        assert n == len(verdicts[pid])


def test_disagreements_are_split_majorities(graded_wh, graded):
    per = defaultdict(lambda: defaultdict(list))
    for _, pid, model, ok, _ in graded:
        per[pid][model].append(ok)
    expected = {}
    for pid, teachers in per.items():
        solved = sorted(m for m, v in teachers.items() if 2 * sum(v) > len(v))
        failed = sorted(m for m, v in teachers.items() if 2 * sum(v) <= len(v))
        if solved and failed:
            expected[pid] = (solved, failed)
    with graded_wh.read() as con:
        rows = con.execute("SELECT problem_id, solved_by, failed_by, pass_rates "
                           "FROM disagreements").fetchall()
    assert {r[0]: (r[1], r[2]) for r in rows} == expected
    assert expected  # GPT-4 and GPT-3.5 disagree on some of the 60 shared problems
    for pid, _, _, rates in rows:
        for model, rate in rates.items():
            v = per[pid][model]
            assert rate == pytest.approx(sum(v) / len(v), abs=1e-3)


def test_failure_chains_carry_the_normalized_answer(cli, fixtures, tmp_path):
    """Wrong answers group by their normal form: \\frac{5}{2} and 5/2 are one answer."""
    import json
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "1", "question": "What is 7/2?", "answer": "7/2"}) + "\n")
    cli("load", "jsonl", f, "--id-field", "id", "--dataset", "toy", "--split", "test")
    r = tmp_path / "r.jsonl"
    r.write_text("".join(json.dumps({"question": "What is 7/2?", "completion": c, "model": "m"})
                         + "\n" for c in (r"So $\boxed{\frac{5}{2}}$.", "The answer is 5/2.")))
    cli("import", "jsonl", r, "--dataset", "toy", "--split", "test")
    cli("grade", "-q")
    out = cli("sql", "SELECT normalized_answer, count(*) AS n, count(DISTINCT extracted_answer) "
                     "AS spellings FROM failure_chains GROUP BY ALL", "-f", "csv").stdout
    assert out.split() == ["normalized_answer,n,spellings", "5/2,2,2"]


def test_student_runs_stay_out_of_the_failure_views_and_problem_stats(cli, tmp_path):
    """A student's samples (`distill eval` stores them as runs of role student) are
    evaluations: they show in run_stats, never as a teacher in the failure views, and
    they do not change a problem's teacher statistics."""
    import json
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"id": str(i), "question": q, "answer": a}) + "\n"
                         for i, (q, a) in enumerate([("What is 2+2?", "4"), ("What is 3+3?", "6")])))
    cli("load", "jsonl", f, "--id-field", "id", "--dataset", "toy", "--split", "test")
    teacher = [("What is 2+2?", "The answer is 4."), ("What is 2+2?", "The answer is 5."),
               ("What is 3+3?", "The answer is 6.")]
    student = [("What is 2+2?", "The answer is 7."), ("What is 3+3?", "The answer is 1.")]
    for model, rows in (("teacher-m", teacher), ("student:sft:default", student)):
        r = tmp_path / f"{model.replace(':', '_')}.jsonl"
        r.write_text("".join(json.dumps({"question": q, "completion": c, "model": model}) + "\n"
                             for q, c in rows))
        cli("import", "jsonl", r, "--dataset", "toy", "--split", "test")
    cli("grade", "-q")

    def sql(q):
        return cli("sql", q, "-f", "csv").stdout.split()

    assert sql("SELECT role, model FROM run_roles ORDER BY 1") == [
        "role,model", "student,student:sft:default", "teacher,teacher-m"]
    # the student got both problems wrong: neither is hard, nobody disagrees with anybody
    assert sql("SELECT teacher, extracted_answer FROM failure_chains") == [
        "teacher,extracted_answer", "teacher-m,5"]
    assert sql("SELECT count(*) AS n FROM hard_problems") == ["n", "0"]
    assert sql("SELECT count(*) AS n FROM disagreements") == ["n", "0"]
    assert sql("SELECT samples, graded, positives, negatives FROM problem_stats "
               "ORDER BY samples") == ["samples,graded,positives,negatives",
                                       "1,1,1,0", "2,2,1,1"]
    assert sql("SELECT model, samples, positives FROM run_stats ORDER BY 1") == [
        "model,samples,positives", "student:sft:default,2,0", "teacher-m,3,2"]
