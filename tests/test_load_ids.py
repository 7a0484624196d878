"""Problem ids of the loaders: a record is only ever "already present" as the same
question, never as another problem that happened to share its line number or id; a single
MATH file loads; split names anywhere in a file name; the format list of the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curator import ids
from curator.errors import CuratorError, InputError
from curator.sources import (FieldMap, Problem, insert_problems, load_problems, problems_frame,
                             split_from_file_name)


def rows(wh, where="TRUE"):
    with wh.read() as con:
        cur = con.execute(f"SELECT * FROM problems WHERE {where} "
                          "ORDER BY dataset, split, source_position, source_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def gsm_line(question: str, answer: str) -> str:
    return json.dumps({"question": question, "answer": f"because\n#### {answer}"}) + "\n"


MINI = gsm_line("What is 1+1?", "2") + gsm_line("What is 2+2?", "4")


def test_second_gsm8k_file_adds_its_questions_and_changes_no_other_answer(wh, fixtures, tmp_path):
    load_problems(wh, "gsm8k", fixtures / "gsm8k_test.jsonl", dataset="gsm8k")
    before = {r["problem_id"]: r["reference_answer"] for r in rows(wh)}
    mini = tmp_path / "test.jsonl"
    mini.write_text(MINI)
    rep = load_problems(wh, "gsm8k", mini, update=True)
    assert rep.rows() == [("gsm8k", "test", 2, 2, 0)]
    assert rep.changes == [] and not rep.updated
    after = {r["problem_id"]: r["reference_answer"] for r in rows(wh)}
    assert {k: after[k] for k in before} == before
    assert sorted(r["question"] for r in rows(wh) if r["problem_id"] not in before) == \
        ["What is 1+1?", "What is 2+2?"]
    # the id is a hash of the question: the same file again adds nothing
    assert load_problems(wh, "gsm8k", mini).added == 0


def test_jsonl_and_parquet_without_id_field_are_keyed_by_question(wh, tmp_path):
    import polars as pl
    a, b = tmp_path / "a" / "set.jsonl", tmp_path / "b" / "set.jsonl"
    for f, q in ((a, "Question A?"), (b, "Question B?")):
        f.parent.mkdir()
        f.write_text(json.dumps({"question": q, "answer": 1}) + "\n")
    load_problems(wh, "jsonl", a, split="train")
    assert load_problems(wh, "jsonl", b, split="train", update=True).added == 1
    pq = tmp_path / "set.parquet"
    pl.DataFrame({"question": ["Question C?"], "answer": ["3"]}).write_parquet(pq)
    assert load_problems(wh, "parquet", pq, split="train").added == 1
    got = {r["question"]: r["reference_answer"] for r in rows(wh)}
    assert got == {"Question A?": "1", "Question B?": "1", "Question C?": "3"}
    # a changed answer for the same question is still found, and --update applies it
    a.write_text(json.dumps({"question": "Question A?", "answer": 5}) + "\n")
    rep = load_problems(wh, "jsonl", a, split="train", update=True)
    assert rep.added == 0 and [(c.stored, c.loaded) for c in rep.changes] == [("1", "5")]


def _legacy_load(wh, path: Path, dataset: str, split: str) -> list[str]:
    """Store ``path``'s GSM8K records as earlier versions did: source id 'line<n>'."""
    recs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        obj = json.loads(line)
        reasoning, final = obj["answer"].rsplit("####", 1)
        recs.append(Problem(dataset=dataset, split=split, question=obj["question"],
                            reference_answer=final.strip().replace(",", ""),
                            reference_solution=reasoning.strip(), source_id=f"line{n}",
                            source_path=str(path), source_position=n))
    with wh.write() as con:
        insert_problems(con, problems_frame(recs))
    return [p.problem_id for p in recs]


