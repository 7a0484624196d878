"""A small, real warehouse for the export tests, built with SQL through Warehouse.write().

Problems: the 200 MATH train problems of curator/demo plus its 70 test problems.
Rationales: the real GPT-4 TDG rationales for the 200 (curator/demo) and the real
GPT-3.5-turbo ones for the first 60 (tests/exporting/fixtures), 2,080 in all. Verdicts come
from a deliberately simple boxed-answer comparison (the real grader is another module):
what matters here is that they are realistic mixes of positives and negatives. A few
rows are turned into the awkward cases an export must handle: truncated, errored and
duplicate rationales, and an older grader version that the export must ignore.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest

from curator.ids import problem_id, question_key, sample_id, stable_id
from curator.latex import last_boxed
from curator.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "curator" / "demo"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = ROOT / ".." / "shared" / "data"

CURRENT_GRADER = "fixture-boxed-2"
OLD_GRADER = "fixture-boxed-1"
TRUNCATED = 5     # samples marked finish_reason 'length'
ERRORED = 3       # failed requests: no completion, error_class set
DUPLICATES = 4    # extra copies of existing rationales under a new sample index


def _norm(ans: str | None) -> str | None:
    if ans is None:
        return None
    a = ans.strip().rstrip(".")
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""),
                     ("\\right", ""), ("\\!", ""), ("^\\circ", ""), ("^{\\circ}", ""),
                     ("$", ""), ("\\$", "")):
        a = a.replace(old, new)
    return re.sub(r"\s+", "", a)


def fixture_grade(completion: str | None, reference: str) -> tuple[bool, str, str | None]:
    if completion is None:
        return False, "no_answer", None
    got = last_boxed(completion)
    if got is None:
        m = re.search(r"answer is\s*:?\s*\$?([^\n$]+?)\$?\.?\s*$", completion.strip())
        got = m.group(1) if m else None
    if got is None:
        return False, "no_answer", None
    ok = _norm(got) == _norm(reference)
    return ok, "correct" if ok else "wrong", got


def _math_problems(path: Path, split: str) -> list[dict]:
    out = []
    for i, line in enumerate(path.read_text().splitlines()):
        o = json.loads(line)
        source_id = o["unique_id"].split("/", 1)[1].removesuffix(".json")
        out.append({
            "problem_id": problem_id("math", split, source_id), "dataset": "math",
            "split": split, "subject": o["type"], "level": int(o["level"].split()[-1]),
            "question": o["problem"], "question_key": question_key(o["problem"]),
            "reference_solution": o["solution"], "reference_answer": last_boxed(o["solution"]),
            "source_id": source_id, "source_path": str(path), "source_position": i,
            "metadata": json.dumps({"level": o["level"]}),
        })
    return out


def _tdg_samples(path: Path, model: str, by_key: dict[str, dict]) -> tuple[dict, list[dict]]:
    run_id = stable_id("r", "import", model, path.name)
    run = {"run_id": run_id, "kind": "import", "provider": "openai", "model": model,
           "source": str(path)}
    samples = []
    with gzip.open(path, "rt") as f:
        for line in f:
            o = json.loads(line)
            prob = by_key[question_key(o["question"])]
            for k, text in enumerate(o["generated_answer"]):
                samples.append({
                    "sample_id": sample_id(run_id, prob["problem_id"], k), "run_id": run_id,
                    "problem_id": prob["problem_id"], "sample_index": k, "completion": text,
                    "finish_reason": "stop",
                    # the 3.5 run records usage, the 4 run (an import) does not
                    "prompt_tokens": len(o["question"]) // 4 if "3.5" in model else None,
                    "completion_tokens": len(text) // 4 if "3.5" in model else None,
                    "cost_usd": len(text) / 4 * 2e-6 if "3.5" in model else None,
                    "error_class": None, "error": None,
                })
    return run, samples


def build_warehouse(path: Path) -> Warehouse:
    """Create the fixture warehouse at ``path`` (see the module docstring)."""
    problems = (_math_problems(DEMO / "math_train_200.jsonl", "train")
                + _math_problems(DEMO / "math_test_70.jsonl", "test"))
    by_key = {p["question_key"]: p for p in problems if p["split"] == "train"}
    run4, s4 = _tdg_samples(DEMO / "tdg_gpt4_200.jsonl.gz", "gpt-4", by_key)
    run35, s35 = _tdg_samples(FIXTURES / "tdg_gpt35_60.jsonl.gz", "gpt-3.5-turbo", by_key)
    samples = s4 + s35
    # Awkward cases, at fixed positions so the fixture is the same every time.
    for s in samples[10:10 + TRUNCATED]:
        s["finish_reason"] = "length"
    for s in samples[100:100 + ERRORED]:
        s.update(completion=None, finish_reason=None, error_class="server",
                 error="HTTP 500 from provider")
    for src in (samples[200], samples[300], samples[1700], samples[1800])[:DUPLICATES]:
        dup = dict(src, sample_index=8,
                   sample_id=sample_id(src["run_id"], src["problem_id"], 8))
        samples.append(dup)
    ref = {p["problem_id"]: p["reference_answer"] for p in problems}
    grades = []
    for s in samples:
        ok, status, got = fixture_grade(s["completion"], ref[s["problem_id"]])
        grades.append({"sample_id": s["sample_id"], "grader_version": CURRENT_GRADER,
                       "correct": ok, "status": status, "extracted": got,
                       "normalized": _norm(got), "rule": "fixture"})
        # The old grader thought the opposite: an export must not use its verdicts.
        grades.append({"sample_id": s["sample_id"], "grader_version": OLD_GRADER,
                       "correct": not ok, "status": "wrong" if ok else "correct",
                       "extracted": got, "normalized": _norm(got), "rule": "old"})
    wh = Warehouse(path)
    wh.init()
    with wh.write() as con:
        con.register("p_in", pl.DataFrame(problems, infer_schema_length=None))
        con.execute("""INSERT INTO problems (problem_id, dataset, split, subject, level,
                       question, question_key, reference_solution, reference_answer,
                       source_id, source_path, source_position, metadata)
                       SELECT problem_id, dataset, split, subject, level, question,
                       question_key, reference_solution, reference_answer, source_id,
                       source_path, source_position, metadata::JSON FROM p_in""")
        con.register("r_in", pl.DataFrame([run4, run35]))
        con.execute("INSERT INTO runs (run_id, kind, provider, model, source) "
                    "SELECT run_id, kind, provider, model, source FROM r_in")
        con.register("s_in", pl.DataFrame(samples, infer_schema_length=None))
        con.execute("""INSERT INTO samples (sample_id, run_id, problem_id, sample_index,
                       completion, finish_reason, prompt_tokens, completion_tokens, cost_usd,
                       error_class, error)
                       SELECT sample_id, run_id, problem_id, sample_index, completion,
                       finish_reason, prompt_tokens, completion_tokens, cost_usd, error_class,
                       error FROM s_in""")
        con.execute("INSERT INTO grader_versions VALUES (?, TIMESTAMP '2024-01-01'), "
                    "(?, TIMESTAMP '2025-01-01')", [OLD_GRADER, CURRENT_GRADER])
        con.register("g_in", pl.DataFrame(grades, infer_schema_length=None))
        con.execute("""INSERT INTO grades (sample_id, grader_version, correct, status,
                       extracted, normalized, rule)
                       SELECT sample_id, grader_version, correct, status, extracted,
                       normalized, rule FROM g_in""")
    return wh


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory) -> Path:
    """Path of a fixture warehouse built once per test session (copy it to modify)."""
    path = tmp_path_factory.mktemp("wh") / "curator.duckdb"
    build_warehouse(path)
    return path


@pytest.fixture
def graded_wh(fixture_db) -> Warehouse:
    """The shared fixture warehouse (exports record themselves in it)."""
    return Warehouse(fixture_db)


@pytest.fixture
def fresh_graded_wh(fixture_db, tmp_path) -> Warehouse:
    """A private copy of the fixture warehouse, for tests that change it."""
    import shutil
    dst = tmp_path / "copy.duckdb"
    shutil.copy(fixture_db, dst)
    return Warehouse(dst)
