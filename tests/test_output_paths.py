"""Output options never write over the warehouse (or its WAL) and never silently replace
a file that the command did not create (curator/paths.py, docs/output-paths.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def warehouse(cli, fixtures, db_path) -> Path:
    cli("load", "math", fixtures / "math")
    return db_path


@pytest.fixture
def pairs(tmp_path) -> Path:
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"reference": "2", "completion": "so \\\\boxed{2}"}\n')
    return p


@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "What is 1+1?", "answer": "2"}\n{"question": "no answer"}\n')
    return p


def _refused(result, path) -> None:
    assert result.exit_code != 0, result.output
    assert str(path) in str(result.exception)


def _intact(db: Path, before: str, cli) -> None:
    assert _digest(db) == before
    assert json.loads(cli("sql", "SELECT count(*) AS n FROM problems", "-f", "json").output) \
        == [{"n": 5}]


def test_no_output_option_writes_over_the_warehouse(cli, warehouse, pairs, bad_jsonl, fixtures,
                                                    tmp_path):
    before = _digest(warehouse)
    wal = Path(str(warehouse) + ".wal")
    link = tmp_path / "innocent.html"
    link.symlink_to(warehouse)
    for target in (warehouse, wal, link):
        _refused(cli("report", target, ok=False), target)
        _refused(cli("report", target, "--overwrite", ok=False), target)
        _refused(cli("check", "--file", pairs, "--out", target, "--workers", "1", ok=False),
                 target)
        _refused(cli("check", "--file", pairs, "--out", target, "--overwrite", "--workers", "1",
                     ok=False), target)
        _refused(cli("load", "jsonl", bad_jsonl, "--skip-invalid", "--rejects", target,
                     ok=False), target)
        _refused(cli("import", "tdg", fixtures / "tdg_gpt35.jsonl", "--model", "m",
                     "--skip-invalid", "--rejects", target, ok=False), target)
        assert "warehouse" in str(cli("report", target, ok=False).exception)
    assert not wal.exists()
    assert not (warehouse.parent / "curator_plots").exists()
    # a DuckDB file that is not the configured warehouse is refused as well
    other = tmp_path / "other.duckdb"
    other.write_bytes(warehouse.read_bytes())
    r = cli("check", "--file", pairs, "--out", other, "--overwrite", "--workers", "1", ok=False)
    assert "DuckDB database file" in str(r.exception)
    # an export directory can be neither the warehouse nor its folder
    _refused(cli("export", warehouse, ok=False), warehouse)
    _refused(cli("export", warehouse.parent, "--overwrite", ok=False), warehouse.parent)
    _intact(warehouse, before, cli)


def test_report_replaces_only_its_own_page(cli, warehouse, tmp_path):
    page = tmp_path / "notes.html"
    page.write_text("<html>my notes</html>")
    r = cli("report", page, ok=False)
    _refused(r, page)
    assert "not a report page" in str(r.exception) and "--overwrite" in str(r.exception)
    assert page.read_text() == "<html>my notes</html>"
    assert not (tmp_path / "notes_plots").exists()
    cli("report", page, "--overwrite")
    assert "<title>curator report</title>" in page.read_text()
    cli("report", page)  # an earlier report is replaced without asking
    # the plots directory beside it must hold only a report's plots
    plots = tmp_path / "mine_plots"
    plots.mkdir()
    (plots / "holiday.jpg").write_bytes(b"\xff\xd8")
    r = cli("report", tmp_path / "mine.html", ok=False)
    assert "holiday.jpg" in str(r.exception) and not (tmp_path / "mine.html").exists()


def test_check_out_replaces_only_verdicts(cli, pairs, tmp_path):
    out = tmp_path / "v.jsonl"
    out.write_text('{"id": 1, "precious": true}\n')
    r = cli("check", "--file", pairs, "--out", out, "--workers", "1", ok=False)
    _refused(r, out)
    assert out.read_text() == '{"id": 1, "precious": true}\n'
    cli("check", "--file", pairs, "--out", out, "--workers", "1", "--overwrite")
    assert json.loads(out.read_text())["verdict"]["correct"] is True
    cli("check", "--file", pairs, "--out", out, "--workers", "1")  # its own file: replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_rejects_replace_only_rejects(cli, warehouse, bad_jsonl, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("a line I wrote\n")
    r = cli("load", "jsonl", bad_jsonl, "--skip-invalid", "--rejects", rejects, ok=False)
    _refused(r, rejects)
    assert rejects.read_text() == "a line I wrote\n"
    rejects.unlink()
    cli("load", "jsonl", bad_jsonl, "--skip-invalid", "--rejects", rejects)
    first = json.loads(rejects.read_text())
    assert set(first) == {"path", "line", "record", "reason", "raw"}
    cli("load", "jsonl", bad_jsonl, "--skip-invalid", "--rejects", rejects)  # its own: fine


def test_default_rejects_never_replace_each_other(wh, bad_jsonl):
    from curator.sources import default_rejects_path
    a = default_rejects_path(wh, "load-jsonl")
    a.parent.mkdir(parents=True)
    a.write_text("")
    b = default_rejects_path(wh, "load-jsonl")
    assert b != a and not b.exists()


@pytest.mark.parametrize("option", ["--log", "--port-file"])
def test_serve_refuses_a_foreign_log_or_port_file(tmp_path, option):
    target = tmp_path / "important.txt"
    target.write_text("do not touch\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "curator.cli", "serve", "--port", "0", option,
                        str(target)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and str(target) in p.stderr and option in p.stderr
    assert target.read_text() == "do not touch\n"


def test_distill_generate_out_appends_only_to_its_own_samples(warehouse, tmp_path):
    from curator.errors import CuratorError
    from curator.paths import guard_output
    from distill.generate import SAMPLES, SamplingConfig, generate

    before = _digest(warehouse)
    notes = tmp_path / "notes.txt"
    notes.write_text("not samples\n")
    cfg = SamplingConfig(samples=1, max_new_tokens=1)
    for target in (warehouse, notes):
        with pytest.raises(CuratorError, match="refusing"):
            next(generate(None, None, None, [], cfg, "m", out=target), None)
    assert _digest(warehouse) == before and notes.read_text() == "not samples\n"
    torn = tmp_path / "torn.jsonl"  # a first write cut short by a kill is still ours
    torn.write_text('{"problem_id": "math/x", "quest')
    assert guard_output(torn, SAMPLES, option="--out") == torn
