"""`curator export` against the fixture warehouse (real GPT-4 and GPT-3.5 rationales)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from curator.errors import CuratorError
from curator.exporting import ExportOptions, export_training, files, formats
from curator.exporting.schema import TRAINING_SCHEMA, field_names, load_schema, validate_table

from .conftest import CURRENT_GRADER, DUPLICATES, ERRORED, TRUNCATED

SPLITS = "train=0.6,validation=0.2,test=0.2"  # 200 problems: 40 per small split
FIELDS = field_names(load_schema(TRAINING_SCHEMA))


def read_split(out: Path, fmt: str, split: str) -> pl.DataFrame:
    if fmt == "jsonl":
        return pl.read_ndjson(out / f"{split}.jsonl")
    if fmt == "parquet":
        return pl.read_parquet(out / f"{split}.parquet")
    import datasets
    return pl.from_arrow(datasets.load_from_disk(str(out))[split].data.table)


def read_all(out: Path, fmt: str) -> pl.DataFrame:
    names = json.loads((out / "manifest.json").read_text())["selection"]["splits"]
    return pl.concat([read_split(out, fmt, s).with_columns(pl.lit(s).alias("split"))
                      for s in names])


@pytest.fixture(scope="module")
def exports(fixture_db, tmp_path_factory) -> dict[str, Path]:
    """One export per format with the same options (shared by the read-only tests)."""
    from curator.warehouse import Warehouse
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt in formats.FORMATS:
        out[fmt] = root / fmt
        export_training(Warehouse(fixture_db), out[fmt], ExportOptions(format=fmt, splits=SPLITS))
    return out


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_no_problem_in_two_splits_and_schema_fields(exports, fmt):
    df = read_all(exports[fmt], fmt)
    assert df.columns[:-1] == FIELDS
    per_problem = df.group_by("problem_id").agg(pl.col("split").n_unique().alias("n"))
    assert per_problem["n"].max() == 1
    assert df["sample_id"].n_unique() == df.height


def test_formats_hold_the_same_records(exports):
    frames = [read_all(exports[f], f).sort("sample_id") for f in formats.FORMATS]
    for other in frames[1:]:
        assert other.equals(frames[0])


def test_labels_match_the_views_and_ignore_the_old_grader(exports, graded_wh):
    df = read_all(exports["parquet"], "parquet")
    with graded_wh.read() as con:
        pos = {r[0] for r in con.execute("SELECT sample_id FROM positives").fetchall()}
        neg = {r[0] for r in con.execute("SELECT sample_id FROM negatives").fetchall()}
    for sid, label, grader in df.select("sample_id", "label", "grader_version").iter_rows():
        assert grader == CURRENT_GRADER
        assert (sid in pos) == (label == "positive")
        assert (sid in neg) == (label == "negative")
    assert set(df["label"]) == {"positive", "negative"}


def test_every_record_matches_its_warehouse_rows(exports, graded_wh):
    df = read_all(exports["jsonl"], "jsonl")
    with graded_wh.read() as con:
        ref = con.sql("""SELECT s.sample_id, s.completion, p.question, p.reference_answer,
                                r.model, g.extracted
                         FROM samples s JOIN problems p USING (problem_id)
                         JOIN runs r USING (run_id) JOIN grades g USING (sample_id)
                         WHERE g.grader_version = ?""", params=[CURRENT_GRADER]).pl()
    joined = df.join(ref, on="sample_id", how="left")
    assert joined["completion"].null_count() == 0
    assert (joined["rationale"] == joined["completion"]).all()
    assert (joined["question"] == joined["question_right"]).all()
    assert (joined["teacher_model"] == joined["model"]).all()
    assert joined["extracted_answer"].eq_missing(joined["extracted"]).all()


def test_default_split_is_the_keyed_hash_of_each_problem(exports):
    from curator.exporting.splits import hash_split, parse_splits
    df = read_all(exports["parquet"], "parquet").unique("problem_id")
    spec = parse_splits(SPLITS)
    for pid, split in df.select("problem_id", "split").iter_rows():
        assert split == hash_split(pid, spec, 0), pid
    m = json.loads((exports["parquet"] / "manifest.json").read_text())
    assert m["split_assignment"]["method"] == "keyed-hash"
    assert {s: sorted(ids) for s, ids in m["split_assignment"]["problems"].items()} == {
        s: sorted(df.filter(pl.col("split") == s)["problem_id"]) for s in spec.names}


def test_balanced_method_keeps_the_problem_mix_per_split(graded_wh, tmp_path):
    out = tmp_path / "balanced"
    export_training(graded_wh, out, ExportOptions(format="parquet", splits=SPLITS,
                                                  split_method="balanced"), record=False)
    df = read_all(out, "parquet").unique("problem_id")
    whole = Counter(df["subject"])
    for split, frac in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        part = Counter(df.filter(pl.col("split") == split)["subject"])
        assert sum(part.values()) == round(frac * df.height)
        for subject, n in whole.items():
            # the apportionment keeps every subject within 2 problems of its share
            assert abs(part[subject] - frac * n) < 2, (split, subject)


def test_exclusions_and_duplicates_reported(exports, graded_wh):
    m = json.loads((exports["jsonl"] / "manifest.json").read_text())
    df = read_all(exports["jsonl"], "jsonl")
    with graded_wh.read() as con:
        graded = con.sql("SELECT * FROM graded_samples").pl()
    usable = graded.filter(pl.col("completion").is_not_null() & pl.col("error_class").is_null()
                           & (pl.col("finish_reason") != "length"))
    assert graded.height - usable.height == TRUNCATED + ERRORED
    # exact duplicates within a problem, counted independently of the SQL
    groups = Counter(zip(usable["problem_id"], usable["completion"]))
    expected_dups = sum(n - 1 for n in groups.values())
    assert expected_dups >= DUPLICATES  # the planted ones, plus the teachers' own repeats
    assert m["duplicates_dropped"] == expected_dups
    assert df.height == usable.height - expected_dups
    assert df.select("problem_id", "rationale").n_unique() == df.height
    truncated = set(graded.filter(pl.col("finish_reason") == "length")["sample_id"])
    assert not truncated & set(df["sample_id"])
    steps = {s["step"]: s["samples"] for s in m["funnel"]}
    assert steps["graded samples"] == graded.height


def test_manifest_contents(exports):
    out = exports["parquet"]
    m = json.loads((out / "manifest.json").read_text())
    df = read_all(out, "parquet")
    assert m["selection"]["grader_version"] == CURRENT_GRADER
    assert m["selection"]["seed"] == 0
    assert {r["model"] for r in m["selection"]["runs"]} == {"gpt-4", "gpt-3.5-turbo"}
    assert "positives" in m["selection"]["query"] and "negatives" in m["selection"]["query"]
    assert m["tool_version"] and m["created_at"]
    # counts per split x label x subject add up to the records
    for split, per_label in m["counts"].items():
        sub = df.filter(pl.col("split") == split)
        for label, per_subject in per_label.items():
            for subject, n in per_subject.items():
                assert sub.filter((pl.col("label") == label)
                                  & (pl.col("subject") == subject)).height == n
        assert m["totals"][split]["records"] == sub.height
    # file hashes are the files' hashes
    for f in m["files"]:
        assert files.sha256_file(out / f["path"]) == f["sha256"]


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_repeated_export_is_byte_identical(graded_wh, exports, tmp_path, fmt):
    again = tmp_path / "again"
    export_training(graded_wh, again, ExportOptions(format=fmt, splits=SPLITS))
    first = json.loads((exports[fmt] / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first["files"] == second["files"]  # same paths, sizes and sha256
    for f in first["files"]:
        assert (exports[fmt] / f["path"]).read_bytes() == (again / f["path"]).read_bytes()
    for m in (first, second):
        m.pop("created_at")
    assert first == second  # the manifest differs only in its time


def test_seed_changes_the_split(graded_wh, exports, tmp_path):
    other = tmp_path / "seed1"
    export_training(graded_wh, other, ExportOptions(format="parquet", splits=SPLITS, seed=1))
    a = read_all(exports["parquet"], "parquet").select("problem_id", "split").unique()
    b = read_all(other, "parquet").select("problem_id", "split").unique()
    moved = a.join(b, on="problem_id").filter(pl.col("split") != pl.col("split_right")).height
    assert moved > 20


def test_loads_with_datasets_and_polars(exports):
    import datasets
    dd = datasets.load_from_disk(str(exports["hf"]))
    assert set(dd) == {"train", "validation", "test"}
    assert dd["train"].column_names == FIELDS
    assert dd["train"].features["level"].dtype == "int32"
    pq = exports["parquet"]
    ds = datasets.load_dataset("parquet", data_files={s: str(pq / f"{s}.parquet")
                                                      for s in ("train", "test")})
    assert ds["test"].num_rows == pl.read_parquet(pq / "test.parquet").height
    js = exports["jsonl"]
    dj = datasets.load_dataset("json", data_files=str(js / "validation.jsonl"))["train"]
    assert dj.num_rows == pl.read_ndjson(js / "validation.jsonl").height
    assert dj[0]["label"] in ("positive", "negative")


def test_caps_per_problem_deterministic(graded_wh, tmp_path):
    opts = ExportOptions(format="parquet", splits=SPLITS, max_positives=2, max_negatives=1)
    r = export_training(graded_wh, tmp_path / "a", opts)
    df = read_all(tmp_path / "a", "parquet")
    per = df.group_by("problem_id", "label").len()
    assert per.filter(pl.col("label") == "positive")["len"].max() == 2
    assert per.filter(pl.col("label") == "negative")["len"].max() == 1
    assert r.manifest["capped"] > 0
    export_training(graded_wh, tmp_path / "b", opts)
    assert set(read_all(tmp_path / "b", "parquet")["sample_id"]) == set(df["sample_id"])
    export_training(graded_wh, tmp_path / "c", ExportOptions(**{**opts.__dict__, "seed": 5}))
    assert set(read_all(tmp_path / "c", "parquet")["sample_id"]) != set(df["sample_id"])


def test_negatives_only_export(graded_wh, tmp_path):
    export_training(graded_wh, tmp_path / "neg", ExportOptions(format="jsonl", splits="train=1",
                                                        max_positives=0))
    df = read_split(tmp_path / "neg", "jsonl", "train")
    assert set(df["label"]) == {"negative"}


def test_filters_runs_dataset_where_and_includes(graded_wh, tmp_path):
    r = export_training(graded_wh, tmp_path / "g35", ExportOptions(
        runs=("gpt-3.5-turbo",), where="level >= 3", splits="train=1"))
    df = read_split(tmp_path / "g35", "jsonl", "train")
    assert set(df["teacher_model"]) == {"gpt-3.5-turbo"} and df["level"].min() >= 3
    assert [s["step"] for s in r.manifest["funnel"]][1:3] == ["--runs gpt-3.5-turbo",
                                                              "--where 'level >= 3'"]
    r2 = export_training(graded_wh, tmp_path / "inc", ExportOptions(
        splits="train=1", include_truncated=True, include_errored=True))
    r1 = export_training(graded_wh, tmp_path / "exc", ExportOptions(splits="train=1"))
    # errored samples have no rationale, so only the truncated ones come back
    assert r2.manifest["totals"]["train"]["records"] == \
        r1.manifest["totals"]["train"]["records"] + TRUNCATED


@pytest.mark.parametrize("opts, message", [
    (ExportOptions(datasets=("gsm8k",)), "--dataset gsm8k left 0 of the 2084"),
    (ExportOptions(where="level > 9"), "--where 'level > 9' left 0"),
    (ExportOptions(where="finish_reason = 'length' AND error_class IS NULL",
                   include_truncated=False), "excluding truncated samples"),
])
def test_empty_selection_names_the_filter(graded_wh, tmp_path, opts, message):
    with pytest.raises(CuratorError, match="empty: " + message.replace("(", r"\(")):
        export_training(graded_wh, tmp_path / "out", opts)
    assert not (tmp_path / "out").exists()


def test_bad_options_rejected_before_work(graded_wh, tmp_path):
    with pytest.raises(CuratorError, match="no run has id or model 'gpt-5'"):
        export_training(graded_wh, tmp_path / "o", ExportOptions(runs=("gpt-5",)))
    with pytest.raises(CuratorError, match="--where 'no_such_column > 1' failed"):
        export_training(graded_wh, tmp_path / "o", ExportOptions(where="no_such_column > 1"))
    with pytest.raises(CuratorError, match="unknown export format 'csv'"):
        export_training(graded_wh, tmp_path / "o", ExportOptions(format="csv"))
    with pytest.raises(CuratorError, match="--stratify: unknown"):
        export_training(graded_wh, tmp_path / "o", ExportOptions(stratify=("teacher",)))
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.iterdir())  # no staging directory left behind


def test_no_grades_yet(tmp_path):
    from curator.warehouse import Warehouse
    empty = Warehouse(tmp_path / "empty.duckdb")
    empty.init()
    with pytest.raises(CuratorError, match="no sample has been graded yet; run `curator grade`"):
        export_training(empty, tmp_path / "out")


def test_non_empty_out_refused_and_overwrite(graded_wh, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CuratorError, match="not empty; pass --overwrite"):
        export_training(graded_wh, out, ExportOptions(splits=SPLITS))
    with pytest.raises(CuratorError, match="not a previous export"):
        export_training(graded_wh, out, ExportOptions(splits=SPLITS), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    export_training(graded_wh, empty, ExportOptions(splits=SPLITS))  # an empty OUT is fine
    export_training(graded_wh, empty, ExportOptions(splits=SPLITS, format="parquet"), overwrite=True)
    assert sorted(p.name for p in empty.iterdir()) == ["manifest.json", "test.parquet",
                                                      "train.parquet", "validation.parquet"]
    with pytest.raises(CuratorError, match="not empty"):
        export_training(graded_wh, empty, ExportOptions(splits=SPLITS))


def test_interrupted_export_leaves_no_out_and_keeps_the_old_one(graded_wh, tmp_path, monkeypatch):
    from curator.exporting import training

    out = tmp_path / "out"

    def interrupted(*args, **kwargs):
        stage = args[6]
        (stage / "train.jsonl").write_text('{"half": ')  # a partial file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(training.formats, "write_splits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_training(graded_wh, out, ExportOptions(splits=SPLITS))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    export_training(graded_wh, out, ExportOptions(splits=SPLITS))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(training.formats, "write_splits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_training(graded_wh, out, ExportOptions(splits=SPLITS), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_is_recorded(fresh_graded_wh, tmp_path):
    r = export_training(fresh_graded_wh, tmp_path / "x", ExportOptions(format="parquet", splits=SPLITS))
    with fresh_graded_wh.read() as con:
        rows = con.execute("SELECT kind, format, out_path, totals, grader_version, seed, "
                           "manifest_sha256 FROM exports WHERE out_path = ?",
                           [str((tmp_path / "x").resolve())]).fetchall()
    assert len(rows) == 1
    kind, fmt, path, totals, grader, seed, sha = rows[0]
    assert (kind, fmt, grader, seed) == ("training", "parquet", CURRENT_GRADER, 0)
    assert Path(path) == (tmp_path / "x").resolve()
    assert json.loads(totals) == r.manifest["totals"]
    assert sha == files.sha256_file(tmp_path / "x" / "manifest.json")


def test_validation_finds_a_bad_record_like_jsonschema_would(graded_wh):
    import jsonschema
    schema = load_schema(TRAINING_SCHEMA)
    cols = ", ".join(f'"{f}"' for f in FIELDS)
    with graded_wh.read() as con:
        con.execute(f"""CREATE TEMP TABLE recs AS
            SELECT p.problem_id, p.dataset, p.subject, p.level, p.question,
                   p.reference_answer, s.completion AS rationale, g.extracted AS extracted_answer,
                   CASE WHEN g.correct THEN 'positive' ELSE 'negative' END AS label,
                   r.model AS teacher_model, s.run_id, s.sample_id, g.grader_version
            FROM samples s JOIN problems p USING (problem_id) JOIN runs r USING (run_id)
            JOIN grades g USING (sample_id)
            WHERE g.grader_version = '{CURRENT_GRADER}' AND s.completion IS NOT NULL""")
        con.execute(f"CREATE TEMP VIEW v AS SELECT {cols} FROM recs")
        shapes = validate_table(con, "v", TRAINING_SCHEMA, "sample_id")
        assert 1 < shapes < 20
        # the shape check agrees with validating every record one by one
        rows = con.sql("SELECT * FROM v").pl().to_dicts()
        assert all(jsonschema.Draft202012Validator(schema).is_valid(r) for r in rows)
        bad = con.execute("SELECT max(sample_id) FROM recs WHERE label = 'negative'").fetchall()[0][0]
        con.execute("UPDATE recs SET label = 'unsure' WHERE sample_id = ?", [bad])
        with pytest.raises(CuratorError, match=f"sample_id='{bad}'.*label.*'unsure' is not one of"):
            validate_table(con, "v", TRAINING_SCHEMA, "sample_id")
        con.execute("UPDATE recs SET label = 'negative', rationale = NULL WHERE sample_id = ?",
                    [bad])
        with pytest.raises(CuratorError, match="at rationale: None is not of type 'string'"):
            validate_table(con, "v", TRAINING_SCHEMA, "sample_id")


def test_split_counts_by_subject_sum(exports):
    m = json.loads((exports["hf"] / "manifest.json").read_text())
    totals = defaultdict(int)
    for split, per_label in m["counts"].items():
        for per_subject in per_label.values():
            totals[split] += sum(per_subject.values())
    assert dict(totals) == {s: t["records"] for s, t in m["totals"].items()}


@pytest.mark.parametrize("opts", [
    ExportOptions(splits=SPLITS),
    ExportOptions(splits=SPLITS, max_positives=1, max_negatives=3, seed=9, where="level > 1"),
    ExportOptions(splits=SPLITS, max_negatives=0, runs=("gpt-4",), include_truncated=True),
])
def test_manifest_query_selects_exactly_the_exported_records(graded_wh, tmp_path, opts):
    r = export_training(graded_wh, tmp_path / "out", opts, record=False)
    exported = set(read_all(tmp_path / "out", "jsonl")["sample_id"])
    with graded_wh.read() as con:
        again = con.sql(r.manifest["selection"]["query"]).pl()
    assert again.columns == FIELDS
    assert set(again["sample_id"]) == exported and again.height == len(exported)
