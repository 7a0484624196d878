"""Grading benchmark: our grader against math-verify and the Hendrycks string normaliser
on the 120,000 TDG rationales (MATH train, GPT-3.5-turbo and GPT-4, 8 each).

Three graders, one run:

* **ours**: ``grade_pending`` on a fresh copy of an ungraded warehouse (what
  ``curator grade`` runs: extraction and cheap pairs in process, each distinct pair
  once, sympy pairs in killable workers, verdicts committed every second), timed in a
  fresh process; and ``grade()`` called once per sample, in this process, on the
  subsample below (no pair deduplication across samples; its in-process LRU caches and
  its one guard worker for sympy are on, as in any user's loop).
* **math-verify** (PyPI ``math-verify``, a dev dependency): ``verify(parse(gold),
  parse(rationale))`` with its defaults (its own signal-based 5 s limits on parsing and
  on verifying), gold written as ``\\boxed{reference}``. It runs in one worker process
  of ours with a hard wall-clock limit per sample (``--mv-timeout``): a sample past it
  is counted as a hang, the worker is killed and replaced, and the run goes on.
* **hendrycks**: ``is_equiv`` on the last ``\\boxed{}`` of the rationale, as in
  hendrycks/math ``modeling/math_equivalence.py`` and ``dataset/util.py`` (reproduced
  below, bugs included): the normaliser the paper's code used, the anchor for
  positives/negatives. Pure string work, run on all 120,000.

math-verify manages about 100-125 samples/s here, so it runs on a fixed random subsample
(``--sample``, seeded); the throughput ratio compares both graders on that same
subsample, one process each at a time. Agreement is reported on the subsample (all
three) and, for ours vs hendrycks, on all 120,000.

    .venv/bin/python bench/bench_grade.py --db /tmp/tdg_ungraded.duckdb      # copied, not changed
    .venv/bin/python bench/bench_grade.py                                    # builds the warehouse
    .venv/bin/python bench/bench_grade.py --reuse --write                    # re-render saved results

Raw per-sample verdicts go to ``.bench-out/bench_grade/`` (``--reuse`` renders from
them without grading again); ``--write`` replaces the Grading section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402
from bench._grade_report import OUT, markdown, summarise, write_benchmarks  # noqa: E402
from bench._hendrycks import hendrycks_correct  # noqa: E402


# -- math-verify, one sample per task in a killable worker ------------------------------

def mv_task(reference: str, completion: str) -> tuple[bool, float]:
    """(verdict, seconds) of math-verify on one rationale, gold as ``\\boxed{reference}``."""
    from math_verify import parse, verify
    t = time.perf_counter()
    ok = bool(verify(parse("\\boxed{" + reference + "}"), parse(completion)))
    return ok, time.perf_counter() - t


def mv_warm() -> tuple[bool, float]:
    return mv_task("1", "x")


# -- the warehouse --------------------------------------------------------------------

def curator(*args: str, db: Path) -> None:
    exe = Path(sys.executable).with_name("curator")
    cmd = [str(exe) if exe.exists() else "curator", *args, "--db", str(db)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build(db: Path, data: Path) -> None:
    if not (data / "tdg").is_dir():
        sys.exit(f"no TDG data under {data}; pass --data (the shared data folder)")
    curator("load", "math", str(data / "MATH"), db=db)
    curator("import", "tdg", str(data / "tdg" / "GPT3.5-turbo-MATH.jsonl.gz"), "--model", "gpt-3.5-turbo", db=db)
    curator("import", "tdg", str(data / "tdg" / "GPT4-MATH.jsonl.gz"), "--model", "gpt-4", db=db)


GRADE_PENDING = r"""
import json, sys, time
t0 = time.perf_counter()
from curator.grading import grade_pending
from curator.warehouse import Warehouse
wh = Warehouse(sys.argv[1])
workers = int(sys.argv[2]) if sys.argv[2] != "0" else None
t1 = time.perf_counter()
rep = grade_pending(wh, workers=workers)
t2 = time.perf_counter()
print(json.dumps({"graded": rep.graded, "positives": rep.positives, "seconds": rep.seconds,
                  "wall_with_imports": t2 - t0, "imports": t1 - t0, "pairs": rep.pairs,
                  "sympy_pairs": rep.sympy_pairs, "sympy_seconds": rep.sympy_seconds,
                  "status": dict(rep.status), "version": rep.grader_version}))
