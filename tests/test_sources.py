"""Problem loaders: every format, reference-answer extraction, bad input, idempotence."""

from __future__ import annotations

import gzip
import json

import pytest

from curator.errors import CuratorError, InputError
from curator.sources import asdiv_answers, format_number, load_problems, parse_level


def problems(wh, where="TRUE"):
    with wh.read() as con:
        cur = con.execute(f"SELECT * FROM problems WHERE {where} ORDER BY dataset, split, source_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_math_directory_layout(wh, fixtures):
    rep = load_problems(wh, "math", fixtures / "math")
    assert sorted(rep.rows()) == [("math", "test", 2, 2, 0), ("math", "train", 3, 3, 0)]
    rows = problems(wh)
    assert all(r["reference_answer"] for r in rows)
    one = next(r for r in rows if r["source_id"] == "algebra/0")
    src = json.loads((fixtures / "math/train/algebra/0.json").read_text())
    assert one["question"] == src["problem"]
    assert one["reference_solution"] == src["solution"]
    assert one["subject"] == src["type"] and one["level"] == int(src["level"].split()[-1])
    # a second load adds nothing
    again = load_problems(wh, "math", fixtures / "math")
    assert again.added == 0 and again.read == 5


def test_math_jsonl_matches_directory_ids(wh, fixtures, tmp_path):
    load_problems(wh, "math", fixtures / "math")
    f = tmp_path / "math.jsonl"
    with open(f, "w") as out:
        for p in sorted((fixtures / "math").rglob("*.json")):
            d = json.loads(p.read_text())
            d["unique_id"] = str(p.relative_to(fixtures / "math"))
            out.write(json.dumps(d) + "\n")
    rep = load_problems(wh, "math", f)
    assert rep.read == 5 and rep.added == 0  # same ids as the directory load


def test_math_nested_boxed_and_errata(wh, tmp_path):
    d = tmp_path / "MATH" / "train" / "number_theory"
    d.mkdir(parents=True)
    (d / "1.json").write_text(json.dumps({
        "problem": "p", "level": "Level ?", "type": "Number Theory",
        "solution": r"so \boxed{\frac{1}{\sqrt{2}}} then finally $\boxed{\left\{1,2\right\}}$."}))
    (d / "7115.json").write_text(json.dumps({
        "problem": "q", "level": "Level 5", "type": "Number Theory",
        "solution": r"Therefore there are $\boxed{}$ primes in that range."}))
    load_problems(wh, "math", tmp_path / "MATH")
    rows = {r["source_id"]: r for r in problems(wh)}
    assert rows["number_theory/1"]["reference_answer"] == r"\left\{1,2\right\}"
    assert rows["number_theory/1"]["level"] is None
    assert rows["number_theory/7115"]["reference_answer"] == "0"
    assert "empty" in json.loads(rows["number_theory/7115"]["metadata"])["erratum"]


def test_gsm8k(wh, fixtures):
    rep = load_problems(wh, "gsm8k", fixtures / "gsm8k_test.jsonl", dataset="gsm8k")
    assert rep.rows() == [("gsm8k", "test", 3, 3, 0)]
    src = [json.loads(x) for x in (fixtures / "gsm8k_test.jsonl").read_text().splitlines()]
    rows = problems(wh)
    assert [r["reference_answer"] for r in rows if r["source_position"] == 1] == \
        [src[0]["answer"].split("####")[-1].strip().replace(",", "")]


def test_gsm8k_thousands_separator(wh, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "a\n#### 1,200"}) + "\n")
    load_problems(wh, "gsm8k", f)
    assert problems(wh)[0]["reference_answer"] == "1200"


def test_svamp_multiarith(wh, fixtures):
    load_problems(wh, "svamp", fixtures / "svamp.json")
    load_problems(wh, "multiarith", fixtures / "multiarith.json")
    sv = json.loads((fixtures / "svamp.json").read_text())
    rows = problems(wh, "dataset = 'svamp'")
    first = next(r for r in rows if r["source_id"] == sv[0]["ID"])
    assert first["question"] == sv[0]["Body"].strip() + " " + sv[0]["Question"].strip()
    assert first["reference_answer"] == format_number(sv[0]["Answer"])
    assert first["split"] == "test"
    ma = problems(wh, "dataset = 'multiarith'")
    assert len(ma) == 3 and all(r["reference_answer"] for r in ma)


def test_asdiv_answers_and_subset(wh, fixtures):
    rep = load_problems(wh, "asdiv", fixtures / "asdiv" / "ASDiv.xml")
    assert rep.read == 3
    rows = {r["source_id"]: r for r in problems(wh)}
    assert rows["nluds-0001"]["reference_answer"] == "9"
    assert rows["nluds-0002"]["reference_answer"] == "17, 12"
    assert rows["nluds-0002"]["reference_answers"] == ["17", "12"]
    assert rows["nluds-0003"]["reference_answer"] == "Mrs. Hilt"
    sub = load_problems(wh, "asdiv", fixtures / "asdiv", subset="asdiv-a", dataset="asdiv-a")
    assert sub.read == 2


