"""`curator generate` through the real SDK clients against the local teacher server:
completeness, resumption, retries, n, truncation, cost, rate limits, fleets, keys."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter

import httpx2
import pytest

from curator.errors import CuratorError
from curator.ids import normalize_question, sample_id
from curator.teachers import journal as journal_mod
from curator.teachers.generate import GenerateSpec, generate
from curator.teachers.limits import LimitSpec
from curator.teachers.store import Selection

from .conftest import DEMO_TDG


def make_spec(srv, prices, *, provider="openai", model="teacher", samples=4, limit=10, **kw):
    base = srv.base_url + ("/v1" if provider != "anthropic" else "")
    kw = {"timeout": 5.0, "concurrency": 16, **kw}
    return GenerateSpec(provider=provider, model=model, samples=samples, base_urls=[base],
                        selection=Selection(limit=limit), prices=str(prices), **kw)


def rows(wh, sql, params=None):
    with wh.read() as con:
        return con.execute(sql, params or []).fetchall()


def served_ok(srv) -> Counter:
    """sample id -> number of successful answers the server gave for it."""
    c = Counter()
    for e in srv.log:
        if e.get("status") == 200 and e.get("fault") in ("ok", "length", "content_filter") \
                and e.get("samples"):
            c.update(e["samples"].split(","))
    return c


def recorded() -> dict[str, list[str]]:
    with gzip.open(DEMO_TDG, "rt") as fh:
        return {normalize_question(r["question"]): r["generated_answer"] for r in map(json.loads, fh)}


def test_every_sample_stored_once_and_a_rerun_asks_for_nothing(math_wh, serve, keys, prices):
    srv = serve(replay=[str(DEMO_TDG)], latency_ms=10)
    spec = make_spec(srv, prices, samples=4, limit=10)
    rep = generate(math_wh, spec)
    assert rep.stats.done == 40 and rep.stats.failed == 0
    got = rows(math_wh, "SELECT s.sample_id, s.run_id, s.problem_id, s.sample_index, s.completion, "
                        "p.question FROM samples s JOIN problems p USING (problem_id)")
    assert len(got) == 40
    rec = recorded()
    for sid, run_id, pid, idx, text, question in got:
        assert sid == sample_id(run_id, pid, idx)
        assert text in rec[normalize_question(question)]        # the recorded teacher text
    # n = 4 in one request per problem: the prompt is paid once
    reqs = [e for e in srv.log if e["kind"] == "openai"]
    assert len(reqs) == 10 and {e["n"] for e in reqs} == {4}
    assert max(served_ok(srv).values()) == 1
    # the run records its prompt and parameters
    (run,) = rows(math_wh, "SELECT r.run_id, r.provider, r.model, r.params, p.name, p.template "
                           "FROM runs r JOIN prompts p USING (prompt_id)")
    assert run[1:3] == ("openai", "teacher") and json.loads(run[3])["max_tokens"] == 1024
    assert run[4] == "math-cot" and "{question}" in run[5]
    # re-running the same command sends nothing
    rep2 = generate(math_wh, spec)
    assert rep2.stats.total == 0 and len(srv.log) == 10
    # asking for more samples extends the same run with the missing indexes only
    spec.samples = 6
    rep3 = generate(math_wh, spec)
    assert rep3.stats.done == 20
    new = [e for e in srv.log[10:] if e["kind"] == "openai"]
    assert len(new) == 10 and {e["n"] for e in new} == {2}
    assert rows(math_wh, "SELECT count(*), count(DISTINCT run_id) FROM samples") == [(60, 1)]


def test_retries_through_every_fault_without_duplicates(math_wh, serve, keys, prices):
    srv = serve(replay=[str(DEMO_TDG)], seed=7, retry_after_s=0.05, hang_s=3,
                fault_rates={"429": 0.15, "500": 0.05, "503": 0.05, "drop": 0.05,
                             "malformed": 0.05, "hang": 0.03})
    spec = make_spec(srv, prices, samples=2, limit=40, n_per_request=1, timeout=0.6,
                     max_attempts=20, backoff_base=0.02, backoff_cap=0.3)
    rep = generate(math_wh, spec)
    assert rep.stats.done == 80 and rep.stats.failed == 0
    assert rows(math_wh, "SELECT count(*), count(completion) FROM samples") == [(80, 80)]
    classes = dict(rows(math_wh, "SELECT error_class, count(*) FROM sample_attempts GROUP BY 1"))
    assert {"rate_limit", "server", "bad_response"} <= set(classes)
    assert "connection" in classes or "timeout" in classes
    assert classes == {k: v for k, v in rep.stats.failures.items()}
    served = served_ok(srv)
    assert len(served) == 80 and set(served.values()) == {1}    # no sample answered twice


def test_n_falls_back_when_the_server_ignores_it(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], n_max=1)
    rep = generate(math_wh, make_spec(srv, prices, samples=3, limit=5, concurrency=1))
    assert rep.stats.done == 15
    reqs = [e for e in srv.log if e["kind"] == "openai"]
    assert reqs[0]["n"] == 3 and all(e["n"] == 1 for e in reqs[1:])
    assert len(reqs) == 1 + 2 + 4 * 3


def test_anthropic_provider_one_request_per_sample(math_wh, serve, keys, prices):
    srv = serve(replay=[str(DEMO_TDG)])
    rep = generate(math_wh, make_spec(srv, prices, provider="anthropic", model="claude-teacher",
                                      samples=3, limit=4))
    assert rep.stats.done == 12
    reqs = [e for e in srv.log if e["kind"] == "anthropic"]
    assert len(reqs) == 12 and all(e["n"] == 1 for e in reqs)
    rec = recorded()
    for text, q in rows(math_wh, "SELECT s.completion, p.question FROM samples s "
                                 "JOIN problems p USING (problem_id)"):
        assert text in rec[normalize_question(q)]
    (cost,) = rows(math_wh, "SELECT sum(cost_usd) FROM samples")[0]
    assert cost > 0


def test_truncated_rationales_are_kept_and_flagged(math_wh, serve, keys, prices):
    srv = serve(script=["step " * 50 + "The answer is 3."])
    rep = generate(math_wh, make_spec(srv, prices, samples=2, limit=3, max_tokens=20))
    assert rep.stats.done == 6 and rep.stats.truncated == 6
    got = rows(math_wh, "SELECT finish_reason, completion_tokens, metadata->>'truncated', "
                        "error_class FROM samples")
    assert all(r == ("length", 20, "true", None) for r in got)
    (truncated,) = rows(math_wh, "SELECT truncated FROM run_stats")[0]
    assert truncated == 6
    # kept: a rerun does not pay for them again
    assert generate(math_wh, make_spec(srv, prices, samples=2, limit=3, max_tokens=20)).stats.total == 0


def test_truncated_retry_policy_keeps_the_paid_attempt(math_wh, serve, keys, prices):
    srv = serve(script=["short answer, the answer is 3."], fault_sequence=["length"])
    rep = generate(math_wh, make_spec(srv, prices, samples=1, limit=1, truncated="retry"))
    assert rep.stats.done == 1 and rep.stats.truncated == 0
    assert rows(math_wh, "SELECT finish_reason FROM samples") == [("stop",)]
    att = rows(math_wh, "SELECT error_class, finish_reason, completion IS NOT NULL, cost_usd > 0 "
                        "FROM sample_attempts")
    assert att == [("truncated", "length", True, True)]
    assert rep.stats.spend == pytest.approx(
        rows(math_wh, "SELECT (SELECT sum(cost_usd) FROM samples) + "
                      "(SELECT sum(cost_usd) FROM sample_attempts)")[0][0])


def test_cost_accounting_is_exact(math_wh, serve, keys, prices):
    srv = serve(replay=[str(DEMO_TDG)], fault_sequence=["ok", "length"])
    rep = generate(math_wh, make_spec(srv, prices, samples=3, limit=6))
    billed = [(e["prompt_tokens"], e["completion_tokens"]) for e in srv.log
              if e.get("status") == 200 and e["kind"] == "openai"]
    expected = sum(pt * 1.5 + ct * 4.0 for pt, ct in billed) / 1e6
    stored = rows(math_wh, "SELECT sum(cost_usd), sum(prompt_tokens), sum(completion_tokens) "
                           "FROM samples")[0]
    assert stored[0] == pytest.approx(expected, rel=1e-12)
    assert stored[1] == sum(pt for pt, _ in billed) and stored[2] == sum(ct for _, ct in billed)
    assert rep.stats.spend == pytest.approx(expected, rel=1e-12)
    (run_cost,) = rows(math_wh, "SELECT cost_usd FROM run_stats")[0]
    assert run_cost == pytest.approx(expected, rel=1e-12)


def test_max_cost_stops_dispatching(math_wh, serve, keys, prices):
    srv = serve(replay=[str(DEMO_TDG)])
    spec = make_spec(srv, prices, samples=2, limit=30, concurrency=1, max_cost=0.02)
    rep = generate(math_wh, spec)
    assert rep.stop_reason == "max_cost"
    assert 0 < rep.stats.done < 60 and rep.not_requested == 60 - rep.stats.done
    # dispatch stops before a request whose cost (at the longest answer seen so far)
    # would pass the budget; a longer answer than any before may overshoot a little
    assert rep.stats.spend <= 0.02 * 1.1
    with pytest.raises(CuratorError, match="--prices"):
        generate(math_wh, make_spec(srv, prices, model="unpriced-model", max_cost=1.0))


def test_dry_run_sends_nothing(math_wh, serve, keys, prices):
    srv = serve()
    plan = generate(math_wh, make_spec(srv, prices, samples=8, limit=5), dry_run=True)
    (s,) = plan.summaries
    assert (s.problems, s.missing, s.requests, s.stored) == (5, 40, 5, 0)
    assert s.est_output_tokens == 40 * 1024
    assert s.est_cost_max == pytest.approx((s.est_input_tokens * 1.5 + 40 * 1024 * 4.0) / 1e6)
    assert srv.log == [] and rows(math_wh, "SELECT count(*) FROM runs") == [(0,)]
    batch = generate(math_wh, make_spec(srv, prices, samples=8, limit=5, batch=True), dry_run=True)
    assert batch.summaries[0].est_cost_max == pytest.approx(s.est_cost_max * 0.5)
    assert batch.summaries[0].run_id == s.run_id              # same teacher, same run


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


def test_rate_limits_are_obeyed(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], rpm=600, rate_window_s=1.0)   # 10 per second
    spec = make_spec(srv, prices, samples=1, limit=30, limits=LimitSpec(rpm=600))
    t0 = time.monotonic()
    rep = generate(math_wh, spec)
    assert rep.stats.done == 30 and rep.stats.failures["rate_limit"] == 0
    assert not [e for e in srv.log if e.get("status") == 429]
    assert time.monotonic() - t0 >= 2.5
    assert _max_in_window([e["t"] for e in srv.log], 1.0) <= 10


def test_limits_are_learned_from_headers_and_retry_after_is_honoured(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], rpm=600, rate_window_s=1.0)
    rep = generate(math_wh, make_spec(srv, prices, samples=1, limit=40))
    assert rep.stats.done == 40
    limited = [e for e in srv.log if e.get("status") == 429]
    # only the opening burst, before the first answer taught the limit, is refused
    assert len(limited) <= 16
    later = [e for e in srv.log if e["t"] > srv.log[0]["t"] + 1.5]
    assert later and not [e for e in later if e.get("status") == 429]
    # every refused sample came back no earlier than the server's Retry-After
    for e in limited:
        sid = e["samples"]
        retry = min(x["t"] for x in srv.log if x["samples"] == sid and x["seq"] > e["seq"])
        assert retry >= e["done_t"] + e["retry_after"]


def test_retry_after_delay_is_waited(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], fault_sequence=["429"], retry_after_s=0.6)
    generate(math_wh, make_spec(srv, prices, samples=1, limit=1))
    first, second = [e for e in srv.log if e["kind"] == "openai"]
    assert first["status"] == 429 and second["status"] == 200
    assert second["t"] - first["done_t"] >= 0.6


def test_fleet_skips_an_endpoint_that_keeps_failing(math_wh, serve, keys, prices):
    bad = serve(fault_rates={"500": 1.0})
    good = serve(script=["The answer is 1."], latency_ms=5)
    spec = make_spec(good, prices, samples=1, limit=40, concurrency=4)
    spec.base_urls = [bad.base_url + "/v1", good.base_url + "/v1"]
    rep = generate(math_wh, spec)
    assert rep.stats.done == 40 and rep.stats.failed == 0
    assert len(bad.log) <= 10 < len(good.log)


def test_errors_are_stored_per_sample_and_retried_by_a_later_run(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], fault_rates={"503": 1.0})
    spec = make_spec(srv, prices, samples=2, limit=3, max_attempts=2)
    rep = generate(math_wh, spec)
    assert rep.stats.failed == 6 and rep.stats.done == 0
    assert rows(math_wh, "SELECT DISTINCT error_class, completion FROM samples") == [("server", None)]
    assert rows(math_wh, "SELECT count(*) FROM sample_attempts") == [(12,)]
    httpx2.post(srv.base_url + "/_curator/config", json={"fault_rates": {}})
    rep2 = generate(math_wh, spec)
    assert rep2.stats.done == 6
    assert rows(math_wh, "SELECT count(*), count(completion), count(error_class) FROM samples") == [(6, 6, 0)]


def test_content_filter_is_an_error_retried_later(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], fault_sequence=["content_filter"])
    spec = make_spec(srv, prices, samples=1, limit=2, concurrency=1)
    rep = generate(math_wh, spec)
    assert rep.stats.failed == 1 and rep.stats.final_errors["content_filter"] == 1
    assert rows(math_wh, "SELECT count(*) FROM samples WHERE error_class = 'content_filter' "
                         "AND finish_reason = 'content_filter'") == [(1,)]
    assert generate(math_wh, spec).stats.done == 1


def test_fatal_auth_error_stops_the_run_with_the_key_redacted(math_wh, serve, keys, prices):
    srv = serve(require_key="the-right-key")
    with pytest.raises(CuratorError) as info:
        generate(math_wh, make_spec(srv, prices, samples=2, limit=20, concurrency=2))
    assert "auth" in str(info.value) and keys["openai"] not in str(info.value)
    assert len(srv.log) <= 4
    assert rows(math_wh, "SELECT count(*) FROM samples") == [(0,)]


def test_keys_are_absent_from_every_stored_byte(math_wh, serve, keys, prices, tmp_path):
    srv = serve(replay=[str(DEMO_TDG)], fault_sequence=["echo_key", "echo_key", "500", "ok"],
                fault_rates={"echo_key": 0.3})
    rep = generate(math_wh, make_spec(srv, prices, samples=2, limit=8, max_attempts=3))
    assert rep.stats.failures["server"] > 0
    secret = keys["openai"].encode()
    for f in math_wh.path.parent.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f
    with math_wh.read() as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        for t in tables:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [t]).fetchall()]
            for c in cols:
                n = con.execute(f'SELECT count(*) FROM "{t}" WHERE CAST("{c}" AS VARCHAR) '
                                f"LIKE '%' || ? || '%'", [keys["openai"]]).fetchone()[0]
                assert n == 0, (t, c)
        stored = con.execute("SELECT error FROM sample_attempts WHERE error LIKE '%upstream%'").fetchall()
    assert stored and all("[REDACTED]" in e for (e,) in stored)


def test_a_journal_left_by_a_killed_run_is_stored_and_not_requested_again(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."])
    spec = make_spec(srv, prices, samples=2, limit=2)
    plan = generate(math_wh, spec, dry_run=True)
    from curator.teachers.generate import record_runs
    record_runs(math_wh, plan)
    job = plan.jobs[0]
    d = journal_mod.journal_dir(math_wh)
    d.mkdir()
    recs = [{"table": "samples", "sample_id": sid, "run_id": job.run.run_id,
             "problem_id": job.problem_id, "sample_index": i, "completion": "journaled",
             "finish_reason": "stop"} for sid, i in zip(job.sample_ids(), job.indexes)]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    (d / "generate-1-1-0000.jsonl").write_bytes(lines + b'{"table": "samp')   # torn last line
    rep = generate(math_wh, spec)
    assert rep.replayed == 2 and rep.stats.done == 2
    assert rows(math_wh, "SELECT count(*) FROM samples WHERE completion = 'journaled'") == [(2,)]
    assert not d.exists()
    assert len([e for e in srv.log if e["kind"] == "openai"]) == 1


def test_grade_as_rationales_arrive(math_wh, serve, keys, prices):
    try:
        from curator.grading import grade_pending  # noqa: F401
    except ImportError:
        pytest.skip("curator.grading.grade_pending is not available yet")
    srv = serve(replay=[str(DEMO_TDG)])
    rep = generate(math_wh, make_spec(srv, prices, samples=2, limit=5, grade=True))
    assert rep.grade_error is None and rep.stats.done == 10
    graded, pos, neg = rows(math_wh, "SELECT count(*), count(*) FILTER (WHERE correct), "
                                     "count(*) FILTER (WHERE NOT correct) FROM graded_samples")[0]
    assert graded == 10 and pos + neg == 10 and pos > 0


def test_a_minimal_third_party_server(math_wh, prices, monkeypatch):
    """An OpenAI-compatible server that knows nothing of `n`, ids or usage."""
    import asyncio
    import threading

    from aiohttp import web

    seen = []

    async def chat(request):
        body = await request.json()
        seen.append(body)
        return web.json_response({"choices": [{"message": {"content": "The answer is 1."}}]})

    ready, holder = threading.Event(), {}

    def run():
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["port"] = site._server.sockets[0].getsockname()[1]
        holder["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CURATOR_API_KEY", raising=False)
    try:
        spec = GenerateSpec(provider="openai-compatible", model="mock", samples=3,
                            base_urls=[f"http://127.0.0.1:{holder['port']}/v1"],
                            selection=Selection(limit=4), prices=str(prices))
        rep = generate(math_wh, spec)
    finally:
        holder["loop"].call_soon_threadsafe(holder["loop"].stop)
        t.join(5)
    assert rep.stats.done == 12 and rep.stats.failed == 0
    assert seen[0]["n"] == 3 and "max_tokens" in seen[0]
    # one answer per request whatever was asked; once that is seen, no more `n`
    assert len(seen) == 12 and all("n" not in b for b in seen[4:])
    got = rows(math_wh, "SELECT DISTINCT completion, prompt_tokens, cost_usd FROM samples")
    assert got == [("The answer is 1.", None, None)]               # no usage: no made-up cost
