"""`curator export --layout sft|preference|unpaired` against the fixture warehouse: the rows
are the default export's records rewritten, in the same problem-level splits, in every
format, and preference pairs always join a positive and a negative of one problem."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from curator.errors import CuratorError
from curator.exporting import ExportOptions, export_training, formats
from curator.student_prompts import DEFAULT_TEMPLATE, render_prompt
from curator.teachers.prompts import BUILTIN

SPLITS = "train=0.6,validation=0.2,test=0.2"


def read_all(out: Path) -> pl.DataFrame:
    """Every row of an export in any format, with its split, via `datasets` (as a user
    would load it)."""
    import datasets
    manifest = json.loads((out / "manifest.json").read_text())
    fmt = manifest["format"]
    names = list(manifest["selection"]["splits"])
    if fmt == "hf":
        dd = datasets.load_from_disk(str(out))
    else:
        dd = datasets.load_dataset("json" if fmt == "jsonl" else "parquet", data_dir=str(out))
    assert list(dd) == names
    return pl.concat([pl.from_arrow(dd[s].data.table).with_columns(pl.lit(s).alias("split"))
                      for s in names])


@pytest.fixture(scope="module")
def default(fixture_db, tmp_path_factory) -> pl.DataFrame:
    from curator.warehouse import Warehouse
    out = tmp_path_factory.mktemp("default") / "x"
    export_training(Warehouse(fixture_db), out, ExportOptions(format="parquet", splits=SPLITS),
                    record=False)
    return read_all(out)


@pytest.fixture(scope="module")
def layouts(fixture_db, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each layout in each format, same selection options as ``default``."""
    from curator.warehouse import Warehouse
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for layout in ("sft", "preference", "unpaired"):
        for fmt in formats.FORMATS:
            out[layout, fmt] = root / f"{layout}-{fmt}"
            export_training(Warehouse(fixture_db), out[layout, fmt],
                            ExportOptions(format=fmt, splits=SPLITS, layout=layout), record=False)
    return out


def _split_of(df: pl.DataFrame) -> dict[str, str]:
    pairs = df.select("problem_id", "split").unique()
    assert pairs["problem_id"].n_unique() == pairs.height, "a problem is in two splits"
    return dict(pairs.iter_rows())


@pytest.mark.parametrize("layout", ["sft", "preference", "unpaired"])
def test_formats_hold_the_same_rows_and_problems_keep_their_split(layouts, default, layout):
    frames = [read_all(layouts[layout, f]) for f in formats.FORMATS]
    key = ["problem_id", "chosen_sample_id", "rejected_sample_id"] if layout == "preference" \
        else ["problem_id", "sample_id"]
    for other in frames[1:]:
        assert other.sort(key).equals(frames[0].sort(key))
    # the default export's problem-level split, problem for problem
    expected = _split_of(default)
    got = _split_of(frames[0])
    assert got and all(expected[p] == s for p, s in got.items())


def test_sft_rows_are_the_positives_with_distills_prompt(layouts, default):
    df = read_all(layouts["sft", "jsonl"])
    assert df.columns == ["prompt", "completion", "problem_id", "sample_id", "split"]
    pos = default.filter(pl.col("label") == "positive")
    assert sorted(df["sample_id"]) == sorted(pos["sample_id"])
    src = {r["sample_id"]: r for r in pos.iter_rows(named=True)}
    for row in df.iter_rows(named=True):
        rec = src[row["sample_id"]]
        assert row["completion"] == rec["rationale"]
        assert row["prompt"] == render_prompt(DEFAULT_TEMPLATE, rec["question"])
        assert row["prompt"] == f"Question: {rec['question']}\nAnswer: "
        assert row["split"] == rec["split"]


def test_unpaired_rows_are_all_records_with_boolean_labels(layouts, default):
    df = read_all(layouts["unpaired", "parquet"])
    assert df.schema["label"] == pl.Boolean
    want = dict(default.select("sample_id", pl.col("label") == "positive").iter_rows())
    got = dict(df.select("sample_id", "label").iter_rows())
    assert got == want


def test_preference_pairs_are_all_positive_negative_pairs_of_one_problem(
        layouts, default, graded_wh):
    df = read_all(layouts["preference", "hf"])
    assert df.columns[:3] == ["prompt", "chosen", "rejected"]
    with graded_wh.read() as con:
        positives = {r[0]: r[1] for r in con.execute(
            "SELECT sample_id, problem_id FROM positives").fetchall()}
        negatives = {r[0]: r[1] for r in con.execute(
            "SELECT sample_id, problem_id FROM negatives").fetchall()}
    text = dict(default.select("sample_id", "rationale").iter_rows())
    for r in df.iter_rows(named=True):
        assert positives[r["chosen_sample_id"]] == r["problem_id"]
        assert negatives[r["rejected_sample_id"]] == r["problem_id"]
        assert r["chosen"] == text[r["chosen_sample_id"]]
        assert r["rejected"] == text[r["rejected_sample_id"]]
    # uncapped: every pair, once
    by_label = default.group_by("problem_id", "label").len()
    counts = defaultdict(lambda: {"positive": 0, "negative": 0})
    for pid, label, n in by_label.iter_rows():
        counts[pid][label] = n
    expected = {p: c["positive"] * c["negative"] for p, c in counts.items()
                if c["positive"] * c["negative"]}
    got = Counter(df["problem_id"])
    assert dict(got) == expected
    assert df.select("chosen_sample_id", "rejected_sample_id").is_unique().all()


