"""`curator export-eval`: problems only, for evaluating students."""

from __future__ import annotations

import json
from collections import Counter

import jsonschema
import polars as pl
import pytest

from curator.errors import CuratorError
from curator.exporting import EvalOptions, export_eval
from curator.exporting.schema import EVAL_SCHEMA, load_schema


def test_eval_export_all_test_problems(graded_wh, tmp_path):
    r = export_eval(graded_wh, tmp_path / "e", EvalOptions(datasets=("math",), split="test"))
    df = pl.read_ndjson(tmp_path / "e" / "test.jsonl")
    with graded_wh.read() as con:
        want = con.sql("SELECT problem_id, question, reference_answer FROM problems "
                       "WHERE split = 'test' ORDER BY problem_id").pl()
    assert df["problem_id"].to_list() == want["problem_id"].to_list()
    assert df["question"].to_list() == want["question"].to_list()
    assert df.columns == ["problem_id", "dataset", "split", "subject", "level", "question",
                          "reference_answer", "metadata"]
    first = json.loads((tmp_path / "e" / "test.jsonl").read_text().splitlines()[0])
    assert isinstance(first["metadata"], dict)  # an object in JSONL
    assert r.manifest["kind"] == "eval" and r.manifest["totals"]["test"]["problems"] == 70


def test_eval_limit_keeps_the_subject_mix_and_is_reproducible(graded_wh, tmp_path):
    opts = EvalOptions(split="test", limit=35, seed=2)
    export_eval(graded_wh, tmp_path / "a", opts)
    export_eval(graded_wh, tmp_path / "b", opts)
    a = (tmp_path / "a" / "test.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "test.jsonl").read_bytes()
    df = pl.read_ndjson(tmp_path / "a" / "test.jsonl")
    assert df.height == 35
    with graded_wh.read() as con:
        whole = Counter(r[0] for r in con.execute(
            "SELECT subject FROM problems WHERE split = 'test'").fetchall())
    got = Counter(df["subject"])
    for subject, n in whole.items():
        assert abs(got[subject] - n * 35 / 70) < 2


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_eval_formats_load(graded_wh, tmp_path, fmt):
    import datasets
    export_eval(graded_wh, tmp_path / fmt, EvalOptions(split="test", format=fmt,
                                                       where="level >= 4"))
    if fmt == "parquet":
        ds = datasets.load_dataset("parquet", data_files=str(tmp_path / fmt / "test.parquet"))
        rows = ds["train"]
    else:
        rows = datasets.load_from_disk(str(tmp_path / fmt))["test"]
    assert min(rows["level"]) >= 4
    # metadata is an object in every format, and every record fits the eval schema
    assert rows[0]["metadata"]["level"] == f"Level {rows[0]['level']}"
    validator = jsonschema.Draft202012Validator(load_schema(EVAL_SCHEMA))
    for rec in rows:
        validator.validate(rec)


def test_eval_empty_selection_says_which_filter(graded_wh, tmp_path):
    with pytest.raises(CuratorError, match="--split validation left 0 of the 270 problems.*"
                                           "Loaded: math/test \\(70\\), math/train \\(200\\)"):
        export_eval(graded_wh, tmp_path / "e", EvalOptions(split="validation"))
    with pytest.raises(CuratorError, match="--dataset gsm8k left 0"):
        export_eval(graded_wh, tmp_path / "e", EvalOptions(datasets=("gsm8k",)))
    with pytest.raises(CuratorError, match="--where 'level = 0' left 0 of the 70"):
        export_eval(graded_wh, tmp_path / "e", EvalOptions(where="level = 0"))
    assert not (tmp_path / "e").exists()
