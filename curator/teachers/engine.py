"""The asyncio generation engine: sends requests for missing samples under a concurrency
limit and rate limits, retries what can be retried, and makes every response durable
(journal first, warehouse in short commits) before it counts as done.

A *job* is one request: one problem, one or more sample indexes (``n`` choices in one
request where the provider supports it, so the prompt is paid once). Workers take jobs
from a queue; a job that must wait (backoff, Retry-After) is put back on the queue by a
timer, so waiting never holds a concurrency slot.
"""

from __future__ import annotations

import asyncio
import gc
import random
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import orjson

from curator.errors import CuratorError, WarehouseBusy
from curator.ids import sample_id, stable_id
from curator.teachers.journal import Journal
from curator.teachers.limits import (DEFAULT_SAFETY, Endpoint, EndpointPool, LimitSpec,
                                     RateLimiter, backoff_delay)
from curator.teachers.pricing import Price, split_tokens
from curator.teachers.prompts import Template
from curator.teachers.providers import (Adapter, Failure, Redactor, Reply, classify, safe_url,
                                        url_secrets)
from curator.warehouse import Warehouse

TRUNCATED_POLICIES = ("keep", "retry")


@dataclass
class RunPlan:
    run_id: str
    provider: str
    model: str
    template: Template
    params: dict                 # temperature, max_tokens, top_p, ... (part of run_id)
    price: Price | None


@dataclass
class Job:
    run: RunPlan
    problem_id: str
    indexes: list[int]
    messages: list[dict]
    prompt_chars: int
    attempt: int = 0             # failed attempts so far

    def sample_ids(self) -> list[str]:
        return [sample_id(self.run.run_id, self.problem_id, i) for i in self.indexes]


@dataclass
class EngineOptions:
    concurrency: int = 64
    limits: LimitSpec = field(default_factory=LimitSpec)
    timeout: float = 120.0
    max_attempts: int = 6
    truncated: str = "keep"
    max_cost: float | None = None
    commit_interval: float = 1.0      # seconds between warehouse commits
    rate_safety: float = DEFAULT_SAFETY
    grade_interval: float = 2.0
    backoff_base: float = 0.5          # seconds; doubles per attempt, full jitter
    backoff_cap: float = 30.0


@dataclass
class Stats:
    """Live counters, read by the progress display."""
    total: int = 0                 # samples this invocation set out to get
    done: int = 0                  # samples durable (rationales, truncated included)
    truncated: int = 0
    failed: int = 0                # samples given up on in this run (stored with an error)
    committed: int = 0             # records written to the warehouse
    requests: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend: float = 0.0
    priced: bool = True
    failures: Counter = field(default_factory=Counter)     # failed attempts by class
    final_errors: Counter = field(default_factory=Counter)  # samples stored as errors
    started: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None
    endpoints_down: list = field(default_factory=list)
    waiting: str | None = None     # why commits are waiting (the warehouse is locked)
    uncommitted: int = 0           # journal records not in the warehouse when the run ended
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # (t, samples, tokens)

    def failed_attempts(self) -> str:
        """Failed attempts by class, commonest first ("connection 4, 429 2"; "none"). An
        attempt is retried until its limit; ``failed`` counts the samples that gave up."""
        parts = [f"{k} {v:,}" for k, v in Counter(dict(self.failures)).most_common()]
        return ", ".join(parts) if parts else "none"

    def rates(self, window: float = 10.0) -> tuple[float, float]:
        """(requests/s, tokens/s) over the last ``window`` seconds. Safe to call from the
        display thread: it works on a snapshot (copying a deque is atomic)."""
        now = time.monotonic()
        recent = [r for r in list(self.recent) if r[0] >= now - window]
        span = min(window, max(1e-3, now - self.started))
        return (len(recent) / span, sum(t for _, _, t in recent) / span)


def _url_secret_values(urls: list[str | None]) -> list[str]:
    from urllib.parse import parse_qsl, urlsplit
    out = []
    for url in urls:
        if url and url_secrets(url):
            parts = urlsplit(url)
            out += [v for v in (parts.password,) if v]
            out += [v for k, v in parse_qsl(parts.query) if k in url_secrets(url)]
    return out


