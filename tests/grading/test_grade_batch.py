"""`curator grade` over a real warehouse (the demo's 200 MATH problems with their real
GPT-4 rationales), grader versions, interruption, and `curator check`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curator.errors import CuratorError
from curator.grading import GRADER_VERSION, grade, grade_pending
from curator.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "curator" / "demo"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def graded_wh(db_path, cli) -> Warehouse:
    cli("load", "math", DEMO / "math_train_200.jsonl")
    cli("import", "tdg", DEMO / "tdg_gpt4_200.jsonl.gz", "--model", "gpt-4")
    return Warehouse(db_path, lock_timeout=30)


def q(wh: Warehouse, sql: str, params=None):
    with wh.read() as con:
        return con.execute(sql, params or []).fetchall()


def test_grades_every_sample_once_and_the_views_follow(graded_wh):
    wh = graded_wh
    rep = grade_pending(wh, workers=2)
    assert rep.graded == 1600 and sum(rep.status.values()) == 1600
    assert rep.positives + rep.negatives == 1600 and 0 < rep.positives < 1600
    assert rep.pairs < 1600                    # the 8 rationales of a problem share pairs
    assert q(wh, "SELECT count(*), count(DISTINCT sample_id) FROM grades") == [(1600, 1600)]
    assert q(wh, "SELECT (SELECT count(*) FROM positives), (SELECT count(*) FROM negatives)") \
        == [(rep.positives, rep.negatives)]
    assert q(wh, "SELECT grader_version FROM current_grader") == [(GRADER_VERSION,)]
    assert q(wh, "SELECT graded, positives, pass_rate FROM run_stats") == \
        [(1600, rep.positives, rep.positives / 1600)]
    # a second run finds nothing left to grade
    assert grade_pending(wh).graded == 0


def test_batch_verdicts_are_those_of_grade(graded_wh):
    wh = graded_wh
    grade_pending(wh, workers=2)
    rows = q(wh, """SELECT p.reference_answer, s.completion, p.question, g.correct, g.status,
                           g.extracted, g.rule, g.extraction
                    FROM grades g JOIN samples s USING (sample_id) JOIN problems p USING (problem_id)
                    ORDER BY hash(s.sample_id) LIMIT 150""")
    for ref, completion, question, *stored in rows:
        g = grade(ref, completion, question=question)
        assert [g.correct, g.status, g.extracted, g.rule, g.extraction] == stored


def test_a_new_grader_version_regrades_and_the_old_verdicts_stay(graded_wh):
    wh = graded_wh
    first = grade_pending(wh, workers=2)
    second = grade_pending(wh, workers=2, version="curator-grader-next")
    assert second.graded == 1600
    assert q(wh, "SELECT grader_version, count(*) FROM grades GROUP BY 1 ORDER BY 1") == \
        [(GRADER_VERSION, 1600), ("curator-grader-next", 1600)]
    assert q(wh, "SELECT grader_version FROM current_grader") == [("curator-grader-next",)]
    assert q(wh, "SELECT count(*) FROM positives")[0][0] == second.positives == first.positives


def test_interrupting_keeps_committed_verdicts(graded_wh, monkeypatch):
    from curator.grading import batch
    monkeypatch.setattr(batch, "FLUSH_ROWS", 300)
    wh = graded_wh
    seen = []

    def stop_after_two_commits(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grade_pending(wh, workers=2, progress=stop_after_two_commits)
    kept = q(wh, "SELECT count(*) FROM grades")[0][0]
    assert kept == sum(seen) and 0 < kept < 1600
    rest = grade_pending(wh, workers=2)
    assert rest.graded == 1600 - kept
    assert q(wh, "SELECT count(*), count(DISTINCT sample_id) FROM grades") == [(1600, 1600)]


# `curator grade` in a real process whose every query of the samples also runs a slow
# scalar subquery (a recursive CTE: one thread whatever the machine, ~0.2-0.5 s), in pages
# of 100 (17 queries, seconds in all): Ctrl-C then lands in a DuckDB query about as often
# as in Python, so both ways it arrives are met.
_SLOW_GRADE = """
import sys
from pathlib import Path
from curator.grading import batch
pending = batch._pending
batch._pending = lambda run_ids: (pending(run_ids) + " AND (WITH RECURSIVE t(i) AS ("
    "SELECT 1 UNION ALL SELECT i + 1 FROM t WHERE i < 20000) SELECT count(*) FROM t) > 0")
batch.PAGE = 100
batch.FLUSH_ROWS = 50
import functools
from curator.grading import cli as grading_cli
command = grading_cli.grade
@functools.wraps(command)
def grade(*args, **kwargs):  # the moments below count from the command's first line
    Path(READY).write_text("started")
    return command(*args, **kwargs)
grading_cli.grade = grade
commit = batch._Writer._commit
def counted_commit(self, *args):
    commit(self, *args)
    with open(READY + ".commits", "a") as f:
        f.write("1\\n")
