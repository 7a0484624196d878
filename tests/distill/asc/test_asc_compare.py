"""`distill compare`: config checks, the whole chain on the tiny model (CoT KD, NAT,
NAT+NCE, the ranker and NAT+NCE+ASC), and resuming without redoing finished stages."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.errors import CuratorError
from distill.compare import compare, load_config, read_marker

ROOT = Path(__file__).resolve().parents[3]
# NCE (distill/nce.py) is another engineer's module: without it the chain stops at NAT.
HAVE_NCE = importlib.util.find_spec("distill.nce") is not None
METHODS = ("sft", "nat", "nat+nce", "nat+nce+asc") if HAVE_NCE else ("sft", "nat")
STUDENTS = ("sft", "nat", "nce") if HAVE_NCE else ("sft", "nat")


def write_config(path: Path, tiny: Path, export: Path, evalf: Path, out: Path,
                 samples: int = 2, methods=METHODS) -> Path:
    path.write_text(f"""
name = "test comparison"
out = "{out}"

[model]
base = "{tiny}"

[[prepare]]
name = "count"
run = ["python", "-c", "open('{{out}}/prepare-count', 'a').write('x')"]

[data]
train = "{export}"

[[eval]]
name = "MATH"
data = "{evalf}"
limit = 2

[methods]
run = {json.dumps(list(methods))}

[train]
max_steps = 2
batch_size = 4
lora_r = 4
lora_alpha = 8
max_length = 128
cpu = true

[train.nat]
gate_width = 16

[train.nce]
precompute_beta = true

[ranker]
max_steps = 2
holdout = 0.25

