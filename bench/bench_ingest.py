"""Ingest benchmark: `curator import tdg` of both TDG files (120,000 rationales) into a
fresh warehouse, against the floor of DuckDB's own `read_json` of the same files into one
table, in the same run. Reports wall time and peak memory (max RSS) of each, and the ratio.

    .venv/bin/python bench/bench_ingest.py [--data ../shared/data] [--repeat 3]

Each variant runs in its own fresh process so peak memory is its own. The MATH problems
are loaded before the timed import (the import links to them, as in real use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OURS = r"""
import sys, time
from curator.imports import import_samples
from curator.warehouse import Warehouse
db, data = sys.argv[1], sys.argv[2]
wh = Warehouse(db)
t = time.perf_counter()
n = 0
for name, model in (("GPT3.5-turbo-MATH.jsonl.gz", "gpt-3.5-turbo"), ("GPT4-MATH.jsonl.gz", "gpt-4")):
    n += import_samples(wh, "tdg", f"{data}/tdg/{name}", model=model).runs[0].added
print(time.perf_counter() - t, n)
"""

FLOOR = r"""
import sys, time, duckdb
db, data = sys.argv[1], sys.argv[2]
t = time.perf_counter()
con = duckdb.connect(db)
con.execute(f"CREATE TABLE tdg AS SELECT * FROM read_json(['{data}/tdg/GPT3.5-turbo-MATH.jsonl.gz', '{data}/tdg/GPT4-MATH.jsonl.gz'], format='newline_delimited')")
n = con.execute("SELECT sum(len(generated_answer)) FROM tdg").fetchall()[0][0]
con.close()
print(time.perf_counter() - t, n)
"""

PREPARE = r"""
import sys
from curator.sources import load_problems
from curator.warehouse import Warehouse
load_problems(Warehouse(sys.argv[1]), "math", sys.argv[2] + "/MATH")
"""


def run(code: str, *args: str) -> tuple[float, int, float]:
    """(seconds measured inside, rows, peak RSS in MiB) of a fresh Python process."""
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise SystemExit(f"benchmark step failed ({status}):\n{out}")
    secs, rows = out.split()
    return float(secs), int(float(rows)), usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    data = str(args.data.resolve())
    ours, floor = [], []
    for _ in range(args.repeat):
        tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        try:
            subprocess.run([sys.executable, "-c", PREPARE, str(tmp / "w.duckdb"), data],
                           check=True, cwd=ROOT)
            ours.append(run(OURS, str(tmp / "w.duckdb"), data))
            floor.append(run(FLOOR, str(tmp / "floor.duckdb"), data))
        finally:
            shutil.rmtree(tmp)
    o_t = statistics.median(x[0] for x in ours)
    f_t = statistics.median(x[0] for x in floor)
    o_m = max(x[2] for x in ours)
    f_m = max(x[2] for x in floor)
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "rationales": ours[0][1], "floor_rows": floor[0][1],
        "ours_s": round(o_t, 2), "floor_s": round(f_t, 2), "time_ratio": round(o_t / f_t, 2),
        "ours_peak_mib": round(o_m), "floor_peak_mib": round(f_m),
        "memory_ratio": round(o_m / f_m, 2), "repeat": args.repeat,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