batch._Writer._commit = counted_commit
from curator import cli
sys.argv = ["curator", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.parametrize("commits, delay", [(0, 0.0), (0, 0.4), (1, 0.0), (3, 0.1), (6, 0.2)])
def test_ctrl_c_at_any_moment_of_grade_keeps_verdicts_and_says_so(graded_wh, tmp_path,
                                                                   commits, delay):
    """SIGINT `delay` seconds after the grade command's start (commits=0) or after its
    n-th commit of verdicts: exit 130 and the message, whatever was running."""
    wh = graded_wh
    ready = tmp_path / "ready"
    done = tmp_path / "ready.commits"
    script = _SLOW_GRADE.replace("READY", repr(str(ready)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, "grade", "--quiet",
                             "--workers", "1", "--db", str(wh.path)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not (
            ready.exists() and (commits == 0 or (done.exists() and
                                                 done.read_text().count("\n") >= commits))):
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Query interrupted" not in err, err
    said = re.search(r"interrupted: ([\d,]+) verdict\(s\) were committed and are kept", err)
    assert said, err
    kept = q(wh, "SELECT count(*) FROM grades")[0][0]
    assert int(said[1].replace(",", "")) == kept
    left = re.search(r"([\d,]+) sample\(s\) still to grade", err)
    assert left is None or int(left[1].replace(",", "")) == 1600 - kept
    assert grade_pending(wh, workers=1).graded == 1600 - kept      # the rest, once


def test_runs_failed_samples_and_missing_references(graded_wh, cli):
    wh = graded_wh
    cli("import", "tdg", FIXTURES / "tdg_gpt35.jsonl", "--model", "gpt-3.5-turbo")
    (gpt4,), = q(wh, "SELECT run_id FROM runs WHERE model = 'gpt-4'")
    with wh.write() as con:
        # a failed request (no completion) and a problem whose reference is unknown
        con.execute("UPDATE samples SET completion = NULL, error_class = 'server' "
                    "WHERE sample_id = (SELECT min(sample_id) FROM samples WHERE run_id = ?)", [gpt4])
        con.execute("UPDATE problems SET reference_answer = NULL WHERE problem_id = "
                    "(SELECT problem_id FROM samples WHERE run_id = ? ORDER BY sample_id "
                    "LIMIT 1 OFFSET 100)", [gpt4])
    rep = grade_pending(wh, run_ids=[gpt4], workers=2)
    skipped = q(wh, "SELECT count(*) FROM samples s JOIN problems p USING (problem_id) "
                    "WHERE run_id = ? AND p.reference_answer IS NULL", [gpt4])[0][0]
    assert rep.skipped_no_reference == skipped > 0
    assert rep.graded == 1600 - 1 - skipped
    assert q(wh, "SELECT count(*) FROM grades JOIN samples USING (sample_id) WHERE run_id <> ?",
             [gpt4]) == [(0,)]


def test_cli_grade_and_stats(graded_wh, cli):
    out = cli("grade", "--workers", "2").output
    assert "graded 1,600 samples" in out and GRADER_VERSION in out
    assert "graded 0 samples" in cli("grade").output
    stats = json.loads(cli("stats", "--format", "json").output)
    run = next(r for r in stats["runs"] if r["model"] == "gpt-4")
    assert run["positives"] + run["negatives"] == 1600


def test_cli_grade_run_takes_run_ids_and_model_names_and_refuses_others(graded_wh, cli):
    wh = graded_wh
    cli("import", "tdg", FIXTURES / "tdg_gpt35.jsonl", "--model", "gpt-3.5-turbo")
    (gpt4,), = q(wh, "SELECT run_id FROM runs WHERE model = 'gpt-4'")
    for name in ("nosuch", "gpt-3.5"):
        r = cli("grade", "--run", name, ok=False)
        said = str(r.exception)
        assert isinstance(r.exception, CuratorError), (r.output, r.exception)
        assert f"--run: no run has id or model {name!r}" in said
        assert gpt4 in said and "gpt-3.5-turbo" in said             # the runs there are
    assert q(wh, "SELECT count(*) FROM grades") == [(0,)]
    out = cli("grade", "--run", "gpt-3.5-turbo", "--format", "json").stdout
    gpt35 = q(wh, "SELECT count(*) FROM samples JOIN runs USING (run_id) "
                  "WHERE model = 'gpt-3.5-turbo' AND completion IS NOT NULL")[0][0]
    assert json.loads(out)["graded"] == gpt35 > 0
    assert json.loads(cli("grade", "--run", gpt4, "--format", "json").stdout)["graded"] == 1600
    assert q(wh, "SELECT count(*) FROM grades") == [(1600 + gpt35,)]


def test_cli_check_explains_a_verdict(cli):
    out = cli("check", r"\frac{1}{2}", r"so the answer is $\boxed{0.5}$", "--format", "json").output
    got = json.loads(out)
    assert got["verdict"] == "correct" and got["normalized answer"] == got["normalized reference"] == "1/2"
    assert got["extraction"] == "boxed"
    assert "wrong" in cli("check", "2", "The answer is -2.").output


def test_cli_check_file(cli, tmp_path, monkeypatch):
    # the verdicts go to the current directory by default
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"gold": r"\frac{1}{2}", "pred": "0.5", "expected": 1},
        {"gold": "2", "pred": "-2", "expected": 0},
        {"gold": r"\sqrt{2}", "pred": "1.414", "expected": 1},
    ]) + "\n")
    out = cli("check", "--file", f).output
    assert "agreement with `expected`: 2/3" in out
    verdicts = [json.loads(line) for line in (tmp_path / "pairs.jsonl.verdicts.jsonl").open()]
    assert [v["verdict"]["correct"] for v in verdicts] == [True, False, False]
    assert [v["line"] for v in verdicts] == [1, 2, 3] and verdicts[0]["gold"] == r"\frac{1}{2}"


def test_cli_check_file_errors_name_the_line(cli, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"gold": "1", "pred": "1"}\n{"gold": "1", "pred": \n')
    r = cli("check", "--file", f, ok=False)
    assert r.exit_code != 0
    assert f"{f}:2" in str(r.exception) and "bad JSON" in str(r.exception)
    f.write_text('{"gold": "1", "text": "1"}\n')
    r = cli("check", "--file", f, ok=False)
    assert f"{f}:1" in str(r.exception) and "completion" in str(r.exception)