[evaluate]
samples = {samples}
max_new_tokens = 6
batch_size = 16
""")
    return path


def statuses(res) -> dict[str, str]:
    return {o.stage: o.status for o in res.outcomes}


def test_compare_runs_every_stage_once_and_resumes(tiny, export_file, eval_file, tmp_path,
                                                   monkeypatch):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny, export_file, eval_file, out)
    evals = [f"eval:MATH:{s}" for s in STUDENTS]
    stages = ["prepare:count"] + [f"train:{s}" for s in STUDENTS] + \
        (["train:ranker"] if HAVE_NCE else []) + evals

    first = compare(cfg, echo=lambda s: None)
    assert statuses(first) == {s: "ran" for s in stages}
    table = first.table["sets"]["MATH"]["rows"]
    assert list(table) == list(METHODS)
    assert table["sft"]["rule"] == "greedy"
    md = (out / "comparison.md").read_text()
    assert "| CoT KD (greedy)" in md and "| NAT (greedy)" in md
    assert (out / "comparison.png").is_file() and (out / "comparison.json").is_file()
    if HAVE_NCE:
        # NAT+NCE and NAT+NCE+ASC are two rules on the same samples
        assert table["nat+nce+asc"]["rule"] == "asc:s"
        assert table["nat+nce+asc"]["rules"] == table["nat+nce"]["rules"]
        assert "NAT+NCE (greedy)" in md and "NAT+NCE+ASC (ASC w=s)" in md
        assert (out / "students" / "nce" / "adapter_model.safetensors").is_file()
        assert (out / "ranker" / "ranker.json").is_file()
    markers = {s: read_marker(out, s) for s in stages}

    # the second invocation redoes nothing and writes the same table
    second = compare(cfg, echo=lambda s: None)
    assert statuses(second) == {s: "skipped" for s in stages}
    assert second.table == first.table
    assert (out / "prepare-count").read_text() == "x"
    assert {s: read_marker(out, s) for s in stages} == markers
    log = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert len({r["invocation"] for r in log}) == 2
    assert [r["status"] for r in log] == ["ran"] * len(stages) + ["skipped"] * len(stages)

    # more samples per problem: only the evaluations run, and they keep their samples
    write_config(tmp_path / "c.toml", tiny, export_file, eval_file, out, samples=3)
    third = compare(cfg, echo=lambda s: None)
    assert [s for s, st in statuses(third).items() if st == "ran"] == evals
    for s in STUDENTS:
        info = read_marker(out, f"eval:MATH:{s}")["info"]
        assert info["throughput"]["new_rationales"] == 2      # one more for each of 2 problems

    # an interruption during an evaluation: finished stages stay finished
    import distill.evaluate as E
    real = E.evaluate
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    for s in ("sft", "nat"):
        (out / "stages" / f"eval__MATH__{s}.json").unlink()
    monkeypatch.setattr(E, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        compare(cfg, echo=lambda s: None)
    monkeypatch.setattr(E, "evaluate", real)
    assert read_marker(out, "eval:MATH:sft") is not None
    assert read_marker(out, "eval:MATH:nat") is None
    last = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert (last["stage"], last["status"]) == ("eval:MATH:nat", "failed")
    fourth = compare(cfg, echo=lambda s: None)
    assert [s for s, st in statuses(fourth).items() if st == "ran"] == ["eval:MATH:nat"]
    assert read_marker(out, "eval:MATH:nat")["info"]["throughput"]["new_rationales"] == 0

    # --redo retrains a student and re-evaluates exactly what depends on it
    fifth = compare(cfg, redo=("train:sft",), echo=lambda s: None)
    assert [s for s, st in statuses(fifth).items() if st == "ran"] == ["train:sft", "eval:MATH:sft"]

    # a dry run runs nothing
    dry = compare(cfg, dry_run=True, redo=("eval:*",), echo=lambda s: None)
    assert {s for s, st in statuses(dry).items() if st == "would run"} == set(evals)
    assert dry.table is None

    # a shared training knob changes every trained stage, the ranker included, and so
    # every evaluation; the prepare step stays done
    cfg.write_text(cfg.read_text().replace("lora_alpha = 8", "lora_alpha = 8\nlr = 0.002"))
    dry = compare(cfg, dry_run=True, echo=lambda s: None)
    assert {s for s, st in statuses(dry).items() if st == "would run"} == set(stages[1:])


def test_cli_and_foreign_directories(tiny, export_file, eval_file, tmp_path):
    from distill.cli import app
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.json.toml", tiny, export_file, eval_file, out,
                       methods=("sft",))
    # a directory compare did not write is never deleted
    (out / "students" / "sft").mkdir(parents=True)
    (out / "students" / "sft" / "precious.txt").write_text("keep me")
    res = CliRunner().invoke(app, ["compare", "--config", str(cfg)])
    assert res.exit_code != 0 and "was not written by `distill compare`" in str(res.exception)
    assert (out / "students" / "sft" / "precious.txt").read_text() == "keep me"
    shutil.rmtree(out / "students")
    res = CliRunner().invoke(app, ["compare", "--config", str(cfg)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "| CoT KD (greedy) |" in res.output and "stages ran" in res.output


@pytest.mark.parametrize("text, message", [
    ('out = "o"\n[model]\nbase = "m"\n[data]\ntrain = "t"\n[[eval]]\nname = "a"\ndata = "d"\n'
     '[methods]\nrun = ["sft", "ppo"]\n', "unknown method 'ppo'"),
    ('[model]\nbase = "m"\n[data]\ntrain = "t"\n', "at least one \\[\\[eval\\]\\]"),
    ('[model]\nbase = "m"\n[data]\ntrain = "t"\n[[eval]]\nname = "a"\ndata = "d"\n'
     '[evaluate]\nsamplez = 3\n', "unknown key\\(s\\) \\['samplez'\\] in \\[evaluate\\]"),
    ('[model]\nbase = "m"\n[data]\ntrain = "t"\n[[eval]]\nname = "a"\ndata = "d"\n'
     '[train.ppo]\nbeta = 1\n', "\\[train.ppo\\]: no such method"),
    ('wrong = 1\n', "unknown key\\(s\\) \\['wrong'\\]"),
    ('[model\nbase = "m"\n', "not valid TOML"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(CuratorError, match=message) as err:
        load_config(p)
    assert str(p) in str(err.value)


def test_unknown_training_knob_is_refused(tiny, export_file, eval_file, tmp_path):
    cfg = write_config(tmp_path / "c.toml", tiny, export_file, eval_file, tmp_path / "o",
                       methods=("sft",))
    cfg.write_text(cfg.read_text().replace("lora_r = 4", "lora_rank = 4"))
    with pytest.raises(CuratorError, match="unknown training setting 'lora_rank'"):
        compare(cfg, echo=lambda s: None)


def test_yaml_and_json_configs_read_the_same(tmp_path):
    import yaml
    data = {"model": {"base": "m"}, "data": {"train": "{out}/t.jsonl"}, "out": "o",
            "eval": [{"name": "a", "data": "{config_dir}/d.jsonl"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    a, b = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.json")
    assert a.train_data == b.train_data == Path("o/t.jsonl")
    assert a.evals == b.evals == [{"name": "a", "data": f"{tmp_path}/d.jsonl"}]
    assert a.methods == ["sft", "mix", "nt", "ul", "cl", "nat", "nat+nce", "nat+nce+asc"]


def test_the_tiny_example_config_is_valid():
    cfg = load_config(ROOT / "distill" / "configs" / "compare-tiny.toml", out="/tmp/x")
    from distill.compare import plan
    names = [s.name for s in plan(cfg, echo=lambda s: None)]
    assert names[:8] == [f"prepare:{p['name']}" for p in cfg.prepare]
    assert "model:init-tiny" in names and "train:ranker" in names
    for m in ("sft", "mix", "nt", "ul", "cl", "nat", "nce"):
        assert f"train:{m}" in names and f"eval:MATH:{m}" in names and f"eval:GSM8K:{m}" in names
    for p in cfg.prepare:
        for arg in p["run"]:
            if arg.endswith((".jsonl", ".gz")) and "{out}" not in arg and "/tmp/x" not in arg:
                assert Path(arg).is_file(), arg


@pytest.mark.slow
def test_the_tiny_example_config_runs(tmp_path):
    """The README's main job: the whole comparison on the demo data (a few minutes)."""
    res = compare(ROOT / "distill" / "configs" / "compare-tiny.toml", out=tmp_path / "tiny",
                  echo=lambda s: None)
    assert all(o.status == "ran" for o in res.outcomes)
    rows = res.table["sets"]["MATH"]["rows"]
    assert all(rows[m] is not None for m in res.table["methods"])
    again = compare(ROOT / "distill" / "configs" / "compare-tiny.toml", out=tmp_path / "tiny",
                    echo=lambda s: None)
    assert all(o.status == "skipped" for o in again.outcomes)


