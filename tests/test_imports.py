"""Importing existing rationales: linking, created problems, idempotence, bad records."""

from __future__ import annotations

import json

import pytest

from curator.errors import CuratorError, InputError
from curator.imports import import_samples
from curator.sources import load_problems
from curator.warehouse import scalar


def test_tdg_links_through_problem_label(wh, fixtures):
    load_problems(wh, "math", fixtures / "math")
    rep = import_samples(wh, "tdg", fixtures / "tdg_gpt35.jsonl", model="gpt-3.5-turbo")
    run = rep.runs[0]
    assert (run.records, run.linked, run.created, run.added, run.present) == (9, 3, 0, 9, 0)
    with wh.read() as con:
        assert scalar(con, "SELECT count(DISTINCT problem_id) FROM samples") == 3
        assert scalar(con, "SELECT count(*) FROM problems") == 5
        kind, model = con.execute("SELECT kind, model FROM runs").fetchall()[0]
    assert (kind, model) == ("import", "gpt-3.5-turbo")
    again = import_samples(wh, "tdg", fixtures / "tdg_gpt35.jsonl", model="gpt-3.5-turbo")
    assert again.runs[0].added == 0 and again.runs[0].present == 9


def test_tdg_creates_missing_problems(wh, fixtures):
    rep = import_samples(wh, "tdg", fixtures / "tdg_gpt35.jsonl", model="gpt-3.5-turbo")
    assert rep.runs[0].created == 3 and rep.runs[0].linked == 0
    with wh.read() as con:
        rows = con.execute("SELECT question, reference_answer, dataset, split FROM problems").fetchall()
    assert all(not q.startswith("Problem:") and ref for q, ref, _, _ in rows)
    assert {(d, s) for *_, d, s in rows} == {("math", "train")}
    # loading the real problems afterwards keeps both (different source ids) ...
    load_problems(wh, "math", fixtures / "math")
    # ... and a fresh import of another model links to the first matching one
    rep2 = import_samples(wh, "tdg", fixtures / "tdg_gpt35.jsonl", model="other")
    assert rep2.runs[0].created == 0


def test_near_duplicate_questions_link_to_distinct_problems(wh, tmp_path):
    # MATH train holds pairs that differ only in whitespace; each keeps its own samples.
    qa, qb = "Find $ab\\,$.", "Find $ab\\,$.\n"
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": "1", "question": qa, "answer": "1"}, {"id": "2", "question": qb, "answer": "1"}]) + "\n")
    from curator.sources import FieldMap
    load_problems(wh, "jsonl", f, dataset="math", fields=FieldMap(id="id"))
    t = tmp_path / "t.jsonl"
    t.write_text("\n".join(json.dumps({"question": "Problem:\n" + q, "answer": "x",
                                        "generated_answer": ["a", "b"]}) for q in (qa, qb)) + "\n")
    rep = import_samples(wh, "tdg", t, model="m")
    assert rep.runs[0].linked == 2 and rep.runs[0].added == 4


def test_jsonl_import_student_samples(wh, fixtures, tmp_path):
    load_problems(wh, "math", fixtures / "math")
    with wh.read() as con:
        pid, question = con.execute("SELECT problem_id, question FROM problems ORDER BY 1 LIMIT 1").fetchall()[0]
    f = tmp_path / "student.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"problem_id": pid, "completion": "so \\boxed{1}", "sample_index": 0, "logprob": -3.5,
         "model": "student:nat", "finish_reason": "stop", "completion_tokens": 7},
        {"problem_id": pid, "completion": "so \\boxed{2}", "sample_index": 1, "logprob": -4.0,
         "model": "student:nat", "finish_reason": "length", "completion_tokens": 9},
        {"question": "A brand new question?", "reference_answer": 3, "completion": "3",
         "model": "student:nat"},
    ]) + "\n")
    rep = import_samples(wh, "jsonl", f)
    assert rep.runs[0].added == 3 and rep.runs[0].linked == 1 and rep.runs[0].created == 1
    with wh.read() as con:
        meta = con.execute("SELECT metadata->>'logprob', finish_reason FROM samples "
                           "WHERE problem_id = ? ORDER BY sample_index", [pid]).fetchall()
        assert meta == [("-3.5", "stop"), ("-4.0", "length")]
        assert scalar(con, "SELECT reference_answer FROM problems WHERE question LIKE 'A brand%'") == "3"


def test_import_errors(wh, tmp_path, fixtures):
    with pytest.raises(CuratorError, match="--model"):
        import_samples(wh, "tdg", fixtures / "tdg_gpt35.jsonl")
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "q", "generated_answer": "not a list"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'generated_answer' must be a list"):
        import_samples(wh, "tdg", f, model="m")
    g = tmp_path / "s.jsonl"
    g.write_text('{"problem_id": "p_nope", "completion": "x", "model": "m"}\n')
    with pytest.raises(InputError, match="p_nope.*not in the warehouse"):
        import_samples(wh, "jsonl", g)
    with wh.read() as con:
        assert scalar(con, "SELECT count(*) FROM samples") == 0
        assert scalar(con, "SELECT count(*) FROM runs") == 0


def test_sql_sample_ids_equal_python_ids():
    import duckdb

    from curator import ids
    con = duckdb.connect()
    got = con.execute(f"SELECT {ids.sample_id_sql('?', '?', '?')}", ["r_1", "p_2", 7]).fetchall()[0][0]
    assert got == ids.sample_id("r_1", "p_2", 7)
