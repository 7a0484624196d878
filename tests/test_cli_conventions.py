"""The CLI conventions of docs/cli.md, through the real CLI on real DuckDB warehouses:
`--format json` prints one JSON document on stdout and nothing else goes there; tables
never break a number and honour COLUMNS; `curator sql` reads `-` and files; a warehouse
created by accident is announced; writing commands name their warehouse; `load` says how
it chose the split and reports changed answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curator.errors import CuratorError, InputError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "curator" / "demo"


def _json(result) -> object:
    """The command succeeded and its stdout is exactly one JSON document."""
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture
def loaded(cli, fixtures):
    cli("load", "math", fixtures / "math")
    cli("import", "tdg", fixtures / "tdg_gpt35.jsonl", "--model", "gpt-3.5-turbo")
    return cli


# -- --format json everywhere ----------------------------------------------------------

def test_every_reporting_command_prints_json_on_stdout_only(cli, fixtures, tmp_path, db_path):
    data = _json(cli("load", "math", fixtures / "math", "--format", "json"))
    assert data["added"] == data["read"] == 5 and data["warehouse"] == str(db_path.resolve())
    assert {c["how"] for c in data["split_choices"]} == {"layout"}
    data = _json(cli("import", "tdg", fixtures / "tdg_gpt35.jsonl", "--model", "gpt-3.5-turbo",
                     "--format", "json"))
    assert data["runs"][0]["samples_added"] == 9
    r = cli("grade", "--format", "json", "--workers", "1")
    data = _json(r)
    assert data["graded"] == 9 == data["positives"] + data["negatives"]
    assert "warehouse:" in r.stderr  # the message went to stderr, not into the JSON
    stats = _json(cli("stats", "--format", "json"))
    assert stats["runs"][0]["samples"] == 9
    rows = _json(cli("sql", "SELECT count(*) AS n FROM samples", "--format", "json"))
    assert rows == [{"n": 9}]
    assert _json(cli("check", "1/2", "0.5", "--format", "json"))["verdict"] == "correct"
    assert _json(cli("init", "--format", "json"))["created"] is False
    exp = _json(cli("export", tmp_path / "exp", "--format", "json", "--splits",
                    "train=0.5,test=0.5"))
    assert exp["data_format"] == "jsonl" and {s["split"] for s in exp["splits"]} <= {"train", "test"}
    ev = _json(cli("export-eval", tmp_path / "ev", "--split", "test", "-f", "json"))
    assert ev["kind"] == "eval" and Path(ev["manifest"]).is_file()
    rep = _json(cli("report", tmp_path / "r" / "report.html", "--format", "json"))
    assert Path(rep["html"]).is_file() and all(Path(p).is_file() for p in rep["images"])


def test_export_data_format_option_and_the_old_spelling(loaded, tmp_path):
    loaded("grade", "-q")
    r = loaded("export", tmp_path / "a", "--data-format", "parquet")
    assert list((tmp_path / "a").glob("*.parquet"))
    # the old spelling still works, and says it is deprecated (on stderr)
    r = loaded("export", tmp_path / "b", "--format", "parquet")
    assert list((tmp_path / "b").glob("*.parquet")) and "deprecated" in r.stderr
    r = loaded("export", tmp_path / "c", "--format", "xml", ok=False)
    assert isinstance(r.exception, CuratorError) and "--data-format" in str(r.exception)
    assert not (tmp_path / "c").exists()


def test_json_is_valid_even_with_nan(cli, wh):
    rows = _json(cli("sql", "SELECT 'nan'::DOUBLE AS x, 1.5 AS y", "--format", "json"))
    assert rows == [{"x": None, "y": 1.5}]


# -- tables ------------------------------------------------------------------------------

def _synthetic_runs(wh, samples_per_run: int = 60_000) -> None:
    """Two runs of 60,000 samples each, written with SQL (what `stats` counts)."""
    with wh.write() as con:
        con.execute("""INSERT INTO problems (problem_id, dataset, split, subject, level, question,
                                             question_key, reference_answer, source_id)
                       SELECT 'p' || i, 'math', 'train', 'Counting & Probability', 1 + i % 5,
                              'q' || i, 'q' || i, '1', 's' || i FROM range(7500) t(i)""")
        for run, model in (("r_import_gpt4_3f2a9c1d0e", "gpt-4"),
                           ("r_generate_openai_teacher_7b9e", "gpt-3.5-turbo-0125")):
            con.execute("INSERT INTO runs (run_id, kind, provider, model) VALUES (?, ?, ?, ?)",
                        [run, "import" if "import" in run else "generate",
                         None if "import" in run else "openai", model])
            con.execute("""INSERT INTO samples (sample_id, run_id, problem_id, sample_index,
                                                completion, prompt_tokens, completion_tokens,
                                                cost_usd)
                           SELECT ? || i, ?, 'p' || (i % 7500), i // 7500, 'x',
                                  CASE WHEN ? THEN 2100 END, CASE WHEN ? THEN 389 END,
                                  CASE WHEN ? THEN 0.00123 END
                           FROM range(?) t(i)""",
                        [run, run, "generate" in run, "generate" in run, "generate" in run,
                         samples_per_run])


def _curator(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from curator.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, input=stdin,
                          env={**os.environ, **env})


@pytest.mark.parametrize("columns", [100, 60])
def test_stats_tables_fit_columns_and_never_split_a_number(wh, columns):
    _synthetic_runs(wh)
    p = _curator("stats", env={"CURATOR_DB": str(wh.path), "COLUMNS": str(columns)})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= columns, p.stdout
    # every count appears whole on one line: 60000 samples, 7500 problems, token sums
    for number in ("60000", "1500", "126000000"):
        assert any(number in line.split() for line in lines), (number, p.stdout)
    if columns == 60:
        assert "left out to fit 60 columns" in p.stderr


def test_piped_tables_are_wide_without_columns(wh):
    _synthetic_runs(wh, samples_per_run=10)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run([sys.executable, "-c", "from curator.cli import main; main()", "stats"],
                       capture_output=True, text=True, timeout=120,
                       env={**env, "CURATOR_DB": str(wh.path)})
    assert p.returncode == 0, p.stderr
    # piped, no COLUMNS: wide enough that the run ids are not folded
    assert "r_generate_openai_teacher_7b9e" in p.stdout


def test_layout_order_numbers_first_then_text():
    from curator.output import layout
    cols = ["run_id", "kind", "samples", "completion_tokens"]
    cells = [["a-very-long-run-identifier", "import", "60000", "123456789"]]
    lay = layout(cols, cells, [False, False, True, True], 40)
    widths = dict(zip([cols[i] for i in lay.keep], lay.widths))
    assert lay.compact and widths["samples"] >= 5 and widths["completion_tokens"] >= 9
    assert sum(lay.widths) + len(lay.keep) - 1 <= 40
    # too narrow for any text: the text columns go, the numbers stay whole
    lay = layout(cols, cells, [False, False, True, True], 16)
    assert [cols[i] for i in lay.keep] == ["samples", "completion_tokens"]


# -- sql input ----------------------------------------------------------------------------

def test_sql_reads_stdin_and_files(wh, tmp_path):
    env = {"CURATOR_DB": str(wh.path)}
    p = _curator("sql", "-", "--format", "csv", env=env, stdin="SELECT 41 + 1 AS answer;\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["answer", "42"]
    f = tmp_path / "q.sql"
    f.write_text("-- a comment\nSELECT count(*) AS problems FROM problems\n")
    p = _curator("sql", str(f), "--format", "json", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"problems": 0}]
    p = _curator("sql", str(tmp_path / "missing.sql"), env=env)
    assert p.returncode == 2 and "no such SQL file" in p.stderr
    p = _curator("sql", "-", env=env, stdin="  \n")
    assert p.returncode == 2 and "no SQL in stdin" in p.stderr


def test_sql_long_one_line_query_and_values_printed_as_data(wh):
    env = {"CURATOR_DB": str(wh.path), "COLUMNS": "200"}
    # longer than a file name may be: it is SQL, not a path
    long_query = "SELECT " + " + ".join(["1"] * 150) + " AS total"
    assert len(long_query) > 300
    p = _curator("sql", long_query, "--format", "csv", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["total", "150"]
    # table cells are data: no :emoji: codes, no [markup]
    p = _curator("sql", "SELECT 'student:cl:pos' AS model, '[bold]x[/bold]' AS note", env=env)
    assert p.returncode == 0, p.stderr
    assert "student:cl:pos" in p.stdout and "[bold]x[/bold]" in p.stdout


def test_sql_help_lists_tables_views_and_examples(cli):
    from typer.testing import CliRunner

    from curator.cli import app
    out = CliRunner().invoke(app, ["sql", "--help"], env={"COLUMNS": "300"}).output
    text = " ".join(out.replace("│", " ").split())
    for name in ("problems", "samples", "grades", "runs", "positives", "negatives",
                 "failure_chains", "hard_problems", "run_stats"):
        assert name in text, name
    assert text.count("curator sql") >= 2 and "stdin" in text


# -- the warehouse: created loudly, named by writers ----------------------------------------

def test_a_typo_in_db_is_announced_with_its_path(cli, fixtures, tmp_path):
    typo = tmp_path / "no_such_root" / "x.duckdb"
    r = cli("load", "math", fixtures / "math", "--db", typo)
    assert "NEW WAREHOUSE" in r.stderr and str(typo.resolve()) in r.stderr
    assert "created the directory" in r.stderr and str(typo.parent) in r.stderr
    assert "NEW WAREHOUSE" not in r.stdout
    # the second time it exists: no announcement; init never announces
    r = cli("load", "math", fixtures / "math", "--db", typo)
    assert "NEW WAREHOUSE" not in r.output
    r = cli("init", "--db", tmp_path / "other.duckdb")
    assert "NEW WAREHOUSE" not in r.output and "created" in r.stdout


def test_reading_commands_never_create_a_warehouse(cli, tmp_path):
    missing = tmp_path / "nowhere" / "w.duckdb"
    r = cli("stats", "--db", missing, ok=False)
    assert isinstance(r.exception, CuratorError) and "no warehouse at" in str(r.exception)
    assert not missing.parent.exists()


def test_writing_commands_name_their_warehouse(loaded, db_path, tmp_path):
    where = f"warehouse: {db_path.resolve()}"
    assert where in loaded("load", "math", ROOT / "tests" / "fixtures" / "math").stderr
    assert where in loaded("grade", "-q").stderr
    assert where in loaded("sql", "CREATE TABLE notes (x INT)", "--write").stderr
    assert where in loaded("export", tmp_path / "e").stderr
    assert where in loaded("export-eval", tmp_path / "ev").stderr
    assert where not in loaded("stats").output


# -- load: the split and changed answers ----------------------------------------------------

def test_load_says_which_split_and_warns_when_guessed(cli, tmp_path):
    rec = json.dumps({"question": "What is 6 * 7?", "answer": "#### 42"}) + "\n"
    broken = tmp_path / "gsm_broken.jsonl"
    broken.write_text(rec)
    r = cli("load", "gsm8k", broken)
    assert "warning" in r.stderr and "split 'train'" in r.stderr, repr(r.stderr)
    assert "gsm_broken.jsonl names no split" in r.stderr and "--split" in r.stderr
    named = tmp_path / "gsm8k_test.jsonl"
    named.write_text(rec)
    r = cli("load", "gsm8k", named, "--format", "json")
    choice = json.loads(r.stdout)["split_choices"][0]
    assert choice == {"split": "test", "how": "file name", "source": str(named), "guessed": True}
    assert "guessed from the file name" in r.stderr
    r = cli("load", "gsm8k", broken, "--split", "validation")
    assert "given with --split" in r.stderr and "warning" not in r.stderr


def _svamp(path: Path, answer) -> None:
    path.write_text(json.dumps([
        {"ID": "chal-1", "Body": "Tom has 3 apples.", "Question": "He eats 1. How many are left?",
         "Equation": "( 3.0 - 1.0 )", "Answer": 2.0, "Type": "Subtraction"},
        {"ID": "chal-2", "Body": "Ann has 4 pens.", "Question": "She buys 5. How many now?",
         "Equation": "( 4.0 + 5.0 )", "Answer": answer, "Type": "Addition"},
    ], indent=2))


def test_svamp_answer_must_be_a_number(cli, tmp_path, db_path):
    f = tmp_path / "SVAMP.json"
    _svamp(f, "abc")
    r = cli("load", "svamp", f, ok=False)
    assert isinstance(r.exception, InputError)
    # the second record starts on line 10 of the indented file
    assert r.exception.line == 10 and f"{f}:10" in str(r.exception)
    assert "'Answer' must be a number" in str(r.exception) and "'abc'" in str(r.exception)
    assert not db_path.exists() or cli("sql", "SELECT count(*) AS n FROM problems",
                                       "-f", "csv").stdout.split() == ["n", "0"]
    _svamp(f, "1,250")  # a number written as text is still a number
    cli("load", "svamp", f)
    assert cli("sql", "SELECT reference_answer FROM problems ORDER BY source_id",
               "-f", "csv").stdout.split() == ["reference_answer", "2", "1250"]


def test_reloading_changed_answers_reports_then_updates(cli, tmp_path):
    f = tmp_path / "probs.test.jsonl"
    rows = [{"id": "a", "question": "1+1?", "answer": "2"}, {"id": "b", "question": "2+2?", "answer": "4"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli("load", "jsonl", f, "--id-field", "id")
    ans = tmp_path / "answers.jsonl"
    ans.write_text(json.dumps({"question": "2+2?", "completion": "The answer is 5.",
                               "model": "m"}) + "\n")
    cli("import", "jsonl", ans, "--dataset", "probs", "--split", "test")
    cli("grade", "-q")
    assert cli("sql", "SELECT count(*) AS n FROM negatives", "-f", "csv").stdout.split() == ["n", "1"]

    rows[1]["answer"] = "5"  # the file was corrected
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("load", "jsonl", f, "--id-field", "id", "--format", "json")
    data = json.loads(r.stdout)
    assert data["added"] == 0 and not data["answers_updated"]
    assert [(c["source_id"], c["stored"], c["loaded"]) for c in data["answer_changes"]] == \
        [("b", "4", "5")]
    assert "--update" in r.stderr and "'4' -> '5'" in r.stderr
    # nothing changed in the warehouse without --update
    q = "SELECT reference_answer FROM problems WHERE source_id = 'b'"
    assert cli("sql", q, "-f", "csv").stdout.split() == ["reference_answer", "4"]

    r = cli("load", "jsonl", f, "--id-field", "id", "--update")
    assert "updated the reference answer of 1 problem" in r.stderr
    assert "Deleted 1 verdict" in r.stderr
    assert cli("sql", q, "-f", "csv").stdout.split() == ["reference_answer", "5"]
    # the stale verdict is gone, and grading again judges against the new answer
    assert cli("sql", "SELECT count(*) AS n FROM grades", "-f", "csv").stdout.split() == ["n", "0"]
    cli("grade", "-q")
    assert cli("sql", "SELECT count(*) AS n FROM positives", "-f", "csv").stdout.split() == ["n", "1"]
    r = cli("load", "jsonl", f, "--id-field", "id")
    assert "another reference answer" not in r.output


# -- grade: interruption -----------------------------------------------------------------

def test_ctrl_c_during_grade_says_how_many_verdicts_were_kept(loaded, monkeypatch):
    import curator.grading.batch as batch

    real = batch.grade_pending

    def interrupted(wh, **kw):
        # commit part of the work as the real grader does, then the user presses Ctrl-C
        kw["progress"](4)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "grade_pending", interrupted)
    r = loaded("grade", "-q", ok=False)
    assert r.exit_code == 130
    assert "interrupted: 4 verdict(s) were committed and are kept" in r.stderr
    assert "5 sample(s) still to grade" in r.stderr
    monkeypatch.setattr(batch, "grade_pending", real)


# -- plumbing ------------------------------------------------------------------------------

def test_command_modules_do_not_import_the_cli_module():
    code = ("import sys\n"
            "import curator.grading.cli, curator.teachers.cli, curator.exporting.cli\n"
            "assert 'curator.cli' not in sys.modules, 'import circle'\n"
            "from curator.exporting.cli import export, export_eval, report\n"
            "from curator.grading.cli import grade, check\n"
            "from curator.cli import load, import_, sql, stats, init\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_fault_rates_are_parsed_by_the_library():
    from curator.server.config import parse_fault_rates
    assert parse_fault_rates(["429=0.2", " hang =0.01"]) == {"429": 0.2, "hang": 0.01}
    for bad in ("429", "=0.1", "429=lots"):
        with pytest.raises(CuratorError, match="NAME=RATE"):
            parse_fault_rates([bad])


def test_check_file_is_a_library_function(tmp_path):
    from curator.grading.files import check_file
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"gold": "1/2", "pred": "0.5", "expected": 1}) + "\n"
                 + json.dumps({"gold": "3", "pred": "4", "expected": 0}) + "\n")
    rep = check_file(f, tmp_path / "v.jsonl", workers=1)
    assert rep.status == {"correct": 1, "wrong": 1} and (rep.agree, rep.disagree) == (2, 0)
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 2
    with pytest.raises(CuratorError, match="--timeout"):
        check_file(f, tmp_path / "w.jsonl", timeout=0)