def test_problems_without_a_pair_are_counted_per_split(layouts, default):
    manifest = json.loads((layouts["preference", "jsonl"] / "manifest.json").read_text())
    per = default.group_by("split", "problem_id").agg(
        (pl.col("label") == "positive").sum().alias("p"),
        (pl.col("label") == "negative").sum().alias("n"))
    want = {s: {"no_positive": per.filter((pl.col("split") == s) & (pl.col("p") == 0)).height,
                "no_negative": per.filter((pl.col("split") == s) & (pl.col("n") == 0)).height}
            for s in ("train", "validation", "test")}
    assert manifest["layout"]["problems_without"] == want
    assert sum(v["no_positive"] + v["no_negative"] for v in want.values()) > 0
    assert any("no preference pair" in w for w in manifest["warnings"])
    totals = manifest["totals"]
    assert sum(t["records"] for t in totals.values()) == read_all(
        layouts["preference", "jsonl"]).height


def test_manifest_names_the_trainer_and_columns(layouts):
    want = {"sft": ("trl.SFTTrainer", ["prompt", "completion", "problem_id", "sample_id"]),
            "preference": ("trl.DPOTrainer", ["prompt", "chosen", "rejected", "problem_id",
                                              "chosen_sample_id", "rejected_sample_id"]),
            "unpaired": ("trl.KTOTrainer", ["prompt", "completion", "label", "problem_id",
                                            "sample_id"])}
    for (layout, fmt), out in layouts.items():
        m = json.loads((out / "manifest.json").read_text())
        assert (m["layout"]["trainer"], m["layout"]["columns"]) == want[layout]
        assert m["fields"] == want[layout][1] and m["format"] == fmt
        assert m["selection"]["layout"] == layout
        assert m["layout"]["prompt"] == {"kind": "text", "template": DEFAULT_TEMPLATE}
        assert [f["path"] for f in m["files"]]  # hashed like every export


def test_pairs_per_problem_cap_is_balanced_and_seeded(graded_wh, default, tmp_path):
    def pairs(seed, out, fmt="jsonl"):
        export_training(graded_wh, tmp_path / out, ExportOptions(
            splits=SPLITS, layout="preference", pairs_per_problem=3, seed=seed, format=fmt),
            record=False)
        return read_all(tmp_path / out)

    a, again, other = pairs(0, "a", "hf"), pairs(0, "b", "hf"), pairs(1, "c")
    assert a.equals(again)
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab"]
    assert manifests[0]["files"] == manifests[1]["files"]  # byte-identical, state.json included
    n_pos = dict(default.filter(pl.col("label") == "positive").group_by("problem_id").len().iter_rows())
    n_neg = dict(default.filter(pl.col("label") == "negative").group_by("problem_id").len().iter_rows())
    for pid, g in a.group_by("problem_id"):
        pid = pid[0]
        p, q = n_pos[pid], n_neg[pid]
        assert g.height == min(3, p * q)
        # each positive (and negative) is used as evenly as the cap allows
        for col, n in (("chosen_sample_id", p), ("rejected_sample_id", q)):
            uses = Counter(g[col])
            assert len(uses) == min(n, g.height)
            assert max(uses.values()) - min(uses.values()) <= 1
    assert set(a["problem_id"]) == set(other["problem_id"])
    assert not a.sort("chosen_sample_id", "rejected_sample_id").equals(
        other.sort("chosen_sample_id", "rejected_sample_id"))
    # the split does not depend on the pairing
    assert _split_of(a) == {p: s for p, s in _split_of(default).items() if p in set(a["problem_id"])}