# -- seeds: per-seed stages, aggregation over seeds, base and teacher rows ------------------------

def test_t_quantile_and_interval_on_given_numbers():
    from distill.compare import interval, paired, t_quantile
    # two-sided 95% critical values of Student's t (any table)
    for df, q in [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042)]:
        assert t_quantile(0.95, df) == pytest.approx(q, abs=5e-4)
    iv = interval([0.2, 0.4, 0.6])
    assert iv["mean"] == pytest.approx(0.4) and iv["sd"] == pytest.approx(0.2)
    assert iv["half"] == pytest.approx(4.3027 * 0.2 / 3 ** 0.5, abs=1e-4)
    assert (iv["low"], iv["high"]) == pytest.approx((0.4 - iv["half"], 0.4 + iv["half"]))
    one = interval([0.25])
    assert one["mean"] == 0.25 and one["half"] is None and one["low"] is None
    assert interval([]) is None and interval([None]) is None
    # paired differences: seed by seed, not the difference of the means' intervals
    d = paired({0: 0.5, 1: 0.7, 2: 0.6}, {0: 0.4, 1: 0.5, 2: 0.6})
    assert d["mean"] == pytest.approx(0.1) and d["sd"] == pytest.approx(0.1)
    assert d["half"] == pytest.approx(4.3027 * 0.1 / 3 ** 0.5, abs=1e-4)
    # a seed-independent row (the base, evaluated once) is compared with every seed
    b = paired({None: 0.1}, {0: 0.4, 1: 0.5})
    assert b["mean"] == pytest.approx(-0.35) and b["n"] == 2
    assert b["half"] == pytest.approx(12.7062 * (0.05 * 2 ** 0.5) / 2 ** 0.5, abs=1e-3)
    # only the seeds both sides have count
    assert paired({0: 0.5, 1: 0.9}, {0: 0.3})["mean"] == pytest.approx(0.2)


