"""The local teacher server: OpenAI chat completions (with ``n``), files and batches, and
Anthropic messages and message batches, over HTTP on 127.0.0.1.

It exists so that tests, benchmarks and the README's main job can drive the *real*
``openai`` and ``anthropic`` clients with no network and no key. Latency, rate limits
and faults (429 with Retry-After, 500/503, hangs, dropped connections, malformed JSON,
truncation, content filtering) are injected on request. Every request is logged (in
memory, served at ``GET /_curator/requests``, and optionally as JSONL) so a test can
prove what a client did and did not ask for. The log never holds request headers, so
an API key sent to the server is not written anywhere.

This module holds the server itself (lifecycle, routing, the request log, faults and
rate limits, the chat completions and messages endpoints, admin); the batch APIs are
mixins by wire format: :mod:`curator.server.openai_batches` (files and batches) and
:mod:`curator.server.anthropic_batches` (message batches), on the per-item work they share
in :mod:`curator.server.batches`; small wire helpers are in :mod:`curator.server.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
import time
from collections import deque
from pathlib import Path

import orjson
from aiohttp import web

from curator.errors import CuratorError
from curator.paths import atomic_write
from curator.server.anthropic_batches import AnthropicMessageBatches
from curator.server.config import FAULTS, ServerConfig
from curator.server.openai_batches import OpenAIFilesAndBatches
from curator.server.responder import Completion, Library, Responder
from curator.server.wire import _iso, _prompt_of, _rid

SAMPLE_HEADER = "X-Curator-Sample-Ids"
LOG_KEEP = 500_000


class _Window:
    """Amounts spent in the last ``window`` seconds (a sliding window)."""

    def __init__(self) -> None:
        self.events: deque[list] = deque()   # [t, amount]
        self.total = 0.0

    def expire(self, now: float, window: float) -> None:
        while self.events and self.events[0][0] <= now - window:
            self.total -= self.events.popleft()[1]

    def add(self, now: float, amount: float) -> list:
        ev = [now, amount]
        self.events.append(ev)
        self.total += amount
        return ev

    def adjust(self, ev: list, amount: float) -> None:
        if self.events and self.events[0][0] <= ev[0]:
            self.total += amount - ev[1]
        ev[1] = amount

    def reset_in(self, now: float, window: float) -> float:
        return max(0.0, self.events[0][0] + window - now) if self.events else 0.0


class _Limited(Exception):
    def __init__(self, what: str, retry_after: float):
        self.what = what
        self.retry_after = retry_after


def _openai_duration(s: float) -> str:
    if s < 1:
        return f"{int(s * 1000)}ms"
    m, sec = divmod(s, 60)
    return f"{int(m)}m{sec:.3f}s" if m else f"{sec:.3f}s"


class TeacherServer(OpenAIFilesAndBatches, AnthropicMessageBatches):
    """One server instance. ``async start()`` inside a running loop, or
    :meth:`start_in_thread` from synchronous code (tests)."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = (config or ServerConfig()).validate()
        if self.config.teacher == "synthetic":
            from curator.server.synthetic_teacher import SyntheticResponder
            self.responder = SyntheticResponder(self.config.error_rate, self.config.seed)
        else:
            self.responder = Responder(Library.from_files(self.config.replay),
                                       self.config.script or None, self.config.pad_tokens)
        self.rng = random.Random(self.config.seed)
        # The request log in memory: the newest LOG_KEEP entries (a long-running server
        # must not grow without bound); ``seq`` keeps counting across trims.
        self.log: list[dict] = []
        self.log_base = 0            # seq of self.log[0]
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.message_batches: dict[str, dict] = {}
        self._windows = {k: _Window() for k in ("requests", "input", "output")}
        self._log_fh = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self.base_url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        r = app.router
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/chat/completions", self.chat_completions)
        r.add_get("/v1/models", self.models)
        r.add_post("/v1/files", self.file_upload)
        r.add_get("/v1/files/{file_id}", self.file_get)
        r.add_get("/v1/files/{file_id}/content", self.file_content)
        r.add_post("/v1/batches", self.batch_create)
        r.add_get("/v1/batches", self.batch_list)
        r.add_get("/v1/batches/{batch_id}", self.batch_get)
        r.add_post("/v1/batches/{batch_id}/cancel", self.batch_cancel)
        r.add_post("/v1/messages", self.messages)
        r.add_post("/v1/messages/batches", self.message_batch_create)
        r.add_get("/v1/messages/batches", self.message_batch_list)
        r.add_get("/v1/messages/batches/{batch_id}", self.message_batch_get)
        r.add_post("/v1/messages/batches/{batch_id}/cancel", self.message_batch_cancel)
        r.add_get("/v1/messages/batches/{batch_id}/results", self.message_batch_results)
        r.add_get("/_curator/requests", self.admin_requests)
        r.add_get("/_curator/config", self.admin_get_config)
        r.add_post("/_curator/config", self.admin_set_config)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self.config.log_path:
            Path(self.config.log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log_fh = open(self.config.log_path, "ab")
        # handler_cancellation: a client that hangs up (timeout, kill) must not leave
        # the handler sleeping on its behalf.
        self._runner = web.AppRunner(self.make_app(), access_log=None,
                                     handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]  # the port the OS chose when port=0
        self.base_url = f"http://{host}:{sock.getsockname()[1]}"
        return self.base_url

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a daemon thread with its own event loop; returns the base URL."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start(host, port))
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="teacher-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self.base_url

    def stop_thread(self) -> None:
        """Stop a server started with :meth:`start_in_thread` (idempotent)."""
        if self._loop is not None and self._thread is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> "TeacherServer":
        self.start_in_thread()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_thread()

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- request log ---------------------------------------------------------------

    def _log_start(self, request: web.Request, kind: str, **fields) -> dict:
        entry = {"seq": self.log_base + len(self.log), "t": time.time(), "kind": kind,
                 "path": request.path, "samples": request.headers.get(SAMPLE_HEADER), **fields}
        self._append_log(entry)
        return entry

    def _append_log(self, entry: dict) -> None:
        self.log.append(entry)
        if len(self.log) > 2 * LOG_KEEP:
            drop = len(self.log) - LOG_KEEP
            del self.log[:drop]
            self.log_base += drop

    def _log_done(self, entry: dict, status: int, **fields) -> None:
        entry.update(status=status, done_t=time.time(), **fields)
        if self._log_fh is not None:
            self._log_fh.write(orjson.dumps(entry) + b"\n")
            self._log_fh.flush()

    # -- faults and limits -------------------------------------------------------

    def _draw_fault(self) -> str:
        if self.config.fault_sequence:
            return self.config.fault_sequence.pop(0)
        u = self.rng.random()
        acc = 0.0
        for name in FAULTS:
            acc += self.config.fault_rates.get(name, 0.0)
            if u < acc:
                return name
        return "ok"

    def _admit(self, input_tokens: int, output_tokens: int) -> dict[str, list]:
        """Charge a request against the sliding windows, or raise _Limited."""
        c = self.config
        now = time.monotonic()
        scale = c.rate_window_s / 60.0
        amounts = {"requests": 1, "input": input_tokens, "output": output_tokens}
        limits = {"requests": c.rpm, "input": c.input_tpm, "output": c.output_tpm}
        for k, limit in limits.items():
            if limit is None:
                continue
            w = self._windows[k]
            w.expire(now, c.rate_window_s)
            if w.total + amounts[k] > limit * scale:
                retry = w.reset_in(now, c.rate_window_s) if w.events else c.rate_window_s
                raise _Limited(k, max(retry, 0.001))
        return {k: self._windows[k].add(now, amounts[k])
                for k, limit in limits.items() if limit is not None}

    def _rate_headers(self, dialect: str) -> dict[str, str]:
        c = self.config
        now = time.monotonic()
        scale = c.rate_window_s / 60.0
        h: dict[str, str] = {}
        names = {"openai": {"requests": "requests", "input": "input-tokens", "output": "output-tokens"},
                 "anthropic": {"requests": "requests", "input": "input-tokens", "output": "output-tokens"}}[dialect]
        for k, limit in (("requests", c.rpm), ("input", c.input_tpm), ("output", c.output_tpm)):
            if limit is None:
                continue
            w = self._windows[k]
            w.expire(now, c.rate_window_s)
            remaining = max(0, int(limit * scale - w.total))
            reset = w.reset_in(now, c.rate_window_s)
            if dialect == "openai":
                name = {"requests": "requests", "input": "tokens", "output": "output-tokens"}[k]
                h[f"x-ratelimit-limit-{name}"] = str(limit)
                h[f"x-ratelimit-remaining-{name}"] = str(remaining)
                h[f"x-ratelimit-reset-{name}"] = _openai_duration(reset)
            else:
                name = names[k]
                h[f"anthropic-ratelimit-{name}-limit"] = str(limit)
                h[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
                h[f"anthropic-ratelimit-{name}-reset"] = _iso(time.time() + reset)
        return h

    # -- shared request path -------------------------------------------------------

    def _error(self, dialect: str, status: int, kind: str, message: str,
               headers: dict | None = None) -> web.Response:
        if dialect == "openai":
            body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        else:
            body = {"type": "error", "error": {"type": kind, "message": message}}
        rid = _rid("req_")
        hdrs = {"x-request-id" if dialect == "openai" else "request-id": rid, **(headers or {})}
        return web.Response(status=status, body=orjson.dumps(body),
                            content_type="application/json", headers=hdrs)

    async def _generate(self, request: web.Request, dialect: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            entry = self._log_start(request, dialect)
            self._log_done(entry, 400, fault="bad_json")
            return self._error(dialect, 400, "invalid_request_error", "request body is not JSON")
        n = int(body.get("n") or 1) if dialect == "openai" else 1
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        prompt, prompt_tokens = _prompt_of(body, dialect)
        entry = self._log_start(request, dialect, model=body.get("model"), n=n,
                                max_tokens=max_tokens)

        if self.config.require_key is not None:
            key = (request.headers.get("x-api-key")
                   or request.headers.get("Authorization", "").removeprefix("Bearer "))
            if key != self.config.require_key:
                self._log_done(entry, 401, fault="auth")
                return self._error(dialect, 401, "authentication_error", "invalid API key")
        if dialect == "anthropic" and not max_tokens:
            self._log_done(entry, 400, fault="bad_request")
            return self._error(dialect, 400, "invalid_request_error", "max_tokens: Field required")

        n_served = min(n, self.config.n_max)
        try:
            charges = self._admit(prompt_tokens, (max_tokens or 0) * n_served)
        except _Limited as lim:
            self._log_done(entry, 429, fault=f"rate_limit_{lim.what}", retry_after=lim.retry_after)
            return self._error(dialect, 429, "rate_limit_error" if dialect == "anthropic"
                               else "rate_limit_exceeded",
                               f"Rate limit reached for {lim.what}; retry after {lim.retry_after:.3f}s",
                               {"retry-after": f"{max(1, round(lim.retry_after))}",
                                "retry-after-ms": f"{lim.retry_after * 1000:.0f}",
                                **self._rate_headers(dialect)})

        fault = self._draw_fault()
        entry["fault"] = fault           # known even if the client hangs up before the end
        delay = self.config.latency_ms / 1000.0
        if self.config.latency_jitter_ms:
            delay += self.rng.random() * self.config.latency_jitter_ms / 1000.0
        if fault == "hang":
            delay = max(delay, self.config.hang_s)
        if delay > 0:
            await asyncio.sleep(delay)

        if fault == "drop":
            self._log_done(entry, 0, fault=fault)
            # Abort the TCP connection without an answer, as a crashing server would.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        if fault == "429":
            ra = self.config.retry_after_s
            self._log_done(entry, 429, fault=fault, retry_after=ra)
            return self._error(dialect, 429, "rate_limit_error" if dialect == "anthropic"
                               else "rate_limit_exceeded", "Rate limit reached (injected)",
                               {"retry-after": f"{max(0, round(ra))}",
                                "retry-after-ms": f"{ra * 1000:.0f}"})
        if fault in ("500", "503"):
            self._log_done(entry, int(fault), fault=fault)
            kind = "api_error" if fault == "500" else "overloaded_error"
            return self._error(dialect, int(fault), kind, f"The server had an error (injected {fault})")
        if fault == "echo_key":
            # A careless upstream that repeats the credential in an error message.
            key = (request.headers.get("x-api-key")
                   or request.headers.get("Authorization", "").removeprefix("Bearer "))
            self._log_done(entry, 500, fault=fault)
            return self._error(dialect, 500, "api_error", f"upstream failed for key {key}")

        try:
            key, comps = self.responder.respond(prompt, n_served, max_tokens,
                                                force_length=(fault == "length"))
        except CuratorError as exc:      # a programmatic teacher that cannot answer
            self._log_done(entry, 400, fault="bad_request")
            return self._error(dialect, 400, "invalid_request_error", str(exc))
        if fault == "content_filter":
            comps = [Completion("", "content_filter", 0, False) for _ in comps]
        completion_tokens = sum(c.completion_tokens for c in comps)
        if dialect == "anthropic" and "output" in charges:
            self._windows["output"].adjust(charges["output"], completion_tokens)
        rid = _rid("req_")
        if dialect == "openai":
            payload = {
                "id": _rid("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "system_fingerprint": "curator-teacher-server",
                "choices": [{"index": i, "logprobs": None, "finish_reason": c.finish_reason,
                             "message": {"role": "assistant", "refusal": None,
                                         "content": c.text if c.finish_reason != "content_filter" else None}}
                            for i, c in enumerate(comps)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}
            headers = {"x-request-id": rid, **self._rate_headers("openai")}
        else:
            c = comps[0]
            stop = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}[c.finish_reason]
            payload = {
                "id": _rid("msg_"), "type": "message", "role": "assistant",
                "model": body.get("model"), "stop_reason": stop, "stop_sequence": None,
                "content": [{"type": "text", "text": c.text}] if c.text else [],
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}
            headers = {"request-id": rid, **self._rate_headers("anthropic")}
        data = orjson.dumps(payload)
        if fault == "malformed":
            data = data[: max(1, len(data) // 2)]
        self._log_done(entry, 200, fault=fault, question=key is not None,
                       prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                       request_id=rid, finish_reasons=[c.finish_reason for c in comps])
        if fault == "trickle":
            # A correct answer, one byte at a time: every read a client makes gets a
            # byte well within any per-read timeout, so only a deadline on the whole
            # request ends it.
            resp = web.StreamResponse(status=200, headers=headers)
            resp.content_type = "application/json"
            resp.content_length = len(data)
            await resp.prepare(request)
            for i in range(len(data)):
                await resp.write(data[i:i + 1])
                await asyncio.sleep(self.config.trickle_s)
            await resp.write_eof()
            return resp
        return web.Response(body=data, content_type="application/json", headers=headers)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "openai")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "anthropic")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "teacher", "object": "model", "created": 0, "owned_by": "curator"}]})

    # -- admin ---------------------------------------------------------------------

    async def admin_requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", 0))
        start = max(0, since - self.log_base)
        return web.Response(body=orjson.dumps(self.log[start:]), content_type="application/json")

    async def admin_get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.as_dict())

    async def admin_set_config(self, request: web.Request) -> web.Response:
        # Reconfiguring the server is for the test or script that started it, never for
        # a web page the user happens to visit: a page may POST a text/plain or form
        # body to 127.0.0.1 without any preflight, so only a JSON body is accepted (a
        # cross-origin JSON POST needs a CORS preflight, which this server never
        # grants) and a request a browser marks as coming from another origin is refused.
        refused = _cross_origin(request)
        if refused:
            return web.json_response({"error": refused}, status=403)
        if request.content_type != "application/json":
            return web.json_response(
                {"error": f"POST /_curator/config takes an application/json body, not "
                          f"{request.content_type or 'no content type'}"}, status=415)
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return web.json_response({"error": f"the body is not JSON: {exc}"}, status=400)
        if not isinstance(changes, dict):
            return web.json_response({"error": "the body must be a JSON object of settings"},
                                     status=400)
        try:
            self.config.update(changes)
        except CuratorError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if "seed" in changes:
            self.rng = random.Random(self.config.seed)
        return web.json_response(self.config.as_dict())