def test_conversational_styles_with_a_few_shot_prompt(graded_wh, default, tmp_path):
    tmpl = BUILTIN["math-cot"]
    export_training(graded_wh, tmp_path / "conv", ExportOptions(
        format="parquet", splits=SPLITS, layout="preference", style="conversational",
        chat_prompt="math-cot", pairs_per_problem=1), record=False)
    df = read_all(tmp_path / "conv")
    question = dict(default.select("problem_id", "question").iter_rows())
    row = df.row(0, named=True)
    prompt = row["prompt"]
    assert [m["role"] for m in prompt] == [r for r, _ in tmpl.messages]
    assert prompt[0]["content"] == tmpl.messages[0][1]
    assert question[row["problem_id"]] in prompt[-1]["content"]
    assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    m = json.loads((tmp_path / "conv" / "manifest.json").read_text())
    assert m["layout"]["prompt"]["template"]["prompt_id"] == tmpl.prompt_id

    export_training(graded_wh, tmp_path / "msgs", ExportOptions(
        format="jsonl", splits=SPLITS, layout="sft", style="messages"), record=False)
    df = read_all(tmp_path / "msgs")
    assert df.columns == ["messages", "problem_id", "sample_id", "split"]
    rationale = dict(default.select("sample_id", "rationale").iter_rows())
    for r in df.head(20).iter_rows(named=True):
        assert r["messages"] == [{"role": "user", "content": question[r["problem_id"]]},
                                 {"role": "assistant", "content": rationale[r["sample_id"]]}]


def test_custom_plain_prompt_template(graded_wh, default, tmp_path):
    export_training(graded_wh, tmp_path / "t", ExportOptions(
        splits=SPLITS, layout="unpaired", prompt_template="Problem: {question}\nSolution:"),
        record=False)
    df = read_all(tmp_path / "t")
    question = dict(default.select("problem_id", "question").iter_rows())
    assert all(p == f"Problem: {question[i]}\nSolution:"
               for p, i in df.select("prompt", "problem_id").iter_rows())


@pytest.mark.parametrize("opts,message", [
    (dict(layout="dpo"), "--layout 'dpo'"),
    (dict(style="conversational"), "--style applies only to --layout"),
    (dict(layout="sft", style="chat"), "--style 'chat'"),
    (dict(layout="preference", style="messages"), "--style messages is for --layout sft"),
    (dict(layout="sft", pairs_per_problem=2), "--pairs-per-problem only applies"),
    (dict(layout="preference", pairs_per_problem=0), "must be >= 1"),
    (dict(layout="sft", chat_prompt="math-cot"), "--chat-prompt gives chat turns"),
    (dict(layout="sft", style="conversational", prompt_template="Q: {question}"),
     "--prompt-template is a plain-text prompt"),
    (dict(layout="sft", prompt_template="Q:"), "must contain {question}"),
    (dict(layout="sft", prompt_template="{subject}: {question}"), "cannot be filled in"),
    (dict(layout="sft", style="conversational", chat_prompt="no-such-template"),
     "neither a built-in template"),
])
def test_bad_layout_options_rejected_before_work(graded_wh, tmp_path, opts, message):
    with pytest.raises(CuratorError, match=message.replace("{", r"\{").replace("(", r"\(")
                       .replace("'", "'")):
        export_training(graded_wh, tmp_path / "x", ExportOptions(**opts), record=False)
    assert not (tmp_path / "x").exists()


def test_a_layout_without_rows_is_refused(graded_wh, tmp_path):
    with pytest.raises(CuratorError, match="no problem of the selection has both"):
        export_training(graded_wh, tmp_path / "x", ExportOptions(
            layout="preference", max_negatives=0), record=False)
    with pytest.raises(CuratorError, match="has no positive rationale"):
        export_training(graded_wh, tmp_path / "x", ExportOptions(
            layout="sft", max_positives=0), record=False)
    assert not (tmp_path / "x").exists()


def test_cli_layout_options(cli, fixture_db, tmp_path):
    res = cli("export", tmp_path / "p", "--db", fixture_db, "--splits", SPLITS,
              "--layout", "preference", "--pairs-per-problem", "2", "--style", "conversational")
    out = " ".join(res.output.split())
    assert "layout preference (conversational) for trl.DPOTrainer" in out
    assert "no preference pair" in out
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["layout"]["pairing"]["pairs_per_problem"] == 2
    res = cli("export", tmp_path / "q", "--db", fixture_db, "--style", "messages", ok=False)
    assert res.exit_code != 0 and "applies only to --layout" in str(res.exception)


def test_layouts_do_not_import_torch():
    """curator builds the prompts without distill's training stack."""
    import subprocess
    import sys
    code = ("import sys, curator.exporting.layouts, curator.exporting.training, "
            "curator.student_prompts, distill.data; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("layout", ["sft", "preference", "unpaired"])
def test_distill_names_a_trl_layout_export_instead_of_a_missing_field(layouts, layout):
    """distill reads the default layout; a `--layout` export given to it says so (and how
    to get the right one) rather than 'missing field ...'."""
    from curator.errors import InputError
    from distill.data import read_export
    for fmt in ("jsonl", "parquet"):
        with pytest.raises(InputError, match=rf"--layout {layout}.*export again without --layout"):
            read_export(layouts[layout, fmt], "train")
