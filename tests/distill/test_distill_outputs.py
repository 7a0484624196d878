"""Where `distill` commands write (docs/output-paths.md): every folder or file output is
absent, empty or one the same command wrote, never someone else's files or a folder that
holds a DuckDB database, and it is refused before any model loads; a refused evaluation
leaves nothing behind; sampling settings are checked first; error messages keep their
square brackets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from curator.errors import CuratorError, run_cli
from distill.cli import app

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[2] / "distill" / "configs"


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the command must refuse before it gets there."""
    # modules that bind the loaders at import keep the real ones (after the test too)
    import distill.asc.ranker  # noqa: F401
    import distill.run  # noqa: F401

    def boom(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr("distill.student.load_student", boom)
    monkeypatch.setattr("distill.models.load_model", boom)


def _warehouse_dir(tmp_path: Path) -> Path:
    wh = tmp_path / "warehouse"
    wh.mkdir()
    (wh / "curator.duckdb").write_bytes(b"\0" * 8 + b"DUCK" + b"\0" * 100)
    return wh


def _msg(res) -> str:
    return " ".join(str(res.exception).split())


def test_eval_and_generate_refuse_an_out_before_the_model_loads(tiny_model, eval_file,
                                                                 tmp_path, no_model):
    wh = _warehouse_dir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    common = ["--base", str(tiny_model), "--data", str(eval_file), "--device", "cpu"]
    for out, why in ((wh, "holds the DuckDB database curator.duckdb"),
                     (mine, "not a previous evaluation of `distill eval`")):
        res = runner.invoke(app, ["eval", *common, "--no-warehouse", "--out", str(out)])
        assert res.exit_code != 0 and why in _msg(res), _msg(res)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    notes = mine / "notes.txt"
    res = runner.invoke(app, ["generate", *common, "--out", str(notes)])
    assert res.exit_code != 0 and "is not a samples file written by" in _msg(res), _msg(res)
    res = runner.invoke(app, ["generate", *common, "--out", str(wh / "curator.duckdb")])
    assert res.exit_code != 0 and "it is a DuckDB database file" in _msg(res), _msg(res)
    assert notes.read_text() == "mine\n"


# a bad sampling setting -> what the refusal says
BAD_SAMPLING = {"--temperature -1": "--temperature -1.0: must be 0 (greedy) or more",
                "--top-p 0": "--top-p 0.0: must be more than 0 and at most 1",
                "--top-p 1.5": "--top-p 1.5: must be more than 0 and at most 1",
                "--samples 0": "--samples 0: must be at least 1",
                "--max-new-tokens 0": "--max-new-tokens 0: must be at least 1"}


@pytest.mark.parametrize("setting", sorted(BAD_SAMPLING))
def test_sampling_settings_are_checked_first(tiny_model, eval_file, tmp_path, no_model,
                                             setting):
    option, value = setting.split()
    why = BAD_SAMPLING[setting]
    common = ["--base", str(tiny_model), "--data", str(eval_file), "--device", "cpu",
              option, value]
    res = runner.invoke(app, ["eval", *common, "--no-warehouse", "--out", str(tmp_path / "e")])
    assert res.exit_code != 0 and why in _msg(res), _msg(res)
    res = runner.invoke(app, ["generate", *common, "--out", str(tmp_path / "s.jsonl")])
    assert res.exit_code != 0 and why in _msg(res), _msg(res)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_eval_leaves_nothing_behind(tiny_model, eval_file, tmp_path):
    db = tmp_path / "empty.duckdb"
    from curator.warehouse import Warehouse
    with Warehouse(db).write():   # a warehouse without the eval problems
        pass
    out = tmp_path / "eval-x"
    args = ["eval", "--base", str(tiny_model), "--data", str(eval_file), "--out", str(out),
            "--samples", "1", "--max-new-tokens", "3", "--device", "cpu", "--limit", "1"]
    res = runner.invoke(app, [*args, "--db", str(db)])
    assert res.exit_code != 0 and "not in the warehouse" in _msg(res), _msg(res)
    assert "(compare: [warehouse] db)" in _msg(res)
    assert not out.exists()
    # the corrected run, with other settings, is not refused
    res = runner.invoke(app, [*args, "--no-warehouse", "--temperature", "0"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads((out / "eval.json").read_text())["sampling"]["temperature"] == 0


def test_error_messages_keep_square_brackets():
    out = io.StringIO()
    console = Console(file=out, width=300, force_terminal=False)

    def app_():
        raise CuratorError("Give --db the warehouse (compare: [warehouse] db), or [bold]x")
    with pytest.raises(SystemExit):
        run_cli(app_, console, "interrupted")
    assert "error: Give --db the warehouse (compare: [warehouse] db), or [bold]x" \
        in out.getvalue()
    from distill.cli_options import console as distill_console
    with distill_console.capture() as cap:
        distill_console.print("table [warehouse] db")
    assert cap.get().strip() == "table [warehouse] db"


def test_init_tiny_writes_only_its_own_folder(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"mine": true}')
    res = runner.invoke(app, ["init-tiny", str(foreign), "--vocab", "300"])
    assert res.exit_code != 0 and "not a previous tiny model" in _msg(res), _msg(res)
    assert (foreign / "config.json").read_text() == '{"mine": true}'
    wh = _warehouse_dir(tmp_path)
    res = runner.invoke(app, ["init-tiny", str(wh), "--vocab", "300"])
    assert res.exit_code != 0 and "holds the DuckDB database" in _msg(res), _msg(res)
    assert sorted(p.name for p in wh.iterdir()) == ["curator.duckdb"]
    own = tmp_path / "tiny"
    for _ in range(2):            # an earlier tiny model is replaced
        res = runner.invoke(app, ["init-tiny", str(own), "--vocab", "300", "--hidden", "16",
                                  "--heads", "2", "--layers", "1"])
        assert res.exit_code == 0, (res.output, res.exception)


def test_ranker_pretrain_and_compare_refuse_a_warehouse_folder(tmp_path, export_file,
                                                               tiny_model, no_model):
    wh = _warehouse_dir(tmp_path)
    res = runner.invoke(app, ["ranker", "--data", str(export_file), "--base", str(tiny_model),
                              "--out", str(wh), "--device", "cpu"])
    assert res.exit_code != 0 and "holds the DuckDB database" in _msg(res), _msg(res)
    res = runner.invoke(app, ["pretrain", str(wh), "--steps", "1"])
    assert res.exit_code != 0 and "holds the DuckDB database" in _msg(res), _msg(res)
    res = runner.invoke(app, ["compare", "--config", str(CONFIGS / "compare-tiny.toml"),
                              "--out", str(wh), "--dry-run", "--no-warehouse"])
    assert res.exit_code != 0 and "holds the DuckDB database" in _msg(res), _msg(res)
    assert sorted(p.name for p in wh.iterdir()) == ["curator.duckdb"]


def test_compare_refuses_an_out_with_a_foreign_table(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.md").write_text("my notes\n")
    res = runner.invoke(app, ["compare", "--config", str(CONFIGS / "compare-tiny.toml"),
                              "--out", str(out), "--dry-run", "--no-warehouse"])
    assert res.exit_code != 0 and "holds comparison.md but no stages/" in _msg(res), _msg(res)
    assert sorted(p.name for p in out.iterdir()) == ["comparison.md"]


@pytest.mark.parametrize("kind", ["TRAINING_OUT", "RANKER_OUT", "EVAL_OUT", "TINY_OUT",
                                  "PRETRAIN_OUT"])
def test_a_compare_stage_folder_holding_only_its_stamp_is_as_good_as_empty(tmp_path, kind):
    """`distill compare` stamps every stage folder before the stage's command runs in it
    (init-tiny and pretrain stages included): the stamp alone never makes it foreign, and
    anything else still does."""
    import distill.outputs as outputs
    from curator.paths import guard_output
    d = tmp_path / "stage"
    d.mkdir()
    (d / outputs.STAGE_STAMP).write_text("fp")
    assert guard_output(d, getattr(outputs, kind), option="--out") == d
    (d / "notes.txt").write_text("mine")
    with pytest.raises(CuratorError, match="notes.txt"):
        guard_output(d, getattr(outputs, kind), option="--out")