"""


def time_grade_pending(src: Path, work: Path, workers: int) -> tuple[dict, Path]:
    """grade_pending on a fresh copy of ``src``, in a fresh process."""
    db = work / f"graded-w{workers}.duckdb"
    shutil.copyfile(src, db)
    p = subprocess.run([sys.executable, "-c", GRADE_PENDING, str(db), str(workers)],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"grade_pending failed:\n{p.stderr[-3000:]}")
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    rep["workers"] = workers or os.cpu_count()
    return rep, db


def load_rows(db: Path) -> list[dict]:
    """Every rationale with its teacher, reference, question and our verdict."""
    from curator.grading import GRADER_VERSION
    from curator.warehouse import Warehouse
    with Warehouse(db).read() as con:
        cur = con.execute("""
            SELECT s.sample_id, r.model, p.reference_answer, s.completion, p.question,
                   g.correct, g.status, g.extracted, g.rule, g.extraction
            FROM samples s JOIN problems p USING (problem_id) JOIN runs r USING (run_id)
            LEFT JOIN grades g ON g.sample_id = s.sample_id AND g.grader_version = ?
            WHERE s.completion IS NOT NULL ORDER BY s.sample_id""", [GRADER_VERSION])
        names = ["sample_id", "teacher", "reference", "completion", "question", "ours",
                 "status", "extracted", "rule", "extraction"]
        return [dict(zip(names, r)) for r in cur.fetchall()]


# -- the runs -------------------------------------------------------------------------

def run_ours_per_sample(sub: list[dict]) -> tuple[float, list[bool]]:
    from curator.grading import grade
    grade("1", "1")  # imports
    t = time.perf_counter()
    out = [grade(r["reference"], r["completion"], question=r["question"]).correct for r in sub]
    return time.perf_counter() - t, out


def run_math_verify(sub: list[dict], timeout: float) -> dict:
    import bench.bench_grade as me  # the worker imports this module by that name
    from curator.grading.pool import CRASHED, TIMEOUT, run_tasks
    # one warm-up task in its own pool, so the import of math-verify (about 1 s) is paid
    # before timing; the timed pool's worker imports it on its first task
    list(run_tasks(me.mv_warm, [(0, ())], workers=1, timeout=60))
    verdicts: dict[int, bool] = {}
    inner: list[float] = []
    hangs, errors = [], []
    t = time.perf_counter()
    tasks = ((i, (r["reference"], r["completion"])) for i, r in enumerate(sub))
    for i, ok, value in run_tasks(me.mv_task, tasks, workers=1, timeout=timeout, batch_size=16):
        if value is TIMEOUT or value is CRASHED:
            hangs.append(i)
            verdicts[i] = False
        elif not ok:
            errors.append((i, str(value)[:200]))
            verdicts[i] = False
        else:
            verdicts[i] = value[0]
            inner.append(value[1])
    wall = time.perf_counter() - t
    return {"wall": wall, "verdicts": [verdicts[i] for i in range(len(sub))], "hangs": hangs,
            "errors": errors, "inner_seconds": sum(inner),
            "over_5s": sum(1 for x in inner if x >= 4.9), "slowest": max(inner, default=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="ungraded warehouse with the TDG samples (copied, never changed)")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--sample", type=int, default=12_000, help="subsample for the per-sample runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mv-timeout", type=float, default=30.0, help="hard limit per math-verify sample, s")
    ap.add_argument("--workers-1", action="store_true", help="also time grade_pending with one sympy worker")
    ap.add_argument("--reuse", action="store_true",
                    help="no grading: recompute the tables from the last run's saved verdicts")
    ap.add_argument("--write", action="store_true", help="update the Grading section of BENCHMARKS.md")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        raw = json.loads((OUT / "raw.json").read_text())
    else:
        raw = measure(args)
        raw["command"] = ".venv/bin/python bench/bench_grade.py " + " ".join(
            a for a in sys.argv[1:] if a != "--write")
        (OUT / "raw.json").write_text(json.dumps(raw))
    rows = load_rows(OUT / "graded.duckdb")
    t = time.perf_counter()
    for r in rows:
        r["hendrycks"] = hendrycks_correct(r["reference"], r["completion"])
    if "hendrycks_s" not in raw:  # timed in the measuring run, kept by --reuse
        raw["hendrycks_s"] = time.perf_counter() - t
        (OUT / "raw.json").write_text(json.dumps(raw))
    res = summarise(rows, raw)
    (OUT / "results.json").write_text(json.dumps(res, indent=1))
    text = markdown(res, raw["command"].strip())
    print(text)
    if args.write:
        write_benchmarks(text)


def measure(args) -> dict:
    """Run the graders; return what the tables need (the graded warehouse is kept in OUT)."""
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    try:
        src = work / "ungraded.duckdb"
        if args.db:
            shutil.copyfile(args.db, src)
        else:
            build(src, args.data)
        print("grade_pending on a fresh copy ...", flush=True)
        pending, graded_db = time_grade_pending(src, work, 0)
        print(json.dumps(pending), flush=True)
        pending1 = None
        if args.workers_1:
            pending1, _ = time_grade_pending(src, work, 1)
            print(json.dumps(pending1), flush=True)
        shutil.copyfile(graded_db, OUT / "graded.duckdb")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = load_rows(OUT / "graded.duckdb")
    sub_idx = sorted(random.Random(args.seed).sample(range(len(rows)), min(args.sample, len(rows))))
    sub = [rows[i] for i in sub_idx]
    print(f"ours per sample on {len(sub):,} ...", flush=True)
    ours_wall, ours_sub = run_ours_per_sample(sub)
    print(f"  {ours_wall:.1f}s; math-verify on the same {len(sub):,} ...", flush=True)
    mv = run_math_verify(sub, args.mv_timeout)
    print(f"  {mv['wall']:.1f}s, {len(mv['hangs'])} hangs", flush=True)
    return {"machine": machine("duckdb", "sympy", "latex2sympy2_extended", "math-verify",
                               load=False), "load_before": load, "seed": args.seed, "mv_timeout": args.mv_timeout,
            "sub_ids": [r["sample_id"] for r in sub], "mv": mv, "ours_sub": ours_sub,
            "ours_sub_wall": ours_wall, "pending": pending, "pending1": pending1,
            "load_after": os.getloadavg()[0]}


if __name__ == "__main__":
    main()