def _cross_origin(request: web.Request) -> str | None:
    """Why a browser-made request comes from another site, or None. Browsers send
    ``Origin`` on every cross-origin POST (and ``Sec-Fetch-Site``); scripts and the SDK
    clients send neither."""
    origin = request.headers.get("Origin")
    if origin is not None:
        from urllib.parse import urlsplit
        try:
            o = urlsplit(origin)
            same = (o.scheme in ("http", "https") and o.netloc.lower() == request.host.lower())
        except ValueError:
            same = False
        if not same:
            return (f"cross-origin request refused (Origin {origin!r} is not "
                    f"http://{request.host})")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-origin request refused (Sec-Fetch-Site: {site})"
    return None


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 0,
          port_file: str | None = None, announce=print) -> None:
    """Run a server until interrupted (the `curator serve` command)."""

    if not 0 <= port <= 65535:
        raise CuratorError(f"--port {port}: a port is a number from 0 to 65535 (0: any free port)")

    async def main() -> None:
        srv = TeacherServer(config)
        try:
            url = await srv.start(host, port)
        except OSError as e:
            await srv.stop()
            raise CuratorError(f"cannot listen on {host}:{port}: {e.strerror or e} "
                               "(is another server using that port? pick another --port, "
                               "or 0 for any free port)") from None
        if port_file:
            with atomic_write(Path(port_file)) as fh:
                fh.write(url + "\n")
        what = (f"synthetic teacher, error rate {config.error_rate:g}, seed {config.seed}"
                if config.teacher == "synthetic"
                else f"{len(srv.responder.library)} recorded question(s)")
        announce(f"teacher server on {url} (OpenAI base URL {url}/v1, Anthropic base URL "
                 f"{url}); {what}; Ctrl-C stops it")
        # SIGTERM (what `kill` and a script's trap send; background jobs of a
        # non-interactive shell ignore SIGINT) stops it as cleanly as Ctrl-C
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            await srv.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

