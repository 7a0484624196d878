"""`curator export --overwrite` replaces only a verified export; killed exports leave
nothing behind for long; Ctrl-C prints one line and leaves no partial output."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.cli import app

ROOT = Path(__file__).resolve().parents[2]
SPLITS = "train=0.8,test=0.2"
# A --where that keeps DuckDB busy for many seconds (until it is killed).
SLOW_WHERE = "sample_index >= (SELECT min(hash(range) % 2) FROM range(3000000000))"


def run(*args, db: Path, ok: bool = True):
    result = CliRunner().invoke(app, [*map(str, args), "--db", str(db)])
    if ok and result.exit_code != 0:
        raise AssertionError(f"curator {' '.join(map(str, args))} exited {result.exit_code}:\n"
                             f"{result.output}\n{result.exception!r}")
    return result


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_directory_that_merely_has_a_manifest(graded_wh, tmp_path):
    web = tmp_path / "webapp"
    (web / "src").mkdir(parents=True)
    (web / "src" / "index.js").write_text("app()")
    (web / "manifest.json").write_text('{"name": "app"}')
    r = run("export", web, "--overwrite", "--splits", SPLITS, db=graded_wh.path, ok=False)
    assert r.exit_code != 0
    assert "not a dust-curator export manifest" in str(r.exception)
    assert "even with --overwrite" in str(r.exception)
    assert _tree(web) == {"manifest.json": b'{"name": "app"}', "src/index.js": b"app()"}


@pytest.mark.parametrize("tamper, reason", [
    (lambda out: (out / "notes.txt").write_text("mine"), "notes.txt is not a file the export wrote"),
    (lambda out: (out / "sub").mkdir() or (out / "sub" / "x").write_text("x"),
     "sub/x is not a file the export wrote"),
    (lambda out: (out / "train.jsonl").write_text("edited\n"), "train.jsonl was changed"),
    (lambda out: (out / "test.jsonl").unlink(), "test.jsonl, listed in its manifest.json, is missing"),
    (lambda out: (out / "manifest.json").write_text(json.dumps(
        {**json.loads((out / "manifest.json").read_text()), "tool": "other"})),
     "not a dust-curator export manifest"),
])
def test_overwrite_refuses_an_export_with_anything_else(graded_wh, tmp_path, tamper, reason):
    out = tmp_path / "out"
    run("export", out, "--splits", SPLITS, db=graded_wh.path)
    tamper(out)
    before = _tree(out)
    r = run("export", out, "--overwrite", "--splits", SPLITS, db=graded_wh.path, ok=False)
    assert r.exit_code != 0 and reason in str(r.exception), str(r.exception)
    assert _tree(out) == before


def test_overwrite_replaces_an_untouched_export(graded_wh, tmp_path):
    out = tmp_path / "out"
    run("export-eval", out, "--dataset", "math", "--limit", "5", db=graded_wh.path)
    run("export", out, "--overwrite", "--splits", SPLITS, "--format", "hf", db=graded_wh.path)
    run("export", out, "--overwrite", "--splits", SPLITS, db=graded_wh.path)
    assert json.loads((out / "manifest.json").read_text())["kind"] == "training"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_killed_export_leaves_a_partial_that_the_next_export_removes(graded_wh, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "curator.cli", "export", str(out), "--db",
                          str(graded_wh.path), "--where", SLOW_WHERE],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait(timeout=30)
    partials = list(tmp_path.glob(".out.partial-*"))
    assert len(partials) == 1 and p.returncode == -signal.SIGKILL
    assert partials[0].name.startswith(f".out.partial-{p.pid}-")
    # an export to the same OUT cleans it up, and says so
    r = run("export", out, "--splits", SPLITS, db=graded_wh.path)
    assert f"removed {partials[0]}" in r.output
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]


def test_partials_of_live_exports_are_kept(graded_wh, tmp_path):
    from curator.exporting.files import clean_stale

    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".out.partial-{sleeper.pid}-{'a' * 12}"
        alive.mkdir()
        # a dead pid whose directory is still locked (its owner lives elsewhere)
        locked = tmp_path / f".out.partial-{_dead_pid()}-{'b' * 12}"
        locked.mkdir()
        fd = os.open(locked, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        dead = tmp_path / f".out.old-{_dead_pid()}-{'c' * 12}"
        (dead / "x").mkdir(parents=True)
        other = tmp_path / f".other.partial-{_dead_pid()}-{'d' * 12}"  # another OUT's
        other.mkdir()
        try:
            assert clean_stale(out) == [dead]
        finally:
            os.close(fd)
        assert alive.is_dir() and locked.is_dir() and other.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_ctrl_c_during_export_is_one_line_and_leaves_nothing(graded_wh, tmp_path, monkeypatch):
    """A real SIGINT while the export writes its files (how promptly DuckDB itself stops
    a running query is DuckDB's affair; the error it raises then is the next test)."""
    from curator.exporting import training

    out = tmp_path / "out"
    run("export", out, "--splits", SPLITS, db=graded_wh.path)
    before = _tree(out)
    write_splits = training.formats.write_splits

    def slow_write(*args, **kwargs):
        write_splits(*args, **kwargs)
        time.sleep(60)

    monkeypatch.setattr(training.formats, "write_splits", slow_write)

    def interrupt():
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    r = run("export", out, "--overwrite", "--splits", SPLITS, db=graded_wh.path, ok=False)
    t.join()
    assert r.exit_code == 130, (r.output, r.exception)
    assert "export interrupted" in r.output and "no partial output is left" in r.output
    assert "Traceback" not in r.output and "Query interrupted" not in r.output
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"] and _tree(out) == before


def test_duckdb_interrupt_error_is_treated_as_ctrl_c(graded_wh, tmp_path, monkeypatch):
    """DuckDB 2 reports a query stopped by SIGINT as RuntimeError('Query interrupted')."""
    from curator.exporting import evaluation

    def interrupted(*args, **kwargs):
        (args[6] / "test.jsonl").write_text('{"half": ')
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(evaluation.formats, "write_splits", interrupted)
    r = run("export-eval", tmp_path / "e", "--dataset", "math", db=graded_wh.path, ok=False)
    assert r.exit_code == 130 and "export interrupted" in r.output
    assert list(tmp_path.iterdir()) == []
