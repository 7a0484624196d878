"""The acceptance checks on the real thing: all 120,000 TDG rationales, graded by the real
grader, exported with the default options. Slow (it loads, imports and grades first);
run with ``pytest -m slow tests/exporting/test_real_tdg.py``. Set ``CURATOR_TDG_DB`` to a
warehouse already built that way (e.g. by bench/bench_export.py --db) to skip the build.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.exporting import ExportOptions, export_training
from curator.warehouse import Warehouse

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def _curator(db: Path, *args: str) -> None:
    r = CliRunner().invoke(app, [*args, "--db", str(db)])
    assert r.exit_code == 0, (args, r.output, r.exception)


@pytest.fixture(scope="module")
def tdg_wh(tmp_path_factory) -> Warehouse:
    data = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    if not (data / "tdg").is_dir():
        pytest.skip(f"{data} is not present")
    if os.environ.get("CURATOR_TDG_DB"):
        return Warehouse(os.environ["CURATOR_TDG_DB"])
    if "grade" not in {c.name for c in app.registered_commands}:
        pytest.skip("needs `curator grade`")
    db = tmp_path_factory.mktemp("tdg") / "curator.duckdb"
    _curator(db, "load", "math", str(data / "MATH" / "train"))
    _curator(db, "import", "tdg", str(data / "tdg" / "GPT4-MATH.jsonl.gz"), "--model", "gpt-4")
    _curator(db, "import", "tdg", str(data / "tdg" / "GPT3.5-turbo-MATH.jsonl.gz"),
             "--model", "gpt-3.5-turbo")
    _curator(db, "grade")
    return Warehouse(db)


@pytest.fixture(scope="module")
def parquet_export(tdg_wh, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tdg-export") / "parquet"
    export_training(tdg_wh, out, ExportOptions(format="parquet"), record=False)
    return out


def _records(out: Path) -> pl.DataFrame:
    splits = json.loads((out / "manifest.json").read_text())["selection"]["splits"]
    return pl.concat([pl.read_parquet(out / f"{s}.parquet").with_columns(split=pl.lit(s))
                      for s in splits])


def test_no_leak_split_sizes_and_subject_mix(parquet_export):
    df = _records(parquet_export)
    assert df.height > 110_000
    assert df.group_by("problem_id").agg(pl.col("split").n_unique())["split"].max() == 1
    # The keyed-hash split: sizes within 2 points of the fractions, and each split's
    # subject mix that of the whole within sampling error (4 standard deviations of a
    # share, at most sqrt(0.25 / n) for a split of n problems).
    d = df.unique("problem_id")
    whole = d.group_by("subject").len().with_columns(share=pl.col("len") / d.height)
    for split, frac in (("train", 0.9), ("validation", 0.05), ("test", 0.05)):
        part = d.filter(pl.col("split") == split)
        assert abs(part.height / d.height - frac) < 0.02, (split, part.height)
        share = part.group_by("subject").len().with_columns(
            share=pl.col("len") / part.height).join(whole, on="subject")
        gap = (share["share"] - share["share_right"]).abs().max()
        assert gap < 4 * (0.25 / part.height) ** 0.5, (split, gap)


def test_one_problem_less_moves_no_problem(parquet_export, tdg_wh, tmp_path):
    d = _records(parquet_export).unique("problem_id").select("problem_id", "split")
    gone = d["problem_id"].sort()[1000]
    out = tmp_path / "minus-one"
    export_training(tdg_wh, out, ExportOptions(format="parquet", where=f"problem_id != '{gone}'"),
                    record=False)
    e = _records(out).unique("problem_id").select("problem_id", "split")
    assert e.height == d.height - 1
    assert d.join(e, on="problem_id").filter(pl.col("split") != pl.col("split_right")).height == 0


def test_labels_match_the_views(parquet_export, tdg_wh):
    df = _records(parquet_export).select("sample_id", "label")
    with tdg_wh.read() as con:
        views = con.sql("SELECT sample_id, 'positive' AS view FROM positives UNION ALL "
                        "SELECT sample_id, 'negative' FROM negatives").pl()
    joined = df.join(views, on="sample_id", how="left")
    assert joined["view"].null_count() == 0
    assert (joined["label"] == joined["view"]).all()


def test_loads_everywhere_and_repeats_byte_identical(parquet_export, tdg_wh, tmp_path):
    import datasets
    ds = datasets.load_dataset("parquet", data_files={
        "train": str(parquet_export / "train.parquet"),
        "test": str(parquet_export / "test.parquet")})
    assert ds["test"].num_rows == pl.read_parquet(parquet_export / "test.parquet").height
    again = tmp_path / "again"
    export_training(tdg_wh, again, ExportOptions(format="parquet"), record=False)
    for f in ("train.parquet", "validation.parquet", "test.parquet"):
        assert (again / f).read_bytes() == (parquet_export / f).read_bytes()
    hf = tmp_path / "hf"
    export_training(tdg_wh, hf, ExportOptions(format="hf"), record=False)
    dd = datasets.load_from_disk(str(hf))
    assert dd["validation"].num_rows == pl.read_parquet(
        parquet_export / "validation.parquet").height