def _report(avg_all: float, levels: dict[str, float]) -> dict:
    """A minimal `distill eval` report.json: one rule, one subject, per-level accuracy."""
    return {"rules": ["greedy"], "problems": 10, "samples": 1,
            "counts": {"by_subject": {"Algebra": 10}, "by_level": {k: 5 for k in levels}},
            "accuracy": {"greedy": {"all": avg_all, "avg": avg_all,
                                    "by_subject": {"Algebra": avg_all}, "by_level": levels}}}


def test_aggregate_over_seeds_on_given_reports(tmp_path):
    from distill.compare import CompareConfig, aggregate, markdown_aggregate
    cfg = CompareConfig(path=tmp_path / "c.toml", out=tmp_path, base="m", tiny=None,
                        dtype="float32", prompt={}, train_data=tmp_path / "t.jsonl",
                        validation=None, evals=[{"name": "MATH", "data": "e.jsonl"}],
                        methods=["base", "sft", "nat"], train={}, per_method={}, ranker={},
                        evaluate={}, rule="greedy", asc_rule="asc:s", seeds=[0, 1, 2])
    reports = {"MATH": {
        "base": {None: _report(0.1, {"1": 0.2, "2": 0.0})},
        "sft": {0: _report(0.4, {"1": 0.6, "2": 0.2}), 1: _report(0.5, {"1": 0.8, "2": 0.2}),
                2: _report(0.6, {"1": 0.8, "2": 0.4})},
        "nat": {0: _report(0.5, {"1": 0.8, "2": 0.2}), 1: _report(0.7, {"1": 0.8, "2": 0.6}),
                2: _report(0.6, {"1": 1.0, "2": 0.2})}}}
    t = aggregate(cfg, reports)
    rows = t["sets"]["MATH"]["rows"]
    assert t["sets"]["MATH"]["levels"] == ["1", "2"] and t["reference"] == "sft"
    assert rows["sft"]["all"]["mean"] == pytest.approx(0.5)
    assert rows["sft"]["all"]["half"] == pytest.approx(4.3027 * 0.1 / 3 ** 0.5, abs=1e-4)
    assert rows["nat"]["by_level"]["1"]["mean"] == pytest.approx(13 / 15)
    assert rows["base"]["all"] == {"mean": 0.1, "n": 1, "sd": None, "half": None,
                                   "low": None, "high": None}
    # NAT - KD per seed: 0.1, 0.2, 0.0 overall; level 2: 0.0, 0.4, -0.2
    d = rows["nat"]["vs_reference"]
    assert d["all"]["mean"] == pytest.approx(0.1) and d["all"]["sd"] == pytest.approx(0.1)
    assert d["by_level"]["2"]["mean"] == pytest.approx(0.2 / 3)
    assert d["by_level"]["2"]["sd"] == pytest.approx(((0.2 / 3) ** 2 + (0.4 - 0.2 / 3) ** 2
                                                      + (0.2 + 0.2 / 3) ** 2) ** 0.5 / 2 ** 0.5)
    assert rows["base"]["vs_reference"]["all"]["mean"] == pytest.approx(-0.4)
    assert rows["sft"]["vs_reference"] is None
    assert rows["nat"]["per_seed"]["1"]["all"] == 0.7
    assert list(rows["base"]["per_seed"]) == ["once"]
    md = markdown_aggregate(t)
    assert "| NAT (greedy) | 3 | 60.00 ± 24.84 | 60.00 ± 24.84 | +10.00 ± 24.84 | +10.00 ± 24.84 |" in md
    assert "| base model (no training) (greedy) | 1 | 10.00 | 10.00 |" in md
    assert "| NAT | 50.00 | 70.00 | 60.00 |" in md      # every seed's Avg
    assert "| base model (no training) | 10.00 | 10.00 | 10.00 |" in md
    # a seed whose evaluation is missing counts as absent, not as zero
    del reports["MATH"]["nat"][2]
    t = aggregate(cfg, reports)
    assert t["sets"]["MATH"]["rows"]["nat"]["all"]["n"] == 2
    assert t["sets"]["MATH"]["rows"]["nat"]["vs_reference"]["all"]["mean"] == pytest.approx(0.15)


