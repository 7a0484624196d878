"""Pure parts of the teachers package: pacing, backoff, header learning, endpoint
skipping, prompt templates, prices and token splitting."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.errors import CuratorError, InputError
from curator.teachers.limits import (Endpoint, EndpointPool, LimitSpec, Pace, RateLimiter,
                                     backoff_delay, parse_duration, retry_after)
from curator.teachers.pricing import PriceTable, split_tokens
from curator.teachers.prompts import BUILTIN, family_template, load_template
from curator.teachers.providers import Redactor, api_key


def test_parse_duration_and_retry_after():
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("nonsense") is None
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) is None


def test_backoff_is_full_jitter_and_honours_server_hint():
    rng = random.Random(1)
    delays = [backoff_delay(a, base=0.5, cap=4.0, rng=rng) for a in range(10) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays) > 2.0                       # grows with the attempt number
    assert all(2.0 <= backoff_delay(0, server_hint=2.0, rng=rng) <= 2.2 for _ in range(50))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=0.2), min_size=1, max_size=60),
       st.integers(min_value=30, max_value=6000))
def test_pace_never_exceeds_its_rate_in_any_window(gaps, per_minute):
    """Whatever the arrival pattern, in any window W at most rate*W + 1 requests go."""
    pace = Pace(per_minute, safety=1.0)
    now, sent = 0.0, []
    for g in gaps:
        now = max(now + g, pace.ready_at(now))
        pace.charge(now, 1)
        sent.append(now)
    rate = per_minute / 60
    for i, t in enumerate(sent):
        for w in (0.5, 1.0, 5.0):
            inside = sum(1 for u in sent[i:] if u < t + w)
            assert inside <= rate * w + 1 + 1e-9


def test_rate_limiter_paces_requests():
    async def main():
        lim = RateLimiter(LimitSpec(rpm=600), safety=1.0)       # 10 per second
        t0 = time.monotonic()
        for _ in range(6):
            await lim.acquire(10, 10)
        return time.monotonic() - t0
    assert 0.45 <= asyncio.run(main()) < 1.0


def test_rate_limiter_learns_from_headers_and_pauses_when_exhausted():
    lim = RateLimiter(LimitSpec(rpm=None, output_tpm=5000))
    lim.observe({"x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "10",
                 "x-ratelimit-reset-requests": "1s"})
    assert lim.limits()["requests"] == 300
    lim.observe({"anthropic-ratelimit-output-tokens-limit": "99999",
                 "anthropic-ratelimit-output-tokens-remaining": "0",
                 "anthropic-ratelimit-output-tokens-reset": "2099-01-01T00:00:00Z"})
    assert lim.limits()["output"] == 5000            # the user's limit wins
    assert lim.paces["output"].paused_until > time.monotonic() + 1000


def test_endpoint_pool_skips_an_endpoint_that_keeps_failing():
    a, b = Endpoint("a"), Endpoint("b")
    pool = EndpointPool([a, b], threshold=3)

    async def main():
        for _ in range(3):
            pool.failure(a)
        picks = []
        for _ in range(6):
            ep = await pool.pick()
            picks.append(ep.url)
            pool.release(ep)
        return picks
    assert asyncio.run(main()) == ["b"] * 6
    assert pool.down() == ["a"]
    single = EndpointPool([Endpoint("only")], threshold=3)
    for _ in range(10):
        single.failure(single.endpoints[0])
    assert single.down() == []                       # nowhere else to go: never skipped


def test_templates_render_placeholders_only():
    t = BUILTIN["math-cot"]
    msgs = t.render({"question": "Find $\\frac{1}{2}$ of {x}.", "subject": "Algebra"})
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert msgs[-1]["content"] == "Problem:\nFind $\\frac{1}{2}$ of {x}."
    assert sum(1 for m in msgs if m["role"] == "assistant") == 4
    assert t.prompt_id == BUILTIN["math-cot"].prompt_id != BUILTIN["word-cot"].prompt_id
    assert family_template("gsm8k").name == "word-cot"
    with pytest.raises(CuratorError, match="--prompt"):
        family_template("mystery")


def test_user_templates_from_files(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("Solve: {question}\nAnswer with \\boxed{}.")
    t = load_template(str(txt))
    assert t.render({"question": "1+1"}) == [{"role": "user", "content": "Solve: 1+1\nAnswer with \\boxed{}."}]
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"messages": [{"role": "system", "content": "s"},
                                           {"role": "user", "content": "{question}"}]}))
    assert load_template(str(js)).render({"question": "q"})[1]["content"] == "q"
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [{"role": "user", "content": "no placeholder"}]}')
    with pytest.raises(InputError, match="never uses"):
        load_template(str(bad))
    broken = tmp_path / "broken.json"
    broken.write_text('{"messages": [\n oops]}')
    with pytest.raises(InputError, match="broken.json:2"):
        load_template(str(broken))


def test_price_table_and_override(tmp_path):
    t = PriceTable()
    assert t.lookup("gpt-4o-2024-08-06").model == "gpt-4o"
    assert t.lookup("gpt-4o-mini").model == "gpt-4o-mini"
    assert t.lookup("gpt-4.5-preview") is None
    p = tmp_path / "p.json"
    p.write_text('{"models": {"gpt-4o": {"input": 1, "output": 2}}, "batch_discount": 0.25}')
    price = PriceTable(p).lookup("gpt-4o")
    assert price.cost(1_000_000, 500_000) == pytest.approx(2.0)
    assert price.cost(1_000_000, 500_000, batch=True) == pytest.approx(0.5)
    p.write_text('{"models": {"x": {"input": -1, "output": 2}}}')
    with pytest.raises(InputError, match="x"):
        PriceTable(p)


@given(st.integers(min_value=0, max_value=10**6), st.lists(st.integers(0, 5000), min_size=1, max_size=16))
def test_split_tokens_adds_up_exactly(total, weights):
    parts = split_tokens(total, weights)
    assert sum(parts) == total and len(parts) == len(weights) and min(parts) >= 0


def test_keys_come_from_the_environment_and_are_redacted(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CuratorError, match="OPENAI_API_KEY"):
        api_key("openai")
    monkeypatch.setenv("MY_KEY", "sk-abcdefghijklmnopqrstuvwxyz")
    assert api_key("openai", "MY_KEY") == "sk-abcdefghijklmnopqrstuvwxyz"
    monkeypatch.delenv("CURATOR_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key("openai-compatible") is None        # local servers often need none
    r = Redactor("sk-abcdefghijklmnopqrstuvwxyz")
    assert r("bad key sk-abcdefghijklmnopqrstuvwxyz!") == "bad key [REDACTED]!"
    assert "sk-other" not in r("echo Bearer sk-otherkey1234567890123")