@pytest.mark.parametrize("raw,expected", [
    ("9 (apples)", ["9"]), ("14  (seats)", ["14"]), ("3:30 p.m.", ["3:30 p.m."]),
    ("5 (years old); 15 (years old); 20 (years old)", ["5", "15", "20"]), ("Rug B", ["Rug B"]),
    ("-(1/3)", ["-(1/3)"]),
])
def test_asdiv_answer_parsing(raw, expected):
    assert asdiv_answers(raw) == expected


def test_number_and_level_formatting():
    assert format_number(51.0) == "51"
    assert format_number(0.25) == "0.25"
    assert format_number("1,200") == "1200"
    assert parse_level("Level 3") == 3 and parse_level("Level ?") is None


def test_generic_jsonl_and_parquet(wh, tmp_path):
    import polars as pl
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "q": "What is 1+1?", "ans": 2, "topic": "arith"},
        {"id": "b", "q": "Name?", "ans": "Bob", "topic": "names"},
    ]) + "\n")
    from curator.sources import FieldMap
    fm = FieldMap(question="q", answer="ans", id="id", subject="topic")
    rep = load_problems(wh, "jsonl", f, fields=fm, split="test")
    assert rep.rows() == [("mine", "test", 2, 2, 0)]
    pq = tmp_path / "other.parquet"
    pl.DataFrame({"question": ["x?"], "solution": [r"it is \boxed{7}"]}).write_parquet(pq)
    load_problems(wh, "parquet", pq, fields=FieldMap(solution="solution"))
    rows = {r["dataset"]: r for r in problems(wh)}
    assert rows["other"]["reference_answer"] == "7"
    a = problems(wh, "source_id = 'a'")[0]
    assert a["subject"] == "arith" and a["reference_answer"] == "2" and a["metadata"] is None


def test_bad_json_names_file_and_line_and_writes_nothing(wh, tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text('{"question": "q1", "answer": "a\\n#### 1"}\n{"question": broken}\n')
    with pytest.raises(InputError) as e:
        load_problems(wh, "gsm8k", f)
    assert f"{f}:2" in str(e.value) and "invalid JSON" in str(e.value)
    assert problems(wh) == []


def test_missing_field_and_wrong_type(wh, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"question": "q1", "answer": "a\\n#### 1"}\n{"question": 5, "answer": "#### 2"}\n')
    with pytest.raises(InputError, match=r"train.jsonl:2.*'question' must be a string"):
        load_problems(wh, "gsm8k", f)
    f.write_text('{"answer": "#### 2"}\n')
    with pytest.raises(InputError, match=r":1: missing field 'question'"):
        load_problems(wh, "gsm8k", f)


def test_skip_invalid_writes_rejects(wh, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"question": "q1", "answer": "a\\n#### 1"}\nnot json\n'
                 '{"question": "q3", "answer": "no final line"}\n')
    rej = tmp_path / "rejects.jsonl"
    rep = load_problems(wh, "gsm8k", f, skip_invalid=True, rejects_path=rej)
    assert rep.added == 1 and rep.rejected == 2
    lines = [json.loads(x) for x in rej.read_text().splitlines()]
    assert [x["line"] for x in lines] == [2, 3]
    assert "####" in lines[1]["reason"]


def test_broken_xml_non_utf8_empty_huge_unknown(wh, tmp_path):
    x = tmp_path / "ASDiv.xml"
    x.write_text("<ProblemSet>\n<Problem ID='1'>\n<Body>b</Body>\n</ProblemSet>")
    with pytest.raises(InputError, match=r"ASDiv.xml:\d+: broken XML"):
        load_problems(wh, "asdiv", x)
    b = tmp_path / "latin1.jsonl"
    b.write_bytes('{"question": "caf\u00e9?", "answer": "#### 1"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.jsonl:1: not valid UTF-8"):
        load_problems(wh, "gsm8k", b)
    e = tmp_path / "empty.jsonl"
    e.write_text("\n\n")
    with pytest.raises(InputError, match="file is empty"):
        load_problems(wh, "gsm8k", e)
    h = tmp_path / "huge.jsonl"
    h.write_text(json.dumps({"question": "x" * 2_000_000, "answer": "#### 1"}) + "\n")
    with pytest.raises(InputError, match="limit"):
        load_problems(wh, "gsm8k", h)
    with pytest.raises(CuratorError, match="unknown format 'csv'"):
        load_problems(wh, "csv", h)
    assert problems(wh) == []


def test_gzip_input(wh, tmp_path, fixtures):
    f = tmp_path / "test.jsonl.gz"
    f.write_bytes(gzip.compress((fixtures / "gsm8k_test.jsonl").read_bytes()))
    assert load_problems(wh, "gsm8k", f).added == 3


def test_cli_load_reports_counts(cli, fixtures):
    out = cli("load", "math", fixtures / "math").output
    assert "train" in out and "test" in out
    out = cli("load", "math", fixtures / "math").output
    assert "already present" in out


def test_cli_user_error_has_no_traceback(tmp_path, fixtures):
    import subprocess
    import sys
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n")
    p = subprocess.run([sys.executable, "-m", "curator.cli", "load", "gsm8k", str(bad)],
                       capture_output=True, text=True, env={**__import__("os").environ,
                                                           "CURATOR_DB": str(tmp_path / "w.duckdb")})
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "bad.jsonl:1" in p.stderr