def test_seeds_from_config_and_cli(tmp_path, tiny, export_file, eval_file):
    from distill.compare import plan
    cfg_path = write_config(tmp_path / "c.toml", tiny, export_file, eval_file, tmp_path / "o",
                            methods=("base", "sft", "nat+nce", "nat+nce+asc"))
    cfg_path.write_text("seeds = [0, 1, 2]\n" + cfg_path.read_text())
    cfg = load_config(cfg_path)
    assert cfg.seeds == [0, 1, 2] and load_config(cfg_path, seeds="5,7").seeds == [5, 7]
    stages = {s.name: s for s in plan(cfg, echo=lambda s: None)}
    per_seed = [f"{k}@s{x}" for x in (0, 1, 2) for k in
                ("train:sft", "train:nat", "train:nce", "eval:MATH:sft", "eval:MATH:nce")]
    assert set(stages) == {"prepare:count", "train:ranker", "eval:MATH:base", *per_seed}
    assert stages["train:nce@s1"].deps[-1] == "train:nat@s1"
    assert stages["train:sft@s2"].dir == tmp_path / "o" / "students" / "sft" / "seed-2"
    assert stages["eval:MATH:base"].dir == tmp_path / "o" / "eval" / "MATH" / "base"
    assert stages["train:sft@s2"].params()["knobs"]["seed"] == 2
    assert stages["eval:MATH:sft@s1"].params()["settings"]["seed"] == 1
    # one seed keeps today's layout, names and (without `seeds`) fingerprints
    one = {s.name: s for s in plan(load_config(cfg_path, seeds="3"), echo=lambda s: None)}
    assert "train:sft" in one and one["train:sft"].dir == tmp_path / "o" / "students" / "sft"
    assert one["train:sft"].params()["knobs"]["seed"] == 3
    cfg_path.write_text(cfg_path.read_text().replace("seeds = [0, 1, 2]\n", ""))
    plain = {s.name: s for s in plan(load_config(cfg_path), echo=lambda s: None)}
    assert "seed" not in plain["train:sft"].params()["knobs"]


@pytest.mark.parametrize("seeds, message", [
    ("[]", "non-empty list"), ("[0, 0]", "repeat a seed"), ('"0,1"', "non-empty list"),
    ("[-1]", "non-empty list"), ("[1.5]", "non-empty list")])
def test_bad_seeds_are_refused(tmp_path, seeds, message):
    p = tmp_path / "bad.toml"
    p.write_text(f'seeds = {seeds}\n[model]\nbase = "m"\n[data]\ntrain = "t"\n'
                 f'[[eval]]\nname = "a"\ndata = "d"\n')
    with pytest.raises(CuratorError, match=message) as err:
        load_config(p)
    assert str(p) in str(err.value)
    with pytest.raises(CuratorError, match="--seeds: seeds must be whole numbers"):
        load_config(p, seeds="0,x")


