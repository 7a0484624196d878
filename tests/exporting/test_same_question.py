"""One question, two problem ids: nothing from evaluation reaches training through the
other id, and an export never puts the two in different splits.

The way it happens for real (a new-user trial): `curator import tdg` before `curator
load math` creates problems `imported:q_...`; loading MATH then adds the same questions
under their MATH ids. An eval set drawn from one id must hold the other back too.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from curator.exporting import ExportOptions, export_training
from curator.exporting.splits import (hash_split, parse_splits, question_groups,
                                      stable_assignment)
from curator.ids import question_key, sample_id_sql
from curator.warehouse import Warehouse

from .test_stable_splits import assignment_of, run

SPLITS = "train=0.5,validation=0.25,test=0.25"


def _records(out: Path) -> pl.DataFrame:
    m = json.loads((out / "manifest.json").read_text())
    frames = [pl.read_ndjson(out / f"{s}.jsonl") for s in m["selection"]["splits"]
              if (out / f"{s}.jsonl").stat().st_size]
    return pl.concat(frames)


def _keys(questions) -> set[str]:
    return {question_key(q) for q in questions}


# -- the trial's reproduction, on the project's own fixtures ------------------------------

def test_import_before_load_does_not_leak_eval_questions(cli, fixtures, db_path, tmp_path):
    # 3 TDG problems imported first: created as imported:q_... problems
    cli("import", "tdg", fixtures / "tdg_gpt35.jsonl", "--model", "gpt-4")
    # then MATH, whose train folder has the same 3 questions under MATH ids
    cli("load", "math", fixtures / "math")
    wh = Warehouse(db_path)
    with wh.read() as con:
        loaded = [r[0] for r in con.execute(
            "SELECT problem_id FROM problems WHERE split = 'train' AND source_id NOT LIKE "
            "'imported:%' ORDER BY problem_id").fetchall()]
        imported = {r[0]: r[1] for r in con.execute(
            "SELECT problem_id, question_key FROM problems "
            "WHERE source_id LIKE 'imported:%'").fetchall()}
        n_questions = con.execute("SELECT count(DISTINCT question_key) FROM problems "
                                  "WHERE split = 'train'").fetchall()[0][0]
    assert len(loaded) == 3 and len(imported) == 3 and n_questions == 3
    # an eval set of two of the MATH train problems
    evals = loaded[:2]
    ids_sql = ", ".join(f"'{p}'" for p in evals)
    cli("export-eval", tmp_path / "E", "--dataset", "math", "--split", "train",
        "--where", f"problem_id IN ({ids_sql})")
    cli("grade")
    r = cli("export", tmp_path / "X", "--splits", "train=1")

    eval_keys = _keys(pl.read_ndjson(tmp_path / "E" / "train.jsonl")["question"])
    assert len(eval_keys) == 2
    df = _records(tmp_path / "X")
    assert not _keys(df["question"]) & eval_keys
    # the third imported problem, whose question is not in the eval set, is exported
    assert set(df["problem_id"]) == {p for p, k in imported.items() if k not in eval_keys}
    twins = sorted(p for p, k in imported.items() if k in eval_keys)
    m = json.loads((tmp_path / "X" / "manifest.json").read_text())
    held = m["held_back"]
    assert held["problems"] == 2
    assert held["reasons"] == {"same_question": twins}
    with Warehouse(db_path).read() as con:
        key_of = dict(con.execute("SELECT problem_id, question_key FROM problems").fetchall())
    for twin in twins:
        assert [key_of[e] for e in held["same_question_as"][twin]] == [key_of[twin]]
        assert set(held["same_question_as"][twin]) <= set(evals)
    assert ("held back 2 evaluation problem(s) from the splits (2 with the same question as "
            "an evaluation problem)") in " ".join(r.output.split())
    assert m["funnel"][-2]["step"].startswith("holding back evaluation problems")
    # the recorded query selects exactly the exported records
    with Warehouse(db_path).read() as con:
        got = {row[0] for row in con.execute(
            f"SELECT sample_id FROM ({m['selection']['query']})").fetchall()}
    assert got == set(df["sample_id"])


def test_import_before_load_real_tdg_and_math(cli, shared_data, db_path, tmp_path):
    """The trial's steps on real files: TDG GPT-4 rationales imported for a few MATH
    train problems, then that MATH folder loaded, then export-eval --limit, grade, export."""
    src = shared_data / "MATH" / "train" / "counting_and_probability"
    folder = tmp_path / "MATH" / "train" / "counting_and_probability"
    folder.mkdir(parents=True)
    files = sorted(src.glob("*.json"), key=lambda f: int(f.stem))[:12]
    for f in files:
        shutil.copy(f, folder / f.name)
    wanted = _keys(json.loads(f.read_text())["problem"] for f in files)
    g4 = tmp_path / "g4.jsonl"
    with gzip.open(shared_data / "tdg" / "GPT4-MATH.jsonl.gz", "rt") as fin, g4.open("w") as out:
        for line in fin:
            if question_key(json.loads(line)["question"]) in wanted:
                out.write(line)
    assert len(g4.read_text().splitlines()) == 12

    cli("import", "tdg", g4, "--model", "gpt-4")
    cli("load", "math", tmp_path / "MATH" / "train")
    with Warehouse(db_path).read() as con:
        assert con.execute("SELECT count(*), count(DISTINCT question_key) FROM problems"
                           ).fetchall() == [(24, 12)]
    cli("export-eval", tmp_path / "E", "--dataset", "math", "--split", "train", "--limit", "12")
    cli("grade")
    cli("export", tmp_path / "X", "--splits", "train=1")
    eval_keys = _keys(pl.read_ndjson(tmp_path / "E" / "train.jsonl")["question"])
    df = _records(tmp_path / "X")
    assert not _keys(df["question"]) & eval_keys
    held = json.loads((tmp_path / "X" / "manifest.json").read_text())["held_back"]
    assert held["reasons"].get("same_question")


# -- one split per question ------------------------------------------------------------------

def _add_twins(wh: Warehouse, n: int) -> dict[str, str]:
    """Copy the first ``n`` MATH train problems of the fixture warehouse, with their
    samples and grades, under another dataset ('math-copy'), the question's whitespace
    doubled; returns {twin id: original id}."""
    with wh.write() as con:
        con.execute(f"""CREATE TEMP TABLE twin AS
            SELECT problem_id AS orig, 'p_twin' || substr(problem_id, 7) AS pid,
                   replace(question, ' ', '  ') AS q
            FROM problems WHERE split = 'train' ORDER BY problem_id LIMIT {n}""")
        rows = con.execute("SELECT pid, q FROM twin").fetchall()
        con.execute("CREATE TEMP TABLE twin_key (pid VARCHAR, k VARCHAR)")
        con.executemany("INSERT INTO twin_key VALUES (?, ?)",
                        [(pid, question_key(q)) for pid, q in rows])
        con.execute("""INSERT INTO problems BY NAME
            SELECT p.* REPLACE (t.pid AS problem_id, 'math-copy' AS dataset, t.q AS question,
                                k.k AS question_key)
            FROM problems p JOIN twin t ON t.orig = p.problem_id
            JOIN twin_key k ON k.pid = t.pid""")
        new_sid = sample_id_sql("s.run_id", "t.pid", "s.sample_index")
        con.execute(f"""CREATE TEMP TABLE twin_samples AS
            SELECT s.sample_id AS old, {new_sid} AS new, t.pid
            FROM samples s JOIN twin t ON t.orig = s.problem_id""")
        con.execute("""INSERT INTO samples BY NAME
            SELECT s.* REPLACE (m.new AS sample_id, m.pid AS problem_id)
            FROM samples s JOIN twin_samples m ON m.old = s.sample_id""")
        con.execute("""INSERT INTO grades BY NAME
            SELECT g.* REPLACE (m.new AS sample_id)
            FROM grades g JOIN twin_samples m ON m.old = g.sample_id""")
        twins = dict(con.execute("SELECT pid, orig FROM twin").fetchall())
        same = con.execute("SELECT count(*) FROM problems p JOIN twin t ON t.pid = p.problem_id "
                           "JOIN problems o ON o.problem_id = t.orig "
                           "WHERE p.question_key = o.question_key").fetchall()[0][0]
    assert same == n   # whitespace differences are one question
    return twins


def test_problems_with_one_question_share_a_split(fresh_graded_wh, tmp_path):
    wh, db = fresh_graded_wh, fresh_graded_wh.path
    twins = _add_twins(wh, 40)
    run("export", tmp_path / "a", "--splits", SPLITS, "--seed", "3", db=db)
    a = assignment_of(tmp_path / "a")
    assert set(twins) <= set(a) and set(twins.values()) <= set(a)
    spec = parse_splits(SPLITS)
    for twin, orig in twins.items():
        assert a[twin] == a[orig]
        # placed where the smaller id ('p_0...' < 'p_twin...') hashes: the original
        assert a[orig] == hash_split(min(twin, orig), spec, 3)
    # every problem whose question is its own stays exactly where its id puts it
    for pid, split in a.items():
        if pid not in twins and pid not in twins.values():
            assert split == hash_split(pid, spec, 3)
    block = json.loads((tmp_path / "a" / "manifest.json").read_text())["split_assignment"]
    assert block["same_question"]["problems"] == 80
    assert block["same_question"]["placed_by_another_id"] == 40

    # the balanced method deals a question once, so it too keeps twins together
    run("export", tmp_path / "b", "--splits", SPLITS, "--split-method", "balanced", db=db)
    b = assignment_of(tmp_path / "b")
    assert all(b[t] == b[o] for t, o in twins.items())


def test_splits_from_an_export_that_split_a_question(fresh_graded_wh, tmp_path):
    wh, db = fresh_graded_wh, fresh_graded_wh.path
    twins = _add_twins(wh, 40)
    run("export", tmp_path / "a", "--splits", SPLITS, "--seed", "3", db=db)
    # an export written before this rule: it put twins where their own ids hash
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    spec = parse_splits(SPLITS)
    problems = {name: [] for name in spec.names}
    for name, ids in m["split_assignment"]["problems"].items():
        for pid in ids:
            problems[hash_split(pid, spec, 3) if pid in twins else name].append(pid)
    m["split_assignment"]["problems"] = {k: sorted(v) for k, v in problems.items()}
    old = tmp_path / "old-manifest.json"
    old.write_text(json.dumps(m))
    earlier = {p: s for s, ids in problems.items() for p in ids}
    split_apart = sorted(t for t, o in twins.items() if earlier[t] != earlier[o])
    assert split_apart

    r = run("export", tmp_path / "c", "--splits", SPLITS, "--seed", "3",
            "--splits-from", old, db=db)
    c = assignment_of(tmp_path / "c")
    assert all(c[t] == c[o] for t, o in twins.items())
    # the smaller id (the original) keeps its earlier split; its twin joins it
    assert all(c[o] == earlier[o] for o in twins.values())
    block = json.loads((tmp_path / "c" / "manifest.json").read_text())["split_assignment"]
    assert block["moved"] == split_apart
    assert f"{len(split_apart)} problem(s) moved" in " ".join(r.output.split())


def test_stable_assignment_groups_without_moving_unique_questions():
    spec = parse_splits(SPLITS)
    ids = [f"p{i}" for i in range(200)]
    alone = stable_assignment(ids, spec, 0).assignment
    rep = {"p7": "p3", "p3": "p3", "p150": "p3", "p9": "p10", "p10": "p10"}
    got = stable_assignment(ids, spec, 0, representative=rep)
    assert {got.assignment[p] for p in ("p3", "p7", "p150")} == {alone["p3"]}
    # the representative need not be selected (p10 is; a representative outside the
    # selection, e.g. an evaluation problem, places its twins all the same)
    assert got.assignment["p9"] == alone["p10"]
    assert all(got.assignment[p] == alone[p] for p in ids if p not in rep)
    assert got.hashed == 200 and got.reused == 0 and not got.moved
    assert question_groups(["b", "a", "c", "a"], {"c": "a", "a": "a"}) == {"b": ["b"],
                                                                         "a": ["a", "c"]}
    assert stable_assignment(["x9"], spec, 0, representative={"x9": "x1"}).assignment == \
        {"x9": hash_split("x1", spec, 0)}


def test_allow_eval_problems_keeps_twins_of_test_problems_together(fresh_graded_wh, tmp_path):
    """A train problem with the question of a test problem: held back by default (reason
    same_question), and with --allow-eval-problems in the test problem's split."""
    wh = fresh_graded_wh
    with wh.write() as con:
        test_pid, qk, question = con.execute(
            "SELECT problem_id, question_key, question FROM problems WHERE split = 'test' "
            "ORDER BY problem_id LIMIT 1").fetchall()[0]
        train_pid = con.execute("SELECT problem_id FROM problems WHERE split = 'train' "
                                "AND problem_id IN (SELECT problem_id FROM samples) "
                                "ORDER BY problem_id LIMIT 1").fetchall()[0][0]
        # the train problem turns out to ask the test problem's question
        con.execute("UPDATE problems SET question = ?, question_key = ? WHERE problem_id = ?",
                    [question, qk, train_pid])
    res = export_training(wh, tmp_path / "x", ExportOptions(splits=SPLITS), record=False)
    held = res.manifest["held_back"]
    assert held["reasons"]["same_question"] == [train_pid]
    assert held["same_question_as"] == {train_pid: [test_pid]}
    assert train_pid not in {p for ids in res.manifest["split_assignment"]["problems"].values()
                             for p in ids}
    res = export_training(wh, tmp_path / "y", ExportOptions(
        splits=SPLITS, allow_eval_problems=True, runs=()), record=False)
    placed = {p: s for s, ids in res.manifest["split_assignment"]["problems"].items()
              for p in ids}
    assert placed[train_pid] == hash_split(min(train_pid, test_pid), parse_splits(SPLITS), 0)
