"""Pacing requests under provider limits, backing off after failures, and spreading
requests over a fleet of endpoints.

Rate limits are paced, not burst: each limit (requests, input tokens, output tokens,
combined tokens per minute) is a GCRA schedule that lets a request go once the previous
ones have "paid" for their share of the minute. In any window of W seconds at most
``rate * W`` plus one request's worth is sent, so a provider enforcing the same limit
over any window never has to refuse us. Limits the user did not give are learned from
the providers' rate-limit response headers, and a header saying nothing remains pauses
that limit until its reset time.

Retries are not a loop around the call (as tenacity would give): a request that must
wait goes back to the dispatch queue with a ready time, so a backing-off request does
not hold one of the concurrency slots while it waits. The delay is exponential backoff
with full jitter (0..min(cap, base * 2^attempt)), or the server's Retry-After when it
sends one.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

# A small margin under a limit: the client cannot see when its request reaches the
# server, only when it leaves.
DEFAULT_SAFETY = 0.95

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations ('1s', '6m0s', '20ms', '1h2m3.5s') in seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def parse_reset(text: str, now_wall: float | None = None) -> float | None:
    """Seconds until a reset given as a duration or an RFC 3339 time (Anthropic)."""
    d = parse_duration(text)
    if d is not None:
        return d
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return max(0.0, t - (time.time() if now_wall is None else now_wall))


def retry_after(headers) -> float | None:
    """The server's requested wait, from retry-after-ms or retry-after (seconds or date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            from email.utils import parsedate_to_datetime
            try:
                return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0,
                  server_hint: float | None = None, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor, plus up to 10%
    jitter so that many requests told the same time do not return together."""
    r = rng or random
    if server_hint is not None:
        return server_hint * (1.0 + 0.1 * r.random())
    return r.uniform(0, min(cap, base * (2 ** attempt)))


class Pace:
    """One per-minute limit as a GCRA schedule (``tat``: when the next unit is due)."""

    def __init__(self, per_minute: float | None, safety: float = DEFAULT_SAFETY,
                 learned: bool = False) -> None:
        self.safety = safety
        self.per_minute = per_minute
        self.learned = learned
        self.tat = 0.0
        self.paused_until = 0.0

    @property
    def rate(self) -> float | None:
        return None if not self.per_minute else self.per_minute * self.safety / 60.0

    def ready_at(self, now: float) -> float:
        return max(self.paused_until, self.tat if self.rate else 0.0)

    def charge(self, now: float, amount: float) -> None:
        if self.rate:
            self.tat = max(self.tat, now) + amount / self.rate

    def refund(self, now: float, amount: float) -> None:
        if self.rate and amount > 0:
            self.tat = max(now, self.tat - amount / self.rate)


@dataclass
class LimitSpec:
    rpm: float | None = None          # requests per minute
    tpm: float | None = None          # input + output tokens per minute (OpenAI's TPM)
    input_tpm: float | None = None
    output_tpm: float | None = None


class RateLimiter:
    """Requests wait here before they are sent. One per generation (limits belong to an
    account and key, not to a connection)."""

    KINDS = ("requests", "tokens", "input", "output")

    def __init__(self, spec: LimitSpec | None = None, safety: float = DEFAULT_SAFETY) -> None:
        spec = spec or LimitSpec()
        self.paces = {"requests": Pace(spec.rpm, safety), "tokens": Pace(spec.tpm, safety),
                      "input": Pace(spec.input_tpm, safety),
                      "output": Pace(spec.output_tpm, safety)}
        self.user_set = {k: v.per_minute is not None for k, v in self.paces.items()}
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def limits(self) -> dict[str, float | None]:
        return {k: p.per_minute for k, p in self.paces.items()}

    async def acquire(self, input_tokens: int, output_tokens: int) -> None:
        """Wait until a request of this size may go, then charge it. FIFO: one waiter
        at a time, so a large request is not starved by small ones."""
        amounts = {"requests": 1, "tokens": input_tokens + output_tokens,
                   "input": input_tokens, "output": output_tokens}
        async with self._lock:
            while True:
                now = time.monotonic()
                ready = max(p.ready_at(now) for p in self.paces.values())
                if ready <= now:
                    break
                self.waited_s += ready - now
                await asyncio.sleep(ready - now)
            now = time.monotonic()
            for k, p in self.paces.items():
                p.charge(now, amounts[k])

    def refund_output(self, reserved: int, used: int) -> None:
        """Give back output tokens reserved (max_tokens x n) but not generated, for
        providers that settle output-token limits on actual use (Anthropic)."""
        now = time.monotonic()
        for k in ("output", "tokens"):
            self.paces[k].refund(now, reserved - used)

    def observe(self, headers) -> None:
        """Learn limits and exhaustion from rate-limit response headers (OpenAI's
        ``x-ratelimit-*`` and Anthropic's ``anthropic-ratelimit-*``)."""
        if headers is None:
            return
        now = time.monotonic()
        groups = (
            ("requests", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
             "x-ratelimit-reset-requests"),
            ("tokens", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
             "x-ratelimit-reset-tokens"),
            ("requests", "anthropic-ratelimit-requests-limit",
             "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
            ("tokens", "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining",
             "anthropic-ratelimit-tokens-reset"),
            ("input", "anthropic-ratelimit-input-tokens-limit",
             "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
            ("output", "anthropic-ratelimit-output-tokens-limit",
             "anthropic-ratelimit-output-tokens-remaining",
             "anthropic-ratelimit-output-tokens-reset"),
        )
        for kind, lim_h, rem_h, reset_h in groups:
            lim = headers.get(lim_h)
            if lim is None:
                continue
            p = self.paces[kind]
            try:
                limit = float(lim)
            except ValueError:
                continue
            if not self.user_set[kind] and limit > 0 and limit != p.per_minute:
                p.per_minute = limit
                p.learned = True
            rem = headers.get(rem_h)
            reset = headers.get(reset_h)
            if rem is not None and reset is not None:
                try:
                    remaining = float(rem)
                except ValueError:
                    continue
                if remaining <= 0:
                    wait = parse_reset(reset)
                    if wait:
                        p.paused_until = max(p.paused_until, now + wait)


@dataclass
class Endpoint:
    url: str
    client: object = None
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    times_down: int = 0
    down_until: float = 0.0
    supports_n: bool = True
    extra: dict = field(default_factory=dict)


class EndpointPool:
    """The endpoints of a generation. Requests go to the healthy endpoint with the fewest
    requests in flight. With several endpoints, one that fails ``threshold`` times in a
    row (server errors, timeouts, dropped connections, not rate limits) is skipped for a
    cool-down that doubles each time (2 s .. 60 s); with a single endpoint there is
    nothing to skip to, and per-request backoff does the work."""

    def __init__(self, endpoints: list[Endpoint], threshold: int = 5) -> None:
        self.endpoints = endpoints
        self.threshold = threshold
        self._rr = 0

    def healthy(self, now: float) -> list[Endpoint]:
        return [e for e in self.endpoints if e.down_until <= now]

    async def pick(self) -> Endpoint:
        while True:
            now = time.monotonic()
            live = self.healthy(now)
            if live:
                self._rr += 1
                # fewest in flight; ties broken round-robin so idle endpoints share load
                best = min(live, key=lambda e: (e.in_flight, (self.endpoints.index(e) - self._rr)
                                                % len(self.endpoints)))
                best.in_flight += 1
                best.requests += 1
                return best
            await asyncio.sleep(max(0.01, min(e.down_until for e in self.endpoints) - now))

    def release(self, ep: Endpoint) -> None:
        ep.in_flight -= 1

    def success(self, ep: Endpoint) -> None:
        ep.consecutive_failures = 0
        ep.times_down = 0

    def failure(self, ep: Endpoint) -> None:
        ep.failures += 1
        ep.consecutive_failures += 1
        if len(self.endpoints) > 1 and ep.consecutive_failures >= self.threshold:
            ep.down_until = time.monotonic() + min(60.0, 2.0 * (2 ** ep.times_down))
            ep.times_down += 1
            ep.consecutive_failures = 0

    def down(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [e.url for e in self.endpoints if e.down_until > now]
