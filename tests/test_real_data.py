"""Acceptance on the real public data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import pytest

from curator.imports import import_samples
from curator.sources import load_problems
from curator.warehouse import Warehouse, scalar


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from tests.conftest import SHARED_DATA
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    wh = Warehouse(tmp_path_factory.mktemp("real") / "curator.duckdb")
    d = SHARED_DATA
    reports = {
        "math": load_problems(wh, "math", d / "MATH"),
        "gsm8k": load_problems(wh, "gsm8k", d / "gsm8k"),
        "svamp": load_problems(wh, "svamp", d / "svamp" / "SVAMP.json"),
        "asdiv": load_problems(wh, "asdiv", d / "asdiv" / "ASDiv.xml"),
        "multiarith": load_problems(wh, "multiarith", d / "multiarith" / "MultiArith.json"),
    }
    return wh, d, reports


@pytest.mark.shared_data
def test_counts(loaded):
    wh, _, reports = loaded
    assert sorted(reports["math"].rows()) == [("math", "test", 5000, 5000, 0),
                                              ("math", "train", 7500, 7500, 0)]
    assert reports["gsm8k"].added == 8792
    assert reports["svamp"].added == 1000
    assert reports["asdiv"].added == 2305
    assert reports["multiarith"].added == 600
    with wh.read() as con:
        assert scalar(con, "SELECT count(*) FROM problems WHERE coalesce(trim(reference_answer), '') = ''") == 0


@pytest.mark.shared_data
def test_tdg_import_links_everything_and_is_idempotent(loaded):
    wh, d, _ = loaded
    for name, model in (("GPT3.5-turbo-MATH.jsonl.gz", "gpt-3.5-turbo"), ("GPT4-MATH.jsonl.gz", "gpt-4")):
        run = import_samples(wh, "tdg", d / "tdg" / name, model=model).runs[0]
        assert (run.records, run.linked, run.created, run.added) == (60000, 7500, 0, 60000)
    with wh.read() as con:
        per_run = con.execute("SELECT count(*), count(DISTINCT s.problem_id) FROM samples s "
                              "JOIN problems p USING (problem_id) WHERE p.split = 'train' "
                              "GROUP BY run_id").fetchall()
        assert per_run == [(60000, 7500), (60000, 7500)]
    again = import_samples(wh, "tdg", d / "tdg" / "GPT4-MATH.jsonl.gz", model="gpt-4").runs[0]
    assert again.added == 0
    assert load_problems(wh, "math", d / "MATH").added == 0