def test_warehouse_with_line_number_ids_keeps_them(wh, fixtures, tmp_path):
    src = tmp_path / "test.jsonl"
    src.write_text((fixtures / "gsm8k_test.jsonl").read_text())
    old = _legacy_load(wh, src, "gsm8k", "test")
    rep = load_problems(wh, "gsm8k", src)
    assert rep.rows() == [("gsm8k", "test", 3, 0, 3)]
    assert sorted(r["problem_id"] for r in rows(wh)) == sorted(old)
    # another file with line 1 and 2 neither hides behind nor rewrites the stored problems
    mini = tmp_path / "mini" / "test.jsonl"
    mini.parent.mkdir()
    mini.write_text(MINI)
    rep = load_problems(wh, "gsm8k", mini, update=True)
    assert rep.added == 2 and rep.changes == []
    kept = {r["problem_id"]: r["reference_answer"] for r in rows(wh) if r["problem_id"] in old}
    assert kept[old[0]] == "18"
    # a changed answer of a stored problem is applied to its old id
    lines = src.read_text().splitlines()
    lines[0] = lines[0].replace("#### 18", "#### 19")
    src.write_text("\n".join(lines) + "\n")
    rep = load_problems(wh, "gsm8k", src, update=True)
    assert rep.added == 0 and [c.problem_id for c in rep.changes] == [old[0]]
    assert rows(wh, f"problem_id = '{old[0]}'")[0]["reference_answer"] == "19"


def test_same_id_other_question_is_an_error_naming_both(wh, fixtures, tmp_path):
    load_problems(wh, "svamp", fixtures / "svamp.json")
    data = json.loads((fixtures / "svamp.json").read_text())
    stored_q = data[1]["Body"].strip() + " " + data[1]["Question"].strip()
    data[1]["Body"], data[1]["Answer"] = "Tom has 3 apples.", 99.0
    f = tmp_path / "SVAMP.json"
    f.write_text(json.dumps(data, indent=2))
    for update in (False, True):
        with pytest.raises(InputError) as e:
            load_problems(wh, "svamp", f, update=update)
        msg = str(e.value)
        assert f"{f}:" in msg and "Tom has 3 apples." in msg and stored_q[:40] in msg
        assert str(data[1]["ID"]) in msg
    assert "99" not in {r["reference_answer"] for r in rows(wh)}
    rej = tmp_path / "rejects.jsonl"
    rep = load_problems(wh, "svamp", f, update=True, skip_invalid=True, rejects_path=rej)
    assert rep.rejected == 1 and rep.added == 0 and rep.changes == []
    assert "another question" in json.loads(rej.read_text().splitlines()[0])["reason"]


def test_same_id_field_other_question_is_an_error(wh, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"id": "a", "question": "What is 1+1?", "answer": 2}) + "\n")
    load_problems(wh, "jsonl", f, fields=FieldMap(id="id"), split="train")
    g = tmp_path / "other" / "mine.jsonl"
    g.parent.mkdir()
    g.write_text(json.dumps({"id": "a", "question": "What is 5+5?", "answer": 10}) + "\n")
    with pytest.raises(InputError, match=r"mine.jsonl:1: .*What is 1\+1\?.*What is 5\+5\?"):
        load_problems(wh, "jsonl", g, fields=FieldMap(id="id"), split="train", update=True)
    assert [r["reference_answer"] for r in rows(wh)] == ["2"]
    # only spacing differs: the same question, already present
    g.write_text(json.dumps({"id": "a", "question": " What is  1+1? ", "answer": 2}) + "\n")
    assert load_problems(wh, "jsonl", g, fields=FieldMap(id="id"), split="train").added == 0


