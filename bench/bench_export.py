"""Benchmark `curator export` on the 120,000 graded TDG rationales.

Anchor (the floor), measured in the same run and interleaved with the exports: DuckDB's
own ``COPY (SELECT <record fields> FROM positives/negatives JOIN problems JOIN runs) TO
'x.parquet'`` of every graded rationale, once as is and once with the ORDER BY an export
needs for byte-identical files. The export does more on top (filters, duplicate
removal, caps, problem-level stratified splits, schema validation, manifest with file
hashes, staged directory); the target is within 2x of the floor for Parquet.

The warehouse is built with the real pipeline when missing (``curator load math``,
``curator import tdg`` for both teachers, ``curator grade``), or reused with ``--db``:

    .venv/bin/python bench/bench_export.py                       # build in a temp dir
    .venv/bin/python bench/bench_export.py --db /tmp/tdg.duckdb  # build once, then reuse
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curator.exporting import ExportOptions, export_training  # noqa: E402
from curator.warehouse import Warehouse  # noqa: E402

FLOOR_SELECT = """
    WITH labelled AS (
        SELECT *, 'positive' AS label FROM positives
        UNION ALL BY NAME
        SELECT *, 'negative' AS label FROM negatives)
    SELECT l.problem_id, p.dataset, p.subject, p.level, p.question, p.reference_answer,
           l.completion AS rationale, l.extracted_answer, l.label, r.model AS teacher_model,
           l.run_id, l.sample_id, l.grader_version
    FROM labelled l JOIN problems p ON p.problem_id = l.problem_id
    JOIN runs r ON r.run_id = l.run_id"""


def curator(*args: str, db: Path) -> None:
    exe = Path(sys.executable).with_name("curator")
    cmd = [str(exe) if exe.exists() else "curator", *args, "--db", str(db)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def graded_count(db: Path) -> int:
    if not db.exists():
        return 0
    with Warehouse(db).read() as con:
        return con.execute("SELECT count(*) FROM graded_samples").fetchall()[0][0]


def build(db: Path, data: Path) -> None:
    """The real pipeline, each step idempotent (re-running adds nothing)."""
    if not (data / "tdg").is_dir():
        sys.exit(f"no TDG data under {data}; pass --data (the shared data folder)")
    from curator.cli import app
    if "grade" not in {c.name for c in app.registered_commands}:
        sys.exit("this checkout has no `curator grade` command yet: pass --db with a "
                 "warehouse whose TDG samples are graded")
    curator("load", "math", str(data / "MATH" / "train"), db=db)
    curator("import", "tdg", str(data / "tdg" / "GPT4-MATH.jsonl.gz"), "--model", "gpt-4", db=db)
    curator("import", "tdg", str(data / "tdg" / "GPT3.5-turbo-MATH.jsonl.gz"),
            "--model", "gpt-3.5-turbo", db=db)
    curator("grade", db=db)


class Clock:
    """Wall time, and CPU time of this process (all DuckDB threads included): on a
    shared machine the CPU time is the steadier of the two."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def floor(wh: Warehouse, target: Path, ordered: bool) -> tuple[Clock, int]:
    order = " ORDER BY problem_id, sample_id" if ordered else ""
    with wh.read() as con:
        with Clock() as c:
            con.execute(f"COPY ({FLOOR_SELECT}{order}) TO '{target}' (FORMAT parquet)")
        rows = con.execute(f"SELECT count(*) FROM '{target}'").fetchall()[0][0]
    return c, rows


def export(wh: Warehouse, out: Path, fmt: str) -> tuple[Clock, int]:
    with Clock() as c:
        res = export_training(wh, out, ExportOptions(format=fmt), overwrite=True, record=False)
    return c, sum(v["records"] for v in res.manifest["totals"].values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, help="warehouse to reuse (built there when missing)")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--formats", default="parquet,jsonl,hf")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    db = args.db or work / "curator.duckdb"
    try:
        if graded_count(db) == 0:
            t = time.perf_counter()
            build(db, args.data)
            print(f"built {db} in {time.perf_counter() - t:.0f}s")
        wh = Warehouse(db)
        n = graded_count(db)
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        times: dict[str, list[Clock]] = {k: [] for k in ["floor", "floor_sorted", *formats]}
        rows: dict[str, int] = {}
        # One untimed pass warms the OS cache and the imports (datasets is slow to load).
        export(wh, work / "warm", "hf")
        floor(wh, work / "warm.parquet", False)
        for _ in range(args.repeat):
            # Interleaved, so that load from other processes hits all of them alike.
            for name in times:
                if name == "floor":
                    s, rows[name] = floor(wh, work / "floor.parquet", False)
                elif name == "floor_sorted":
                    s, rows[name] = floor(wh, work / "floor_sorted.parquet", True)
                else:
                    s, rows[name] = export(wh, work / f"out_{name}", name)
                times[name].append(s)
        wall = {k: statistics.median(c.wall for c in v) for k, v in times.items()}
        cpu = {k: statistics.median(c.cpu for c in v) for k, v in times.items()}
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU(s), Python "
              f"{platform.python_version()}, load average before "
              f"{os.getloadavg()[0]:.1f}; {n:,} graded rationales; median of {args.repeat}")
        print("| what | rows | wall s | x floor (wall) | CPU s | x floor (CPU) |")
        print("|---|---:|---:|---:|---:|---:|")
        for k in times:
            label = {"floor": "DuckDB `COPY (...) TO 'x.parquet'` (floor)",
                     "floor_sorted": "DuckDB `COPY (... ORDER BY ...) TO 'x.parquet'`"}.get(
                k, f"`curator export --format {k}`")
            print(f"| {label} | {rows[k]:,} | {wall[k]:.2f} | {wall[k] / wall['floor']:.2f} | "
                  f"{cpu[k]:.2f} | {cpu[k] / cpu['floor']:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