def test_compare_over_seeds_runs_per_seed_stages_once_and_resumes(tiny, export_file, eval_file,
                                                                  tmp_path):
    from distill.cli import app
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", tiny, export_file, eval_file, out,
                       methods=("base", "sft"), samples=1)
    cfg.write_text(cfg.read_text().replace(f'base = "{tiny}"', f'base = "{tiny}"\n'
                                           'prompt_template = "Q: {question}\\nA:"')
                   + '\n[teacher]\nmodel = "gpt-4"\n')
    res = CliRunner().invoke(app, ["compare", "--config", str(cfg), "--seeds", "0,1"])
    assert res.exit_code == 0, (res.output, res.exception)
    log = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["stage"] for r in log if r["status"] == "ran") == sorted(
        ["prepare:count", "eval:MATH:base", "train:sft@s0", "train:sft@s1",
         "eval:MATH:sft@s0", "eval:MATH:sft@s1"])
    assert (out / "prepare-count").read_text() == "x"          # seed-independent: once
    # the untrained base is prompted like the students
    fmts = [json.loads((out / "eval" / "MATH" / d / "eval.json").read_text())["prompt_format"]
            for d in ("base", "sft/seed-0")]
    assert fmts[0] == fmts[1] and "Q: {question}" in json.dumps(fmts[0])
    for s in (0, 1):
        assert (out / "students" / "sft" / f"seed-{s}" / "adapter_model.safetensors").is_file()
        assert (out / "eval" / "MATH" / "sft" / f"seed-{s}" / "report.json").is_file()
        args = json.loads((out / "students" / "sft" / f"seed-{s}" / "training_args.json").read_text())
        assert args["seed"] == s                                 # the seed reached the trainer
    t = json.loads((out / "comparison.json").read_text())
    assert t["seeds"] == [0, 1]
    sft = t["sets"]["MATH"]["rows"]["sft"]
    per = [json.loads((out / "eval" / "MATH" / "sft" / f"seed-{s}" / "report.json").read_text())
           ["accuracy"]["greedy"]["all"] for s in (0, 1)]
    assert sft["all"]["mean"] == pytest.approx(sum(per) / 2) and sft["all"]["n"] == 2
    base = json.loads((out / "eval" / "MATH" / "base" / "report.json").read_text())
    assert t["sets"]["MATH"]["rows"]["base"]["vs_reference"]["all"]["mean"] == pytest.approx(
        base["accuracy"]["greedy"]["all"] - sum(per) / 2)
    assert t["teacher"]["train"]["pass_rate"] == 0.5        # 24 of the fixture's 48 positive
    assert "over 2 seeds" in res.output and "| CoT KD (greedy) | 2 |" in res.output
    assert "teacher gpt-4" in res.output
    # re-running skips everything and writes the same table
    again = compare(cfg, seeds=[0, 1], echo=lambda s: None)
    assert all(o.status == "skipped" for o in again.outcomes) and len(again.outcomes) == 6
    assert json.loads((out / "comparison.json").read_text()) == t
    # a third seed trains and evaluates that seed only
    third = compare(cfg, seeds=[0, 1, 2], dry_run=True, echo=lambda s: None)
    assert {o.stage for o in third.outcomes if o.status == "would run"} == {
        "train:sft@s2", "eval:MATH:sft@s2"}