def test_repeated_question_in_one_file_names_both_lines(wh, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(gsm_line("Q one?", "1") + gsm_line("Q two?", "2") + gsm_line("Q one?", "1"))
    with pytest.raises(InputError, match=r"train.jsonl:3: .*line 1"):
        load_problems(wh, "gsm8k", f)
    assert rows(wh) == []
    rep = load_problems(wh, "gsm8k", f, skip_invalid=True, rejects_path=tmp_path / "r.jsonl")
    assert rep.added == 2 and rep.rejected == 1


def test_single_math_file_and_list(wh, fixtures, tmp_path):
    one = fixtures / "math" / "test" / "geometry" / "10.json"
    rep = load_problems(wh, "math", one)
    assert rep.rows() == [("math", "test", 1, 1, 0)]
    assert [(c.split, c.how) for c in rep.splits] == [("test", "layout")]
    assert rows(wh)[0]["source_id"] == "geometry/10"
    # the folder load finds it already present (same id)
    assert load_problems(wh, "math", fixtures / "math").added == 4
    # a pretty-printed JSON list of MATH records
    recs = [json.loads(p.read_text()) for p in sorted((fixtures / "math" / "train").rglob("*.json"))]
    lst = tmp_path / "extra.json"
    lst.write_text(json.dumps([{**r, "problem": r["problem"] + " (variant)"} for r in recs],
                              indent=2))
    rep = load_problems(wh, "math", lst, split="train")
    assert rep.added == 3 and rep.read == 3


def test_math_subject_folder_takes_its_split_from_the_folder_above(wh, fixtures):
    """MATH/test/geometry loaded alone is test (the layout <split>/<subject>/<n>.json), so
    loading all of MATH afterwards finds its problems already present."""
    rep = load_problems(wh, "math", fixtures / "math" / "test" / "geometry")
    assert rep.rows() == [("math", "test", 2, 2, 0)]
    assert {c.how for c in rep.splits} == {"layout"}
    assert load_problems(wh, "math", fixtures / "math").added == 3


def test_real_math_single_file(wh, shared_data):
    f = shared_data / "MATH" / "test" / "algebra" / "1.json"
    rep = load_problems(wh, "math", f)
    assert rep.rows() == [("math", "test", 1, 1, 0)]
    assert rows(wh)[0]["source_id"] == "algebra/1"


@pytest.mark.parametrize("name, split", [
    ("mydata.test.jsonl", "test"), ("gsm8k_test.jsonl", "test"), ("test.jsonl", "test"),
    ("data-validation.jsonl", "validation"), ("my.dev.jsonl.gz", "dev"),
    ("set_val.parquet", "val"), ("TRAIN.jsonl", "train"), ("notes.jsonl", None),
    ("contest.jsonl", None), ("attest.train2.jsonl", "train"),
])
def test_split_from_any_part_of_the_file_name(name, split):
    assert split_from_file_name(Path("/tmp/test_runs") / name) == split


def test_load_dotted_file_name_split(wh, tmp_path):
    f = tmp_path / "mydata.test.jsonl"
    f.write_text(json.dumps({"question": "q?", "answer": 1}) + "\n")
    rep = load_problems(wh, "jsonl", f)
    assert rep.rows() == [("mydata", "test", 1, 1, 0)]
    assert [(c.split, c.how) for c in rep.splits] == [("test", "file name")]


def test_unknown_format_lists_every_format(wh, tmp_path, cli):
    f = tmp_path / "x.csv"
    f.write_text("a\n")
    with pytest.raises(CuratorError, match="unknown format 'csv'.*synthetic"):
        load_problems(wh, "csv", f)
    r = cli("load", "csv", f, ok=False)
    assert r.exit_code != 0 and "synthetic" in str(r.exception) + r.output


def test_math_json_file_holding_json_lines(wh, fixtures, tmp_path):
    f = tmp_path / "test" / "probs.json"
    f.parent.mkdir()
    recs = [json.loads(p.read_text()) for p in sorted((fixtures / "math").rglob("*.json"))]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    rep = load_problems(wh, "math", f)
    assert rep.rows() == [("math", "test", 2, 2, 0)]
    f.write_text('{\n  "problem": "p",\n  "solution": broken\n}\n')
    with pytest.raises(InputError, match=r"probs.json:3: invalid JSON"):
        load_problems(wh, "math", f)


def test_cli_names_a_changed_answer_by_its_question(cli, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(MINI)
    cli("load", "gsm8k", f)
    f.write_text(MINI.replace("#### 2", "#### 3"))
    r = cli("load", "gsm8k", f, "--update")
    assert "'What is 1+1?': '2' -> '3'" in r.output


def test_problems_an_import_created_are_not_taken_for_loaded_ones(wh, tmp_path):
    from curator.imports import import_samples
    ans = tmp_path / "answers.jsonl"
    ans.write_text(json.dumps({"question": "What is 1+1?", "completion": "2", "model": "m"}) + "\n")
    import_samples(wh, "jsonl", ans, dataset="gsm8k", split="test")
    f = tmp_path / "test.jsonl"
    f.write_text(MINI)
    rep = load_problems(wh, "gsm8k", f)
    assert rep.added == 2 and rep.changes == []
    assert sorted(r["source_id"].split(":")[0] for r in rows(wh, "question = 'What is 1+1?'")) \
        == ["imported", ids.question_key("What is 1+1?")]
