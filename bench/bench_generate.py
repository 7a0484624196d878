"""Generation benchmark: `curator generate` against the local teacher server with a fixed
200 ms latency, next to the ceiling (concurrency / latency) and next to
`bespokelabs-curator` (the anchor) pointed at the same server with the same limits, in
the same run; then a fault run (20% 429, 5% 5xx, 1% malformed JSON, 1% hangs) that
reports completion and duplicates.

    .venv/bin/python bench/bench_generate.py            # full run, writes .bench-out/
    .venv/bin/python bench/bench_generate.py --quick    # smaller counts

Both tools run as separate processes against one server process, one after the other,
each with a fresh warehouse/cache. Throughput is measured on the server's request log
(requests answered between the first request and the last answer), so start-up time is
not counted for either tool; CPU seconds per request are the client process's CPU time
from its first request to its exit, divided by the requests it made.

The anchor lives in its own virtualenv (.bench-venv) because its pinned dependencies
conflict with this project's; it is created on first use with
``python -m venv .bench-venv && .bench-venv/bin/pip install bespokelabs-curator==0.1.31``
and driven through bench/_anchor_bespoke.py. Its network access is cut (a dead proxy for
everything but 127.0.0.1) so it cannot reach anything beyond the local server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
DEMO_PROBLEMS = ROOT / "curator" / "demo" / "math_train_200.jsonl"
DEMO_TDG = ROOT / "curator" / "demo" / "tdg_gpt4_200.jsonl.gz"
BENCH_VENV = ROOT / ".bench-venv"
ANCHOR_PY = BENCH_VENV / "bin" / "python"
OUT = ROOT / ".bench-out"
LATENCY_MS = 200
RPM = 10_000_000            # "same limits" for both tools: high enough that concurrency binds
TPM = 10_000_000_000
MAX_TOKENS = 1024


def _cpu_of(pid: int) -> float | None:
    """User+system CPU seconds of a running process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(tmp: Path, *faults: str, retry_after: float = 1.0, hang_s: float = 30.0,
                 seed: int = 0) -> tuple[subprocess.Popen, str]:
    port_file = tmp / f"server-{time.monotonic_ns()}.url"
    cmd = [sys.executable, "-m", "curator.cli", "serve", "--port", "0", "--port-file",
           str(port_file), "--replay", str(DEMO_TDG), "--latency-ms", str(LATENCY_MS),
           "--retry-after", str(retry_after), "--hang-s", str(hang_s), "--seed", str(seed)]
    for f in faults:
        cmd += ["--fault", f]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the teacher server did not start")
        time.sleep(0.05)
    return proc, port_file.read_text().strip()


def server_log(url: str, since: int) -> list[dict]:
    return httpx2.get(f"{url}/_curator/requests", params={"since": since}, timeout=60).json()


def run_client(cmd: list[str], env: dict, url: str, log_start: int,
               timeout: float) -> dict:
    """Run one client process; throughput from the server log, CPU from /proc."""
    t0 = time.monotonic()
    # Files, not pipes: a client that writes a lot of progress output would block on a
    # full pipe that nobody reads until it exits.
    out_f = tempfile.TemporaryFile(mode="w+")
    err_f = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_f, stderr=err_f, text=True)
    cpu_at_first = None
    while proc.poll() is None:
        if cpu_at_first is None:
            # the first request reaching the server marks the end of start-up
            if httpx2.get(f"{url}/_curator/requests", params={"since": log_start},
                          timeout=30).content != b"[]":
                cpu_at_first = _cpu_of(proc.pid)
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise RuntimeError(f"client timed out: {' '.join(cmd[:4])}")
    proc.wait()
    wall = time.monotonic() - t0
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()[-20_000:]
    return {"returncode": proc.returncode, "stdout": out, "stderr": err, "wall_s": wall,
            "cpu_at_first": cpu_at_first}


