"""User mistakes get a clear error (curator.errors.CuratorError, exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from curator.errors import CuratorError


def _user_error(result, *needles: str) -> str:
    """The command failed with a CuratorError whose message contains every needle."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, CuratorError), repr(result.exception)
    msg = str(result.exception)
    for n in needles:
        assert n in msg, msg
    return msg


def _curator(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from curator.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, **(env or {})})


# -- serve -------------------------------------------------------------------------

def test_serve_port_in_use(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _user_error(cli("serve", "--port", port, ok=False), f"127.0.0.1:{port}", "--port")


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_port_out_of_range(cli, port):
    _user_error(cli("serve", "--port", port, ok=False), f"--port {port}", "65535")


# -- report ------------------------------------------------------------------------

def test_report_into_a_directory(cli, tmp_path):
    cli("init")
    out = tmp_path / "out" / "dir"
    out.mkdir(parents=True)
    _user_error(cli("report", out, ok=False), str(out), "is a directory")
    assert sorted(p.name for p in out.parent.iterdir()) == ["dir"]  # no dir_plots/ left


def test_report_html_mode_is_that_of_a_new_file(cli, tmp_path):
    cli("init")
    out = tmp_path / "r" / "report.html"
    cli("report", out)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    for png in (tmp_path / "r" / "report_plots").glob("*.png"):
        assert stat.S_IMODE(png.stat().st_mode) == stat.S_IMODE(out.stat().st_mode)


# -- check --file ------------------------------------------------------------------

@pytest.fixture
def pairs(tmp_path):
    f = tmp_path / "data" / "pairs.jsonl"
    f.parent.mkdir()
    f.write_text(json.dumps({"reference": "3", "completion": "The answer is 3."}) + "\n")
    return f


def test_check_out_in_missing_directory(cli, pairs):
    _user_error(cli("check", "--file", pairs, "--out", "/nonexistent/x/y.jsonl", ok=False),
                "/nonexistent/x/y.jsonl", "does not exist")


def test_check_out_is_a_directory(cli, pairs, tmp_path):
    _user_error(cli("check", "--file", pairs, "--out", tmp_path, ok=False), "is a directory")


def test_check_default_out_is_in_the_current_directory(pairs, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    r = _curator("check", "--file", str(pairs), "--workers", "1", cwd=work)
    assert r.returncode == 0, r.stderr
    written = work / "pairs.jsonl.verdicts.jsonl"
    assert json.loads(written.read_text())["verdict"]["correct"] is True
    assert not (pairs.parent / "pairs.jsonl.verdicts.jsonl").exists()
    help_text = _curator("check", "--help", env={"COLUMNS": "200"}).stdout
    assert "current directory" in help_text


# -- warehouse ---------------------------------------------------------------------

def test_stats_on_a_file_that_is_not_a_warehouse(cli, pairs):
    _user_error(cli("stats", "--db", pairs, ok=False), str(pairs),
                "is not a DuckDB warehouse file")


def test_bad_lock_timeout(tmp_path):
    r = _curator("stats", "--db", str(tmp_path / "w.duckdb"),
                 env={"CURATOR_LOCK_TIMEOUT": "abc"})
    assert r.returncode == 2
    assert "CURATOR_LOCK_TIMEOUT must be a number of seconds" in r.stderr
    assert "Traceback" not in r.stderr


# -- check with negative answers -----------------------------------------------------

def test_check_negative_reference_is_an_argument():
    r = _curator("check", "-3", "The answer is -3.")
    assert r.returncode == 0, r.stderr
    assert "correct" in r.stdout and "No such option" not in r.stderr


@pytest.mark.parametrize("args", [
    ["-3", "-3", "-f", "json"],
    ["-f", "json", "-3", "-3"],
    ["-3", "--format", "json", "-3"],
    ["--format=json", "--", "-3", "-3"],
    ["-fjson", "-x", "-x"],
    ["-\\frac{1}{2}", "-0.5", "-f", "json"],
])
def test_check_negative_answers_with_options(cli, args):
    r = cli("check", *args)
    verdict = json.loads(r.output)
    assert verdict["verdict"] == "correct", verdict


def test_check_negative_question_value(cli):
    r = cli("check", "-3", "-3", "--question", "-what is -3?", "-f", "json")
    assert json.loads(r.output)["verdict"] == "correct"


# -- generate ----------------------------------------------------------------------

DEMO_PROBLEMS = os.path.join(os.path.dirname(__file__), "..", "curator", "demo",
                             "math_train_200.jsonl")


def test_generate_with_samples_still_missing_exits_1(cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    cli("load", "math", DEMO_PROBLEMS)
    r = cli("generate", "--provider", "openai", "--model", "teacher", "--base-url",
            "http://127.0.0.1:1/v1", "--samples", "2", "--limit", "1", "--max-attempts", "2",
            "--timeout", "2", "-q", ok=False)
    assert r.exit_code == 1, (r.output, r.exception)
    assert "stored 0 of 2 samples" in r.output
    assert "2 of 2 samples still missing" in r.output and "re-run" in r.output


@pytest.mark.parametrize("option, value, needle", [
    ("--temperature", "-0.5", "--temperature -0.5"),
    ("--max-cost", "0", "--max-cost 0"),
    ("--max-cost", "-1", "--max-cost -1"),
    ("--base-url", "127.0.0.1:8765/v1", "--base-url '127.0.0.1:8765/v1'"),
    ("--base-url", "ftp://host/v1", "http:// or https://"),
    ("--base-url", "http:///v1", "http:// or https://"),
])
def test_generate_refuses_bad_values_up_front(cli, monkeypatch, tmp_path, option, value, needle):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    prices = tmp_path / "prices.json"
    prices.write_text('{"models": {"teacher": {"input": 1.5, "output": 4.0}}}')
    cli("load", "math", DEMO_PROBLEMS)
    r = cli("generate", "--provider", "openai", "--model", "teacher", "--samples", "1",
            "--limit", "1", "--prices", prices, f"{option}={value}", ok=False)
    _user_error(r, needle)


# -- help texts say what happens ------------------------------------------------------

def _help(cli, command: str) -> str:
    from typer.testing import CliRunner

    from curator.cli import app
    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output
    return " ".join(out.replace("│", " ").split())


def test_load_help_names_the_default_dataset_as_it_is(cli, tmp_path):
    assert "file name up to its first dot" in _help(cli, "load")
    f = tmp_path / "mydata.test.jsonl"
    f.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    cli("load", "jsonl", f)
    r = cli("sql", "SELECT DISTINCT dataset FROM problems", "-f", "csv")
    assert r.output.strip().splitlines()[-1] == "mydata"


def test_import_help_says_linking_looks_in_every_dataset(cli):
    text = _help(cli, "import")
    assert "any dataset" in text and "preferred" in text
    assert "Dataset to link problems in" not in text


def test_ctrl_c_that_no_command_handles_is_said_not_silent(capsys):
    """Typer turns a KeyboardInterrupt in a command into a silent exit 130; run_cli says
    what the interrupt means (exit 130 kept), and a DuckDB 'Query interrupted' is the same."""
    import typer

    from curator.errors import run_cli

    for error in (KeyboardInterrupt(), RuntimeError("Query interrupted")):
        app = typer.Typer()

        @app.command()
        def work() -> None:
            raise error

        @app.command()
        def other() -> None:
            pass

        with pytest.raises(SystemExit) as stop:
            run_cli(lambda: app(["work"]), _Console(), "interrupted; kept")
        assert stop.value.code == 130
        assert capsys.readouterr().err.strip() == "interrupted; kept"


class _Console:
    def print(self, msg, **_):
        print(msg, file=sys.stderr)


def test_a_ctrl_c_duckdb_wraps_while_reading_a_registered_frame_is_an_interrupt():
    """SIGINT while DuckDB reads a registered Python object comes back as DuckDB's
    InvalidInputException around the KeyboardInterrupt (seen in `curator grade` when the
    signal lands as it registers its verdicts): an interrupt, not an error. Other DuckDB
    errors are not."""
    import duckdb

    from curator.errors import is_interrupt

    class Interrupting:
        def __arrow_c_stream__(self, requested_schema=None):
            raise KeyboardInterrupt

    con = duckdb.connect()
    with pytest.raises(duckdb.InvalidInputException, match="KeyboardInterrupt") as caught:
        con.register("new_grades", Interrupting())
        con.execute("SELECT * FROM new_grades").fetchall()
    assert is_interrupt(caught.value)
    assert not is_interrupt(duckdb.InvalidInputException("reading the schema failed: bad"))
    assert not is_interrupt(duckdb.CatalogException("Table with name x does not exist"))
