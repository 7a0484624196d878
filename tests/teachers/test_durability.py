"""Crash safety and concurrency of `curator generate` as a separate process: SIGKILL at
random moments and resume; `curator sql` in another process while it writes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from curator.teachers import journal as journal_mod

from .conftest import DEMO_TDG, OPENAI_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(db_path):
    env = dict(os.environ, CURATOR_DB=str(db_path), OPENAI_API_KEY=OPENAI_KEY,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CURATOR_API_KEY", None)
    return env


def _generate_cmd(srv, prices, *, samples, limit, concurrency, extra=()):
    return [sys.executable, "-m", "curator.cli", "generate", "--provider", "openai",
            "--model", "teacher", "--base-url", srv.base_url + "/v1", "--samples", str(samples),
            "--limit", str(limit), "--n-per-request", "1", "--concurrency", str(concurrency),
            "--prices", str(prices), "--timeout", "5", "--quiet", *extra]


def _stored(wh) -> set[str]:
    with wh.read() as con:
        return {r[0] for r in con.execute(
            "SELECT sample_id FROM samples WHERE completion IS NOT NULL").fetchall()}


def _kill_and_resume(math_wh, srv, prices, *, kills, samples, limit, seed):
    rng = random.Random(seed)
    cmd = _generate_cmd(srv, prices, samples=samples, limit=limit, concurrency=8)
    env = _env(math_wh.path)
    checkpoints = []          # (server log length at the kill, samples stored by then)
    progress = []
    for k in range(kills):
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Random moments: the first during start-up, the others at a random time after
        # the process started sending (mid-stream, between or during commits).
        if k:
            before, deadline = len(srv.log), time.monotonic() + 30
            while len(srv.log) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)       # let the server log what was already on the wire
        mark = len(srv.log)
        # What a killed run left: the warehouse plus its journal, which the next run
        # stores first (done here explicitly so the test can see the stored set).
        journal_mod.replay(math_wh)
        stored = _stored(math_wh)
        checkpoints.append((mark, stored))
        progress.append(len(stored))
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return checkpoints, progress


def _check(math_wh, srv, checkpoints, total):
    with math_wh.read() as con:
        n, distinct, ok = con.execute(
            "SELECT count(*), count(DISTINCT (problem_id, sample_index)), count(completion) "
            "FROM samples").fetchone()
    assert n == distinct == ok == total                       # every sample exactly once
    assert not journal_mod.journal_dir(math_wh).exists()
    # After each kill, no later request asked for a sample that was already stored.
    for mark, stored in checkpoints:
        later = [e for e in srv.log[mark:] if e.get("samples")]
        again = [s for e in later for s in e["samples"].split(",") if s in stored]
        assert again == [], f"re-requested {len(again)} stored samples"


def test_sigkill_at_random_moments_then_resume(math_wh, serve, prices):
    srv = serve(replay=[str(DEMO_TDG)], latency_ms=40, latency_jitter_ms=60)
    checkpoints, progress = _kill_and_resume(math_wh, srv, prices, kills=5, samples=4,
                                             limit=100, seed=11)
    print("stored after each kill:", progress)
    assert max(progress) > 0                     # the killed runs did store work
    _check(math_wh, srv, checkpoints, total=400)


@pytest.mark.slow
def test_sigkill_soak(math_wh, serve, prices):
    srv = serve(replay=[str(DEMO_TDG)], latency_ms=20, latency_jitter_ms=200,
                fault_rates={"429": 0.1, "500": 0.05, "drop": 0.02}, retry_after_s=0.2)
    checkpoints, _ = _kill_and_resume(math_wh, srv, prices, kills=15, samples=8, limit=200,
                                      seed=5)
    _check(math_wh, srv, checkpoints, total=1600)


def test_curator_sql_answers_while_generation_writes(math_wh, serve, prices):
    srv = serve(replay=[str(DEMO_TDG)], latency_ms=150)
    env = _env(math_wh.path)
    gen = subprocess.Popen(_generate_cmd(srv, prices, samples=4, limit=60, concurrency=8),
                           env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    counts = []
    try:
        deadline = time.monotonic() + 90
        while gen.poll() is None and time.monotonic() < deadline:
            r = subprocess.run([sys.executable, "-m", "curator.cli", "sql",
                                "SELECT count(*) AS n FROM samples", "--format", "csv"],
                               env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            counts.append(int(r.stdout.strip().splitlines()[-1]))
    finally:
        if gen.poll() is None:
            gen.wait(120)
    assert gen.returncode == 0, gen.stderr.read()
    assert counts == sorted(counts)                 # reads see commits in order
    assert any(0 < c < 240 for c in counts)         # ...and they happened mid-generation
    assert len(_stored(math_wh)) == 240


def test_ctrl_c_waits_for_answers_in_flight_and_keeps_them(math_wh, serve, prices):
    srv = serve(replay=[str(DEMO_TDG)], latency_ms=400)
    env = _env(math_wh.path)
    cmd = _generate_cmd(srv, prices, samples=2, limit=30, concurrency=8)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len([e for e in srv.log if e.get("status") == 200]) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    mark = len(srv.log)
    answered = {s for e in srv.log if e.get("status") == 200 for s in e["samples"].split(",")}
    # every answer the server gave, including those in flight at Ctrl-C, is stored
    assert _stored(math_wh) == answered and 0 < len(answered) < 60
    assert not journal_mod.journal_dir(math_wh).exists()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not {s for e in srv.log[mark:] for s in (e.get("samples") or "").split(",")} & answered
    assert len(_stored(math_wh)) == 60
