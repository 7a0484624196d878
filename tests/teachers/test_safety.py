"""Safety of `curator generate` and the teacher server, through the real SDK clients
against the local teacher server: deadlines that hold against a trickling server, one
payer per sample across processes, writers that outlast a long reader, no credentials
from a URL stored, and a server that only its own scripts may reconfigure."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from curator.errors import CuratorError
from curator.teachers import journal as journal_mod
from curator.teachers.generate import generate
from curator.teachers.providers import safe_url, url_secrets

from .conftest import OPENAI_KEY
from .test_durability import ROOT
from .test_generate import make_spec, rows, served_ok


def _no_byte_holds(wh, secret: bytes) -> None:
    for f in wh.path.parent.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f


def test_safe_url_removes_userinfo_and_credential_parameters():
    assert safe_url("http://user:SECRET@host:8000/v1") == "http://host:8000/v1"
    assert safe_url("https://h/v1?api-version=2024&api_key=SECRET&token=T") == \
        "https://h/v1?api-version=2024&api_key=REDACTED&token=REDACTED"
    assert safe_url("http://[::1]:9/v1") == "http://[::1]:9/v1"
    assert url_secrets("http://u:p@h/v1?key=x&x=1") == ["userinfo", "key"]
    assert url_secrets("http://127.0.0.1:8765/v1") == []


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
def test_credentials_in_the_base_url_fail_fast_and_are_never_stored(math_wh, serve, keys,
                                                                     prices, provider):
    srv = serve(script=["The answer is 1."])
    spec = make_spec(srv, prices, provider=provider, samples=2, limit=3)
    host = spec.base_urls[0].split("://", 1)[1]
    spec.base_urls = [f"http://user:SECRETPASS123@{host}"]
    with pytest.raises(CuratorError) as err:
        generate(math_wh, spec)
    msg = str(err.value)
    assert "credentials in the URL" in msg and "SECRETPASS123" not in msg
    assert srv.log == []                                   # nothing was sent
    assert rows(math_wh, "SELECT count(*) FROM sample_attempts") == [(0,)]
    _no_byte_holds(math_wh, b"SECRETPASS123")


def test_credential_parameters_of_a_base_url_are_redacted_where_stored(math_wh, serve, keys,
                                                                        prices):
    srv = serve(script=["The answer is 1."])
    spec = make_spec(srv, prices, provider="openai-compatible", samples=2, limit=3)
    spec.base_urls = [spec.base_urls[0] + "?api_key=SECRETQUERY123"]
    # the SDKs put the path after the query, so such an endpoint answers 404 (fatal)
    with pytest.raises(CuratorError) as err:
        generate(math_wh, spec)
    assert "SECRETQUERY123" not in str(err.value)
    (endpoint,) = {r[0] for r in rows(math_wh, "SELECT endpoint FROM sample_attempts")}
    assert endpoint.endswith("/v1?api_key=REDACTED")
    _no_byte_holds(math_wh, b"SECRETQUERY123")


# -- --timeout is a deadline on each request ------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_trickling_answer_is_abandoned_at_the_timeout_and_retried(math_wh, serve, keys,
                                                                    prices, provider):
    # Each byte arrives well within the SDKs' per-read timeout; the whole answer would
    # take minutes.
    __import__(provider)      # imported before the clock starts (anthropic takes seconds)
    srv = serve(script=["The answer is 1."], fault_sequence=["trickle", "trickle"],
                trickle_s=0.2)
    spec = make_spec(srv, prices, provider=provider, samples=1, limit=4, timeout=1.0,
                     backoff_base=0.05, backoff_cap=0.1)
    t0 = time.monotonic()
    rep = generate(math_wh, spec)
    elapsed = time.monotonic() - t0
    assert rep.stats.done == 4 and rep.stats.failed == 0
    assert rep.stats.failures["timeout"] == 2
    attempts = rows(math_wh, "SELECT error_class, error, latency_ms FROM sample_attempts")
    assert len(attempts) == 2
    for cls, err, latency in attempts:
        assert cls == "timeout" and "--timeout 1s" in err
        assert 900 <= latency <= 1600, latency
    assert elapsed < 4.0, elapsed


def test_a_server_that_trickles_forever_does_not_hang_the_run(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], fault_rates={"trickle": 1.0}, trickle_s=0.1)
    spec = make_spec(srv, prices, samples=2, limit=3, timeout=0.5, max_attempts=3,
                     backoff_base=0.05, backoff_cap=0.1)
    t0 = time.monotonic()
    rep = generate(math_wh, spec)
    elapsed = time.monotonic() - t0
    # 3 requests of n=2, 3 attempts each, 0.5 s apiece, all at once: about 1.5 s
    assert rep.stats.failed == 6 and rep.stats.final_errors["timeout"] == 6
    assert rep.stats.requests == 9
    assert elapsed < 4.0, elapsed
    assert rows(math_wh, "SELECT DISTINCT error_class FROM samples") == [("timeout",)]
    assert rows(math_wh, "SELECT max(latency_ms) < 1000 FROM sample_attempts") == [(True,)]


# -- one payer per sample ----------------------------------------------------------------

def test_a_second_generation_leaves_out_what_a_live_one_has_claimed(math_wh, serve, keys,
                                                                    prices):
    from curator.teachers.claims import claim_missing
    from curator.teachers.generate import plan_generation

    srv = serve(script=["The answer is 1."])
    first = make_spec(srv, prices, samples=2, limit=3)
    with claim_missing(math_wh, lambda: plan_generation(math_wh, first)) as (plan, other, _):
        assert plan.missing == 6 and other.samples == 0
        # a second generation asking for more problems and more samples gets the rest
        rep = generate(math_wh, make_spec(srv, prices, samples=3, limit=5))
        assert rep.claimed_elsewhere.samples == 6
        assert rep.claimed_elsewhere.pids == [os.getpid()]
        assert rep.stats.total == rep.stats.done == 15 - 6
        claimed = {s for j in plan.jobs for s in j.sample_ids()}
        asked = {s for e in srv.log for s in (e.get("samples") or "").split(",") if s}
        assert asked and not asked & claimed
    # once the claim is released (its owner ended), the rest is requested
    rep = generate(math_wh, make_spec(srv, prices, samples=3, limit=5))
    assert rep.claimed_elsewhere.samples == 0 and rep.stats.done == 6
    assert rows(math_wh, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(15, 15)]
    assert not journal_mod.journal_dir(math_wh).exists()


def test_a_claim_of_a_dead_process_does_not_hold(math_wh, serve, keys, prices):
    # A claim file nobody holds a lock on: its process died (SIGKILL)
    d = journal_mod.journal_dir(math_wh)
    d.mkdir()
    (d / "claim-999999-1.json").write_text('{"pid": 999999, "samples": []}')
    srv = serve(script=["The answer is 1."])
    rep = generate(math_wh, make_spec(srv, prices, samples=1, limit=2))
    assert rep.stats.done == 2 and rep.claimed_elsewhere.samples == 0
    assert not d.exists()


def test_two_concurrent_generations_pay_once_per_sample(math_wh, serve, prices):
    # slow enough answers that the two runs overlap (each would take about 3 s alone)
    srv = serve(script=["The answer is 1."], latency_ms=300)
    env = dict(os.environ, CURATOR_DB=str(math_wh.path), OPENAI_API_KEY=OPENAI_KEY,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "curator.cli", "generate", "--provider", "openai",
           "--model", "teacher", "--base-url", srv.base_url + "/v1", "--samples", "4",
           "--limit", "20", "--n-per-request", "1", "--concurrency", "8",
           "--prices", str(prices), "--timeout", "5", "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (stored,) = rows(math_wh, "SELECT count(completion) FROM samples")[0]
    served = sum(served_ok(srv).values())
    assert stored == 80 and served <= 1.05 * stored, (served, stored)
    assert max(served_ok(srv).values()) == 1
    # whichever came second said why it asked for less
    said = "".join(err for _, err in outs)
    assert "left to another `curator generate`" in said


# -- a long reader does not break writers --------------------------------------------------

class _Reader:
    """Another process that holds the warehouse open read-only (a long `curator sql`, a
    notebook) for ``hold`` seconds, or until :meth:`close`."""

    def __init__(self, path, hold: float = 600) -> None:
        code = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
                "print('ready', flush=True); time.sleep(float(sys.argv[2]))")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(hold)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def _fill(math_wh, serve, prices, *, samples, limit):
    # answers without a final answer: graded at once, no sympy worker to start
    srv = serve(script=["I cannot tell."])
    rep = generate(math_wh, make_spec(srv, prices, samples=samples, limit=limit))
    assert rep.stats.done == samples * limit
    return srv


def test_grading_outlasts_a_reader_longer_than_the_lock_timeout(math_wh, serve, keys, prices,
                                                                monkeypatch):
    import threading

    from curator.grading import batch
    from curator.warehouse import Warehouse

    _fill(math_wh, serve, prices, samples=2, limit=20)
    said: list[str] = []
    monkeypatch.setattr(batch, "_say", said.append)
    monkeypatch.setattr(batch, "FLUSH_SECONDS", 0.1)
    monkeypatch.setattr(batch, "BUSY_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(batch, "BUSY_TRY_SECONDS", 0.05)
    monkeypatch.setattr(batch, "BUSY_SAY_SECONDS", 0.3)
    released = threading.Event()
    stream = batch.grade_stream

    def slow(*a, **kw):
        # grading that goes on while the reader holds the file: the second half of the
        # verdicts comes only once the reader has gone
        for i, item in enumerate(stream(*a, **kw)):
            if i == 20:
                assert released.wait(30)
            time.sleep(0.02)
            yield item
    monkeypatch.setattr(batch, "grade_stream", slow)
    wh = Warehouse(math_wh.path, lock_timeout=0.5)
    reader = _Reader(wh.path)
    out: list = []
    th = threading.Thread(target=lambda: out.append(batch.grade_pending(wh)))
    th.start()
    try:
        deadline = time.monotonic() + 30
        while not any("locked by another process" in m for m in said):
            assert time.monotonic() < deadline and th.is_alive(), said
            time.sleep(0.02)
        time.sleep(1.5)            # three lock timeouts: the old writer gave up after one
    finally:
        reader.close()
        released.set()
        th.join(60)
    (rep,) = out
    assert rep.graded == 40
    assert rows(math_wh, "SELECT count(*) FROM grades") == [(40,)]
    assert len([m for m in said if "still trying" in m]) >= 2
    assert any("free again" in m for m in said)


def test_grade_that_cannot_write_at_the_end_exits_non_zero_and_says_what_is_left(
        math_wh, serve, keys, prices, cli, monkeypatch):
    _fill(math_wh, serve, prices, samples=2, limit=5)
    monkeypatch.setenv("CURATOR_LOCK_TIMEOUT", "0.5")
    reader = _Reader(math_wh.path, hold=30)
    try:
        r = cli("grade", "--quiet", ok=False)
    finally:
        reader.close()
    assert r.exit_code != 0
    out = str(r.exception)      # `curator` prints it as "error: ..." and exits 2
    assert "work undone" in out and "10 samples are still ungraded" in out
    assert "Re-run `curator grade`" in out
    assert rows(math_wh, "SELECT count(*) FROM grades") == [(0,)]
    assert cli("grade", "--quiet").exit_code == 0      # the rest, once it lets go
    assert rows(math_wh, "SELECT count(*) FROM grades") == [(10,)]


def test_generate_grade_keeps_grading_past_a_long_reader(math_wh, serve, keys, prices):
    import threading

    from curator.warehouse import Warehouse

    srv = serve(script=["I cannot tell."], latency_ms=300)
    wh = Warehouse(math_wh.path, lock_timeout=0.4)
    spec = make_spec(srv, prices, samples=2, limit=12, concurrency=2, n_per_request=1,
                     grade=True)
    seen = []

    def arrive():      # once answers are flowing, a reader holds the file for 1.5 s
        while len(srv.log) < 4:
            time.sleep(0.01)
        reader = _Reader(wh.path, hold=1.5)
        seen.append(len(srv.log))
        reader.proc.wait()
        seen.append(len(srv.log))
        reader.close()
    t = threading.Thread(target=arrive)
    t.start()
    try:
        rep = generate(wh, spec)
    finally:
        t.join()
    assert seen[1] < 24, seen          # the run went on after the reader left
    assert rep.stats.done == 24 and rep.stats.uncommitted == 0
    assert rep.grade_error is None
    assert rows(math_wh, "SELECT count(*) FROM grades") == [(24,)]


def test_generate_that_ends_with_work_undone_exits_non_zero(math_wh, serve, keys, prices, cli,
                                                            monkeypatch):
    import threading
    srv = serve(script=["I cannot tell."], latency_ms=2000)
    monkeypatch.setenv("CURATOR_LOCK_TIMEOUT", "0.3")
    readers = []

    def arrive():          # once the requests are out, a reader takes the file for good
        while not srv.log:
            time.sleep(0.01)
        readers.append(_Reader(math_wh.path, hold=30))
    t = threading.Thread(target=arrive)
    t.start()
    try:
        r = cli("generate", "--provider", "openai", "--model", "teacher", "--base-url",
                srv.base_url + "/v1", "--samples", "2", "--limit", "3", "--prices", prices,
                "--timeout", "5", "--grade", "--quiet", ok=False)
    finally:
        t.join()
        for reader in readers:
            reader.close()
    assert r.exit_code == 1, r.output
    assert "journal records" in r.output and "not in the warehouse yet" in r.output
    assert "`curator grade` grades them" in r.output
    # nothing was lost: the next run stores the journal and asks for nothing
    monkeypatch.setenv("CURATOR_LOCK_TIMEOUT", "30")
    served = len(srv.log)
    r = cli("generate", "--provider", "openai", "--model", "teacher", "--base-url",
            srv.base_url + "/v1", "--samples", "2", "--limit", "3", "--prices", prices,
            "--timeout", "5", "--grade", "--quiet")
    assert len(srv.log) == served
    assert rows(math_wh, "SELECT count(completion) FROM samples") == [(6,)]
    assert rows(math_wh, "SELECT count(*) FROM grades") == [(6,)]