class Engine:
    def __init__(self, wh: Warehouse, adapter: Adapter, base_urls: list[str | None],
                 api_key: str | None, opts: EngineOptions, stats: Stats, journal: Journal,
                 on_commit: Callable[[], None] | None = None,
                 rng: random.Random | None = None) -> None:
        if opts.truncated not in TRUNCATED_POLICIES:
            raise CuratorError(f"--truncated must be one of {', '.join(TRUNCATED_POLICIES)}")
        if opts.concurrency < 1:
            raise CuratorError("--concurrency must be at least 1")
        self.wh = wh
        self.adapter = adapter
        self.opts = opts
        self.stats = stats
        self.journal = journal
        self.on_commit = on_commit
        self.rng = rng or random.Random()
        # Secrets in a URL (a gateway's ?key=...) are redacted from error texts too.
        self.redact = Redactor(api_key, *_url_secret_values(base_urls))
        self.limiter = RateLimiter(opts.limits, opts.rate_safety)
        per_endpoint = max(1, opts.concurrency)
        self.pool = EndpointPool([
            # The endpoint's name, as stored in every sample and attempt: never with
            # the credentials a URL may carry.
            Endpoint(safe_url(url) or "(default)", adapter.make_client(url, api_key, opts.timeout, per_endpoint))
            for url in base_urls])
        self.fatal: Failure | None = None
        self.error: BaseException | None = None
        self._tokens_per_char = 0.35      # calibrated from `usage` as responses arrive
        self._max_completion: float | None = None    # per sample, for --max-cost
        self._reserved_cost = 0.0
        self._spent = 0.0        # as responses arrive (stats.spend counts durable ones)
        self._stopping = False
        self._interrupts = 0
        self._remaining = 0
        self._in_flight_tasks: set[asyncio.Task] = set()
        self._last_grade = 0.0
        self._busy_since: float | None = None
        self.grade_error: BaseException | None = None

    # -- public ----------------------------------------------------------------------

    async def run(self, jobs: list[Job]) -> None:
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._done = asyncio.Event()
        self._commit_stop = asyncio.Event()
        self._remaining = sum(len(j.indexes) for j in jobs)
        for j in jobs:
            self._queue.put_nowait(j)
        if self._remaining == 0:
            self._done.set()
        self.journal.start()
        loop = asyncio.get_running_loop()
        # Thousands of requests in flight allocate many short-lived objects; collecting
        # the young generation less often, and never re-scanning the long-lived heap
        # (modules, the plan), saves a fifth of the client's CPU per request.
        gc_threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(max(gc_threshold[0], 20_000), gc_threshold[1], gc_threshold[2])
        installed = self._install_signals(loop)
        workers = [asyncio.ensure_future(self._worker())
                   for _ in range(min(self.opts.concurrency, max(1, len(jobs))))]
        committer = asyncio.ensure_future(self._commit_loop())
        try:
            await self._done.wait()
        finally:
            self._stopping = True
            for _ in workers:
                self._queue.put_nowait(None)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Not cancelled: a commit cut short would leave its records uncounted.
            self._commit_stop.set()
            await asyncio.gather(committer, return_exceptions=True)
            await self.journal.stop()
            await self._commit_all()
            await self._maybe_grade(force=True)
            for sig in installed:
                loop.remove_signal_handler(sig)
            gc.set_threshold(*gc_threshold)
            gc.unfreeze()
            for ep in self.pool.endpoints:
                try:
                    await ep.client.close()
                except Exception:
                    pass
        if self.error is not None:
            raise self.error

    def stop(self, reason: str) -> None:
        """Stop dispatching; requests in flight finish and are stored."""
        if not self._stopping:
            self._stopping = True
            self.stats.stop_reason = reason
        self._check_done()

    # -- signals -----------------------------------------------------------------------

    def _install_signals(self, loop) -> list:
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (RuntimeError, ValueError, NotImplementedError):
                pass       # not the main thread: the default handling applies
        return installed

    def _on_signal(self, sig) -> None:
        self._interrupts += 1
        if sig == signal.SIGINT and self._interrupts == 1:
            # First Ctrl-C: stop asking, but wait for answers already being generated
            # (the provider bills them whether or not we listen).
            self.stop("interrupted")
            return
        # Second Ctrl-C or SIGTERM: abandon requests in flight; stored ones stay stored.
        self.stats.stop_reason = "interrupted"
        self._stopping = True
        for t in list(self._in_flight_tasks):
            t.cancel()
        self._done.set()

    # -- dispatch ------------------------------------------------------------------------

    def _requeue(self, job: Job) -> None:
        if not self._stopping:
            self._queue.put_nowait(job)

    def _job_cost_estimate(self, job: Job) -> float:
        price = job.run.price
        if price is None:
            return 0.0
        n = len(job.indexes)
        est_in = int(job.prompt_chars * self._tokens_per_char)
        # Until an answer is seen, assume max_tokens; then the longest answer so far.
        per = self._max_completion if self._max_completion is not None else (
            job.run.params.get("max_tokens") or 1024)
        return price.cost(est_in, int(per * n))

    async def _worker(self) -> None:
        while not self._stopping:
            job = await self._queue.get()
            if job is None or self._stopping:
                return
            if self.opts.max_cost is not None:
                est = self._job_cost_estimate(job)
                if self._spent + self._reserved_cost + est > self.opts.max_cost:
                    self.stop("max_cost")
                    return
            else:
                est = 0.0
            task = asyncio.current_task()
            self._reserved_cost += est
            self._in_flight_tasks.add(task)
            self.stats.in_flight += 1
            try:
                await self._attempt(job)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as exc:          # a bug or a warehouse failure: stop cleanly
                self.error = exc
                self.stop("error")
                return
            finally:
                self._reserved_cost -= est
                self._in_flight_tasks.discard(task)
                self.stats.in_flight -= 1
                self._check_done()

    async def _attempt(self, job: Job) -> None:
        max_tokens = job.run.params.get("max_tokens") or 1024
        est_in = int(job.prompt_chars * self._tokens_per_char * 1.05) + 1
        await self.limiter.acquire(est_in, max_tokens * len(job.indexes))
        if self._stopping:
            return                       # stopped while waiting: this job is not sent
        ep = await self.pool.pick()
        try:
            if len(job.indexes) > 1 and (not ep.supports_n or not self.adapter.supports_n):
                # This endpoint answers one choice per request: send the rest separately.
                rest = Job(job.run, job.problem_id, job.indexes[1:], job.messages,
                           job.prompt_chars, job.attempt)
                job = Job(job.run, job.problem_id, job.indexes[:1], job.messages,
                          job.prompt_chars, job.attempt)
                self._queue.put_nowait(rest)
            n = len(job.indexes)
            body = self.adapter.body(job.run.model, job.run.params, job.messages, n)
            ids = job.sample_ids()
            self.stats.requests += 1
            t0 = time.monotonic()
            # --timeout is a deadline on the whole request: the SDKs' own timeout bounds
            # each read, so a server sending a byte every few seconds would hold the
            # request (and a concurrency slot) for as long as it likes.
            deadline = asyncio.timeout(self.opts.timeout)
            try:
                async with deadline:
                    reply = await self.adapter.send(ep.client, body, ids, self.opts.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError) and deadline.expired():
                    failure = Failure("timeout", f"no complete answer within --timeout "
                                                 f"{self.opts.timeout:g}s; abandoned")
                else:
                    failure = classify(exc, self.redact)
                self._on_failure(job, ep, failure, (time.monotonic() - t0) * 1000)
                return
            self._on_reply(job, ep, reply, (time.monotonic() - t0) * 1000,
                                 max_tokens * n)
        finally:
            self.pool.release(ep)

    # -- outcomes ------------------------------------------------------------------------

    def _base(self, job: Job, i: int) -> dict:
        return {"sample_id": sample_id(job.run.run_id, job.problem_id, i),
                "run_id": job.run.run_id, "problem_id": job.problem_id, "sample_index": i}

    def _on_reply(self, job: Job, ep: Endpoint, reply: Reply, latency_ms: float,
                        reserved_out: int) -> None:
        self.limiter.observe(reply.headers)
        self.pool.success(ep)
        choices = reply.choices[: len(job.indexes)]
        k = len(choices)
        if k < len(job.indexes):
            # Fewer choices than asked for: the server ignores `n`. Ask for the rest.
            if k == 1:
                ep.supports_n = False
            self._queue.put_nowait(Job(job.run, job.problem_id, job.indexes[k:], job.messages,
                                       job.prompt_chars, job.attempt))
        pt = int(reply.prompt_tokens or 0)
        ct = int(reply.completion_tokens or 0)
        if self.adapter.refunds_output:
            self.limiter.refund_output(reserved_out, ct)
        if reply.prompt_tokens and job.prompt_chars:
            ratio = reply.prompt_tokens / job.prompt_chars
            self._tokens_per_char = max(0.5 * self._tokens_per_char, 0.9 * self._tokens_per_char
                                        + 0.1 * ratio)
        # A server that reports no usage gets NULL tokens and cost, not a made-up zero.
        usage = reply.prompt_tokens is not None and reply.completion_tokens is not None
        pts = split_tokens(pt, [1] * k) if usage else [None] * k
        cts = split_tokens(ct, [len(t or "") for t, _ in choices]) if usage else [None] * k
        price = job.run.price
        records: list[dict] = []
        retry: list[int] = []
        finals = 0
        truncated = 0
        request_cost = 0.0
        for c, ((text, finish), idx) in enumerate(zip(choices, job.indexes)):
            cost = price.cost(pts[c], cts[c]) if price is not None and usage else None
            request_cost += cost or 0.0
            meta = {"endpoint": ep.url, "attempt": job.attempt + 1, "n": len(job.indexes),
                    "choice": c, "request_prompt_tokens": reply.prompt_tokens,
                    "request_completion_tokens": reply.completion_tokens}
            row = {**self._base(job, idx), "completion": text, "finish_reason": finish,
                   "prompt_tokens": pts[c], "completion_tokens": cts[c], "cost_usd": cost,
                   "latency_ms": latency_ms, "request_id": reply.request_id}
            if finish == "content_filter" or text is None:
                cls = "content_filter" if finish == "content_filter" else "bad_response"
                row.update(completion=None, error_class=cls,
                           error="the provider withheld the completion (content filter)"
                           if cls == "content_filter" else "the response has no text")
                records.append({"table": "samples", **row, "metadata": orjson.dumps(meta).decode()})
                self.stats.final_errors[cls] += 1
                self.stats.failed += 1
                finals += 1
                continue
            if finish == "length":
                if self.opts.truncated == "retry" and job.attempt + 1 < self.opts.max_attempts:
                    records.append({"table": "attempts", **row, "attempt": job.attempt + 1,
                                    "attempt_id": stable_id("a", row["sample_id"], reply.request_id,
                                                            job.attempt, time.time()),
                                    "error_class": "truncated",
                                    "error": "finish_reason length; retried (--truncated retry)",
                                    "endpoint": ep.url})
                    retry.append(idx)
                    self.stats.failures["truncated"] += 1
                    continue
                meta["truncated"] = True
                truncated += 1
            records.append({"table": "samples", **row, "metadata": orjson.dumps(meta).decode()})
            finals += 1
        ok = sum(1 for r in records if r["table"] == "samples" and r.get("completion") is not None)
        self._spent += request_cost

        def durable(err: BaseException | None) -> None:
            # Counted only now that the records are on disk.
            if err is not None:
                self._journal_failed(err)
                return
            self.stats.prompt_tokens += pt
            self.stats.completion_tokens += ct
            self.stats.spend += request_cost
            self.stats.done += ok
            self.stats.truncated += truncated
            self.stats.recent.append((time.monotonic(), finals, pt + ct))
            self._remaining -= finals
            self._check_done()

        # The worker does not wait for the fsync: it takes its next job at once.
        self.journal.append(records, durable)
        if k and usage:
            longest = max(cts)
            self._max_completion = longest if self._max_completion is None else max(
                self._max_completion, longest)
        if retry:
            self._queue.put_nowait(Job(job.run, job.problem_id, retry, job.messages,
                                       job.prompt_chars, job.attempt + 1))

    def _on_failure(self, job: Job, ep: Endpoint, f: Failure, latency_ms: float) -> None:
        self.limiter.observe(f.headers)
        if f.error_class in ("server", "timeout", "connection", "bad_response"):
            self.pool.failure(ep)
            self.stats.endpoints_down = self.pool.down()
        self.stats.failures[f.error_class] += 1
        give_up = f.fatal or not f.retryable or job.attempt + 1 >= self.opts.max_attempts
        records = []
        for idx in job.indexes:
            base = self._base(job, idx)
            common = {"error_class": f.error_class, "error": f.message,
                      "request_id": f.request_id, "latency_ms": latency_ms}
            records.append({"table": "attempts", **base, **common, "attempt": job.attempt + 1,
                            "attempt_id": stable_id("a", base["sample_id"], job.attempt,
                                                    f.request_id, time.time()),
                            "endpoint": ep.url})
            if give_up and not f.fatal:
                records.append({"table": "samples", **base, **common, "metadata": orjson.dumps(
                    {"endpoint": ep.url, "attempts": job.attempt + 1}).decode()})
        n = len(job.indexes)

        def durable(err: BaseException | None) -> None:
            if err is not None:
                self._journal_failed(err)
            elif give_up and not f.fatal:
                self.stats.failed += n
                self.stats.final_errors[f.error_class] += n
                self._remaining -= n
                self._check_done()

        self.journal.append(records, durable)
        if f.fatal:
            self.fatal = f
            self.stop(f"fatal:{f.error_class}")
            return
        if give_up:
            return
        job.attempt += 1
        delay = backoff_delay(job.attempt - 1, base=self.opts.backoff_base,
                              cap=self.opts.backoff_cap, server_hint=f.retry_after, rng=self.rng)
        asyncio.get_running_loop().call_later(delay, self._requeue, job)

    def _journal_failed(self, err: BaseException) -> None:
        if self.error is None:
            self.error = CuratorError(f"cannot write the journal in {self.journal.dir}: {err}; "
                                      "stopping, since no response could be kept safely")
        self.stop("error")

    def _check_done(self) -> None:
        if self._remaining <= 0 or (self._stopping and self.stats.in_flight == 0):
            self._done.set()

    # -- committing ----------------------------------------------------------------------

    def _write(self, records: list[dict]) -> None:
        from curator.teachers.store import write_records
        with self.wh.write() as con:
            write_records(con, records)

    async def _commit_once(self) -> bool:
        batch = self.journal.take()
        if not batch:
            return True
        records = [r for _, rs in batch for r in rs]
        try:
            await asyncio.shield(asyncio.to_thread(self._write, records))
        except WarehouseBusy:
            self.journal.untake(batch)     # still safe in the journal; try again later
            if self._busy_since is None:
                self._busy_since = time.time()
            self.stats.waiting = (
                f"the warehouse is locked by another process (since "
                f"{time.strftime('%H:%M:%S', time.localtime(self._busy_since))}); "
                f"{self.journal.backlog:,} records wait safely in the journal; still trying")
            return False
        self._busy_since = None
        self.stats.waiting = None
        for seg, rs in batch:
            self.journal.committed(seg, len(rs))
        self.stats.committed += len(records)
        return True

    async def _commit_loop(self) -> None:
        while not self._commit_stop.is_set():
            try:
                await asyncio.wait_for(self._commit_stop.wait(), self.opts.commit_interval)
            except (TimeoutError, asyncio.TimeoutError):
                pass
            try:
                await self._commit_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = CuratorError(
                    f"writing to the warehouse failed: {exc}. Every response received is "
                    f"kept in the journal {self.journal.dir} and is stored by the next run.")
                self.stop("error")
                return
            await self._maybe_grade()

    async def _commit_all(self) -> None:
        busy = 0
        for _ in range(100):
            if await self._commit_once():
                if not self.journal.backlog:
                    return
            else:
                # Each try waited the whole lock timeout: after two, the records stay in
                # the journal (safe) for the next run, and the report says so.
                busy += 1
                if busy >= 2:
                    break
            await asyncio.sleep(0.2)
        self.stats.uncommitted = self.journal.backlog

    async def _maybe_grade(self, force: bool = False) -> None:
        """Grade what has been committed (--grade), at most every grade_interval s."""
        if self.on_commit is None:
            return
        now = time.monotonic()
        if self.grade_error is None and (force or now - self._last_grade >= self.opts.grade_interval):
            self._last_grade = now
            try:
                await asyncio.shield(asyncio.to_thread(self.on_commit))
            except WarehouseBusy as exc:
                # A reader holds the warehouse: grading waits (it said so) and is tried
                # again; only the last try at the end of the run counts.
                if force:
                    self.grade_error = exc
                elif not self.stats.waiting:
                    self.stats.waiting = ("grading waits: the warehouse is locked by another "
                                          "process; still trying")
            except Exception as exc:     # generation goes on; the report says grading stopped
                self.grade_error = exc