def test_teacher_accuracy_on_an_eval_set_from_the_warehouse(cli, db_path, tmp_path, export_file):
    """[teacher] db: the teacher's graded samples on the eval set's problems (per problem,
    the mean over its samples), beside its pass rate on the training export."""
    from distill.compare import markdown_table, table, teacher_stats
    qs = [("What is $2+3$?", "5", 1, [r"\boxed{5}", r"so \boxed{5}"]),
          (r"What is $4 \cdot 3$?", "12", 2, [r"\boxed{12}", r"\boxed{7}"]),
          ("What is $10-9$?", "1", 2, [r"\boxed{3}", r"\boxed{2}"])]
    recs = [{"question": q, "reference_answer": a, "level": lv, "subject": "Prealgebra",
             "dataset": "math", "completion": c, "model": "gpt-4", "sample_index": i}
            for q, a, lv, cs in qs for i, c in enumerate(cs)]
    src = tmp_path / "teacher.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cli("import", "jsonl", src, "--split", "test")
    cli("grade", "-q")
    cli("export-eval", tmp_path / "eval", "--dataset", "math", "--split", "test")
    cfg_path = write_config(tmp_path / "c.toml", tmp_path / "m", export_file,
                            tmp_path / "eval" / "test.jsonl", tmp_path / "o", methods=("sft",))
    cfg_path.write_text(cfg_path.read_text().replace("limit = 2\n", "")
                        + f'\n[teacher]\nmodel = "gpt-4"\ndb = "{db_path}"\n')
    cfg = load_config(cfg_path)
    t = teacher_stats(cfg)
    s = t["sets"]["MATH"]
    assert (s["problems"], s["of"], s["samples"]) == (3, 3, 6)
    assert s["all"] == pytest.approx(0.5) and s["by_level"] == {"1": 1.0, "2": 0.25}
    assert t["train"]["rationales"] == 48 and t["train"]["pass_rate"] == 0.5
    md = markdown_table(table(cfg, reports={"MATH": {}}))
    assert "| teacher gpt-4 (mean over its 6 samples) | 50.00 | 50.00 | 50.00 |" in md
    assert "On MATH: 50.00% (All)" in md
    # a teacher the export does not know is refused, naming the models it has
    cfg_path.write_text(cfg_path.read_text().replace('model = "gpt-4"', 'model = "gpt-5"'))
    with pytest.raises(CuratorError, match="'gpt-5' has no rationale in .*: gpt-4"):
        teacher_stats(load_config(cfg_path))


@pytest.mark.parametrize("name", ["smollm2-tdg.toml", "smollm2-tdg-gpu.toml"])
def test_the_smollm2_configs_are_valid(name, tmp_path):
    """Both SmolLM2 configs parse, convert the wheel's GGUF before training, and every
    training knob is one the trainers accept (bf16 only where CUDA is)."""
    import torch

    from distill.compare import BASELINES, plan, training_config
    from distill.asc.ranker import RankerConfig
    from distill.baselines import TRAINERS
    from distill.nat.trainer import NATConfig
    cfg = load_config(ROOT / "distill" / "configs" / name, out=tmp_path)
    names = [s.name for s in plan(cfg, echo=lambda s: None)]
    assert names[len(cfg.prepare)] == "model:convert-gguf" and cfg.gguf == "smollm2"
    assert cfg.base == f"{tmp_path}/smollm2" and "base" in cfg.methods
    assert cfg.teacher["model"] == "gpt-4"
    cpu_only = {"bf16", "cpu"} if not torch.cuda.is_available() else set()
    classes = {**{m: TRAINERS[m][1] for m in BASELINES}, "nat": NATConfig}
    if HAVE_NCE:
        from distill.nce import NCEConfig
        classes["nce"] = NCEConfig
    for m, cls in classes.items():
        knobs = {k: v for k, v in {**cfg.train, **cfg.per_method.get(m, {})}.items()
                 if k not in cpu_only}
        training_config(cls, tmp_path / m, knobs, name)
    training_config(RankerConfig, tmp_path / "r", {k: v for k, v in {**cfg.train, **cfg.ranker}.items()
                                                  if k not in cpu_only}, name)
    for p in cfg.prepare:            # the data it reads is ../shared/data's
        for arg in p["run"]:
            if "shared/data" in arg and (ROOT.parent / "shared" / "data").is_dir():
                assert Path(arg).exists(), arg
