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

ROOT = Path(__file__).resolve().parents[2]
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
     '[methods]\nrun = ["sft", "dpo"]\n', "unknown method 'dpo'"),
    ('[model]\nbase = "m"\n[data]\ntrain = "t"\n', "at least one \\[\\[eval\\]\\]"),
    ('[model]\nbase = "m"\n[data]\ntrain = "t"\n[[eval]]\nname = "a"\ndata = "d"\n'
     '[evaluate]\nsamplez = 3\n', "unknown key\\(s\\) \\['samplez'\\] in \\[evaluate\\]"),
    ('[model]\nbase = "m"\n[data]\ntrain = "t"\n[[eval]]\nname = "a"\ndata = "d"\n'
     '[train.dpo]\nbeta = 1\n', "\\[train.dpo\\]: no such method"),
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