class ChildCPU:
    """CPU seconds used by finished child processes, from getrusage(RUSAGE_CHILDREN)."""

    def __init__(self) -> None:
        import resource
        self._r = resource
        self.start = self._now()

    def _now(self) -> float:
        u = self._r.getrusage(self._r.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime

    def used(self) -> float:
        return self._now() - self.start


def throughput(entries: list[dict]) -> dict:
    chat = [e for e in entries if e.get("kind") == "openai"]
    ok = [e for e in chat if e.get("status") == 200 and e.get("fault") == "ok"]
    if not ok:
        return {"requests": len(chat), "ok": 0, "rate": 0.0, "span_s": 0.0}
    t_first = min(e["t"] for e in chat)
    t_last = max(e.get("done_t", e["t"]) for e in ok)
    span = max(1e-6, t_last - t_first)
    return {"requests": len(chat), "ok": len(ok), "rate": len(ok) / span, "span_s": span}


def load_warehouse(db: Path) -> None:
    env = dict(os.environ, CURATOR_DB=str(db), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "curator.cli", "load", "math", str(DEMO_PROBLEMS)],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def measure_client(cmd, env, url: str, timeout) -> tuple[dict, float, list[dict], dict]:
    """Run one client against the server: (its run, its CPU seconds, the server's log
    entries for it, their throughput)."""
    start = len(server_log(url, 0))
    cpu = ChildCPU()
    res = run_client(cmd, env, url, start, timeout)
    total_cpu = cpu.used()
    entries = server_log(url, start)
    return res, total_cpu, entries, throughput(entries)


def steady(res: dict, total_cpu: float) -> float | None:
    """CPU seconds after the first response (None when there was none)."""
    return None if res["cpu_at_first"] is None else total_cpu - res["cpu_at_first"]


def ours(url: str, tmp: Path, concurrency: int, samples: int, *, extra=(), timeout=900):
    db = tmp / f"ours-{concurrency}-{time.monotonic_ns()}" / "w.duckdb"
    db.parent.mkdir()
    load_warehouse(db)
    env = dict(os.environ, CURATOR_DB=str(db), OPENAI_API_KEY="sk-bench-not-a-real-key",
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "curator.cli", "generate", "--provider", "openai-compatible",
           "--model", "teacher", "--base-url", url + "/v1", "--samples", str(samples),
           "--n-per-request", "1", "--concurrency", str(concurrency), "--rpm", str(RPM),
           "--tpm", str(TPM), "--max-tokens", str(MAX_TOKENS), "--timeout", "30", "--quiet",
           *extra]
    res, total_cpu, entries, tp = measure_client(cmd, env, url, timeout)
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    stored, distinct = con.execute(
        "SELECT count(completion), count(DISTINCT (problem_id, sample_index)) FROM samples").fetchone()
    con.close()
    steady_cpu = steady(res, total_cpu)
    return {"tool": "curator", "concurrency": concurrency, **tp, "wall_s": res["wall_s"],
            "cpu_s": total_cpu, "steady_cpu_s": steady_cpu, "stored": stored,
            "distinct": distinct, "returncode": res["returncode"],
            "stderr_tail": res["stderr"][-800:], "entries": entries}


def anchor(url: str, tmp: Path, concurrency: int, samples: int, timeout=900):
    if not ANCHOR_PY.exists():
        return None
    from curator.teachers.prompts import BUILTIN
    rows = [json.loads(x) for x in DEMO_PROBLEMS.read_text().splitlines() if x.strip()]
    prompts = tmp / f"anchor-{concurrency}.jsonl"
    with open(prompts, "w") as fh:
        i = 0
        for r in rows:
            msgs = BUILTIN["math-cot"].render({"question": r["problem"]})
            for _ in range(samples):
                fh.write(json.dumps({"id": i, "messages": msgs}) + "\n")
                i += 1
    cache = tmp / f"anchor-cache-{concurrency}-{time.monotonic_ns()}"
    job = {"base_url": url + "/v1", "prompts": str(prompts), "concurrency": concurrency,
           "rpm": RPM, "tpm": TPM, "max_tokens": MAX_TOKENS, "cache_dir": str(cache),
           "timeout": 30}
    tok = BENCH_VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "litellm" / "litellm_core_utils" / "tokenizers"
    env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1,localhost", TELEMETRY_ENABLED="false",
               LITELLM_LOCAL_MODEL_COST_MAP="True", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               CURATOR_DISABLE_RICH_DISPLAY="1", TIKTOKEN_CACHE_DIR=str(tok))
    env.pop("PYTHONPATH", None)
    cmd = [str(ANCHOR_PY), str(ROOT / "bench" / "_anchor_bespoke.py"), json.dumps(job)]
    res, total_cpu, entries, tp = measure_client(cmd, env, url, timeout)
    try:
        summary = json.loads(res["stdout"].strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        summary = {"responses": None, "distinct": None}
    steady_cpu = steady(res, total_cpu)
    shutil.rmtree(cache, ignore_errors=True)
    return {"tool": "bespokelabs-curator", "concurrency": concurrency, **tp,
            "wall_s": res["wall_s"], "cpu_s": total_cpu, "steady_cpu_s": steady_cpu,
            "stored": summary.get("distinct"), "distinct": summary.get("distinct"),
            "returncode": res["returncode"], "stderr_tail": res["stderr"][-800:],
            "entries": entries}


def duplicates(entries: list[dict]) -> int:
    """Samples the server answered successfully more than once."""
    c = Counter()
    for e in entries:
        if e.get("kind") == "openai" and e.get("status") == 200 and e.get("fault") == "ok" \
                and e.get("samples"):
            c.update(e["samples"].split(","))
    return sum(v - 1 for v in c.values() if v > 1)


def fmt_row(r: dict, ceiling: float) -> list:
    cpu_req = (r["steady_cpu_s"] / r["requests"]) if r.get("steady_cpu_s") and r["requests"] else None
    return [r["tool"], r["concurrency"], f"{ceiling:,.0f}", f"{r['rate']:,.0f}",
            f"{100 * r['rate'] / ceiling:.0f}%", f"{r['ok']:,}",
            "-" if cpu_req is None else f"{cpu_req * 1000:.2f}",
            f"{r['cpu_s']:.1f}", f"{r['wall_s']:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--no-anchor", action="store_true")
    ap.add_argument("--no-faults", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    results = []
    srv, url = start_server(tmp)
    try:
        for c in args.concurrency:
            ceiling = c / (LATENCY_MS / 1000)
            # enough requests for ~10 s at the lesser of the ceiling and ~600 req/s
            n = int(min(ceiling, 600) * (4 if args.quick else 10))
            samples = max(2, -(-n // 200))
            for fn in (ours,) + (() if args.no_anchor else (anchor,)):
                r = fn(url, tmp, c, samples)
                if r is None:
                    continue
                r["ceiling"] = ceiling
                r["duplicates"] = duplicates(r["entries"]) if r["tool"] == "curator" else None
                results.append(r)
                print(f"{r['tool']:>20} c={c:<5} {r['rate']:8.1f} req/s of {ceiling:,.0f} "
                      f"({100 * r['rate'] / ceiling:.0f}%), ok {r['ok']}, cpu {r['cpu_s']:.1f}s "
                      f"(steady {r['steady_cpu_s'] or 0:.1f}s), wall {r['wall_s']:.1f}s, rc {r['returncode']}",
                      flush=True)
                if r["returncode"] != 0:
                    print(r["stderr_tail"], file=sys.stderr)
    finally:
        srv.terminate()
        srv.wait(30)

    fault = None
    if not args.no_faults:
        fsrv, furl = start_server(tmp, "429=0.2", "500=0.025", "503=0.025", "malformed=0.01",
                                  "hang=0.01", retry_after=1.0, hang_s=60.0, seed=1)
        try:
            c = 256
            samples = 5 if args.quick else 15
            r = ours(furl, tmp, c, samples,
                     extra=("--timeout", "5", "--max-attempts", "30"))
            total = 200 * samples
            fault = {"concurrency": c, "samples": total, "stored": r["stored"],
                     "distinct": r["distinct"], "completion": r["stored"] / total,
                     "duplicates": duplicates(r["entries"]), "requests": r["requests"],
                     "wall_s": r["wall_s"], "returncode": r["returncode"],
                     "faults": dict(Counter(e.get("fault") for e in r["entries"]
                                            if e.get("kind") == "openai"))}
            print(f"fault run: {fault}", flush=True)
        finally:
            fsrv.terminate()
            fsrv.wait(30)

    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "load_average_at_end": os.getloadavg(),
              "latency_ms": LATENCY_MS, "rpm": RPM, "tpm": TPM,
              "results": [{k: v for k, v in r.items() if k != "entries"} for r in results],
              "fault_run": fault}
    (OUT / "bench_generate.json").write_text(json.dumps(report, indent=2))
    headers = ["tool", "concurrency", "ceiling req/s", "req/s", "of ceiling", "answered",
               "CPU ms/request", "CPU s total", "wall s"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in results:
        lines.append("| " + " | ".join(map(str, fmt_row(r, r["ceiling"]))) + " |")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
