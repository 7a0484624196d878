"""Provider adapters: how one request is sent with the official ``openai`` and
``anthropic`` async clients, how a response or a failure is read, and where API keys
come from.

Both SDKs are constructed with ``max_retries=0``: retrying, backoff and endpoint choice
belong to the engine (:mod:`curator.teachers.engine`), which sees every attempt and
records it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson

from curator.errors import CuratorError
from curator.teachers.limits import retry_after

PROVIDERS = ("openai", "anthropic", "openai-compatible")
SAMPLE_HEADER = "X-Curator-Sample-Ids"    # lets a test server log which samples it serves

# Error classes stored in samples.error_class / sample_attempts.error_class.
RETRYABLE = {"rate_limit", "server", "timeout", "connection", "bad_response"}
FATAL = {"auth", "not_found"}              # stop the whole run: no request can succeed


@dataclass
class Reply:
    choices: list[tuple[str | None, str]]   # (text, finish reason: stop|length|content_filter|...)
    prompt_tokens: int | None
    completion_tokens: int | None
    request_id: str | None = None
    headers: Any = None


@dataclass
class Failure:
    error_class: str
    message: str
    retry_after: float | None = None
    status: int | None = None
    request_id: str | None = None
    headers: Any = None

    @property
    def retryable(self) -> bool:
        return self.error_class in RETRYABLE

    @property
    def fatal(self) -> bool:
        return self.error_class in FATAL


# -- keys ---------------------------------------------------------------------------

_KEY_ENV = {"openai": ("OPENAI_API_KEY",), "anthropic": ("ANTHROPIC_API_KEY",),
            "openai-compatible": ("CURATOR_API_KEY", "OPENAI_API_KEY")}
# Things that look like credentials, redacted from any text we store or print even
# when they are not the key in use (an upstream may echo another one).
_KEYLIKE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{12,}|\bBearer\s+[A-Za-z0-9_\-.=]{12,}")


def api_key(provider: str, env_name: str | None = None) -> str | None:
    """The API key from the environment (``--api-key-env`` names the variable), never
    from options or files. OpenAI-compatible servers often need none."""
    names = (env_name,) if env_name else _KEY_ENV[provider]
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    if env_name:
        raise CuratorError(f"environment variable {env_name} (from --api-key-env) is not set")
    if provider == "openai-compatible":
        return None
    raise CuratorError(f"no API key: set {names[0]} in the environment "
                       f"(or name another variable with --api-key-env)")


# Query-string parameters that carry credentials in the URLs some gateways take.
_SECRET_PARAMS = {"api_key", "api-key", "apikey", "key", "token", "access_token",
                  "auth", "password", "secret", "sig", "signature", "code"}


def url_secrets(url: str) -> list[str]:
    """What in an endpoint URL is a credential: the userinfo (``user:pass@``) and the
    values of query parameters such as ``api_key``, ``key`` or ``token``."""
    from urllib.parse import parse_qsl, urlsplit
    parts = urlsplit(url)
    found = []
    if parts.username or parts.password:
        found.append("userinfo")
    found += [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)
              if k.lower() in _SECRET_PARAMS]
    return found


def safe_url(url: str | None) -> str | None:
    """The URL as it may be stored, printed or logged: userinfo removed, credential
    query parameters' values replaced by ``REDACTED``."""
    if url is None:
        return None
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port is not None else "")
    except ValueError:
        return "(unparseable URL)"
    query = urlencode([(k, "REDACTED" if k.lower() in _SECRET_PARAMS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Redactor:
    """Removes the key in use, and anything that looks like a key, from text."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for s in self.secrets:
            text = text.replace(s, "[REDACTED]")
        return _KEYLIKE.sub("[REDACTED]", text)


# -- reading responses ---------------------------------------------------------------

_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                   "refusal": "content_filter", "model_context_window_exceeded": "length"}


def openai_reply(obj: Any, headers: Any = None, request_id: str | None = None) -> Reply:
    """A Reply from a chat.completion, as an SDK object or a dict (batch output)."""
    get = (lambda o, k: o.get(k)) if isinstance(obj, dict) else (lambda o, k: getattr(o, k, None))
    choices = get(obj, "choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("response has no choices")
    out = []
    for ch in sorted(choices, key=lambda c: get(c, "index") or 0):
        msg = get(ch, "message")
        text = get(msg, "content") if msg is not None else None
        if text is not None and not isinstance(text, str):
            raise ValueError("choice content is not text")
        out.append((text, get(ch, "finish_reason") or "stop"))
    usage = get(obj, "usage")
    pt = get(usage, "prompt_tokens") if usage is not None else None
    ct = get(usage, "completion_tokens") if usage is not None else None
    return Reply(out, pt, ct, request_id or get(obj, "id"), headers)


def anthropic_reply(obj: Any, headers: Any = None, request_id: str | None = None) -> Reply:
    get = (lambda o, k: o.get(k)) if isinstance(obj, dict) else (lambda o, k: getattr(o, k, None))
    content = get(obj, "content")
    if not isinstance(content, list):
        raise ValueError("response has no content list")
    text = "".join(get(b, "text") or "" for b in content if get(b, "type") == "text")
    stop = get(obj, "stop_reason") or "end_turn"
    finish = _ANTHROPIC_STOP.get(stop, stop)
    usage = get(obj, "usage")
    pt = get(usage, "input_tokens") if usage is not None else None
    ct = get(usage, "output_tokens") if usage is not None else None
    return Reply([(text if finish != "content_filter" or text else None, finish)], pt, ct,
                 request_id or get(obj, "id"), headers)


def _root_cause(exc: BaseException) -> BaseException | None:
    seen, cur = set(), exc.__cause__ or exc.__context__
    last = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        last = cur
        cur = cur.__cause__ or cur.__context__
    return last


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower()


def classify(exc: BaseException, redact: Redactor) -> Failure:
    """Map an exception from either SDK (or from parsing) to an error class."""
    # Only the SDK in use is imported (importing anthropic alone takes seconds).
    sdks = [m for m in (sys.modules.get("openai"), sys.modules.get("anthropic")) if m is not None]

    def of(name: str) -> tuple:
        return tuple(getattr(m, name) for m in sdks)

    headers = None
    response = getattr(exc, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    rid = headers.get("x-request-id") or headers.get("request-id") if headers is not None else None
    msg = redact(f"{type(exc).__name__}: {exc}")[:2000]
    if isinstance(exc, of("APITimeoutError")):
        # The SDKs' aiohttp transport reports a connection the server dropped as a
        # connect timeout; the original exception in the chain tells them apart.
        cause = _root_cause(exc)
        if cause is not None and not _is_timeout(cause):
            return Failure("connection", redact(f"{type(cause).__name__}: {cause}")[:2000])
        return Failure("timeout", msg)
    if isinstance(exc, of("APIConnectionError")):
        return Failure("connection", msg)
    if isinstance(exc, of("APIResponseValidationError")):
        return Failure("bad_response", msg, request_id=rid)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, of("APIStatusError")) and status is not None:
        ra = retry_after(headers)
        if status == 429:
            return Failure("rate_limit", msg, ra, status, rid, headers)
        if status in (401, 403):
            return Failure("auth", msg, None, status, rid, headers)
        if status == 404:
            return Failure("not_found", msg, None, status, rid, headers)
        if status in (408, 409) or status >= 500:
            return Failure("server", msg, ra, status, rid, headers)
        return Failure("bad_request", msg, None, status, rid, headers)
    if isinstance(exc, (json.JSONDecodeError, orjson.JSONDecodeError, ValueError, TypeError,
                        KeyError, AttributeError)):
        return Failure("bad_response", msg)
    if isinstance(exc, tuple(getattr(m, n) for m in sdks for n in ("OpenAIError", "AnthropicError") if hasattr(m, n))):
        return Failure("connection", msg)
    raise exc


# -- adapters ------------------------------------------------------------------------

@dataclass
class Adapter:
    provider: str
    supports_n: bool
    # output tokens reserved at max_tokens are settled on actual use (Anthropic)
    refunds_output: bool
    batch_max_requests: int
    batch_max_bytes: int
    params_extra: dict = field(default_factory=dict)

    def make_client(self, base_url: str | None, key: str | None, timeout: float,
                    max_connections: int):
        raise NotImplementedError

    def body(self, model: str, params: dict, messages: list[dict], n: int) -> dict:
        raise NotImplementedError

    async def send(self, client, body: dict, sample_ids: list[str], timeout: float) -> Reply:
        raise NotImplementedError

    def parse_payload(self, payload: dict, request_id: str | None = None) -> Reply:
        raise NotImplementedError


class OpenAIAdapter(Adapter):
    def __init__(self, compatible: bool) -> None:
        super().__init__("openai-compatible" if compatible else "openai", True, False,
                         50_000, 190 * 1024 * 1024)
        self.compatible = compatible

    def make_client(self, base_url, key, timeout, max_connections):
        import httpx2
        import openai
        http = openai.DefaultAioHttpClient(
            timeout=httpx2.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx2.Limits(max_connections=max_connections,
                                 max_keepalive_connections=max_connections))
        return openai.AsyncOpenAI(api_key=key or "EMPTY", base_url=base_url, max_retries=0,
                                  timeout=timeout, http_client=http)

    def body(self, model, params, messages, n):
        b: dict[str, Any] = {"model": model, "messages": messages}
        if n > 1:
            b["n"] = n
        if params.get("max_tokens") is not None:
            # OpenAI's newer models take only max_completion_tokens; servers that speak
            # the older dialect (vLLM, SGLang) all take max_tokens.
            b["max_tokens" if self.compatible else "max_completion_tokens"] = params["max_tokens"]
        for k in ("temperature", "top_p", "seed", "stop"):
            if params.get(k) is not None:
                b[k] = params[k]
        return b

    async def send(self, client, body, sample_ids, timeout):
        # The client's own POST (auth, headers, status errors, timeouts as usual), with
        # the body we built: `chat.completions.create` would first walk every message
        # through the SDK's typed-dict transform, which costs several milliseconds of
        # CPU per few-shot request and made the client, not the server, the bottleneck.
        import httpx2
        resp = await client.post(
            "/chat/completions", cast_to=httpx2.Response, body=body,
            options={"headers": {SAMPLE_HEADER: ",".join(sample_ids)}, "timeout": timeout,
                     "security": {"bearer_auth": True}})
        return openai_reply(orjson.loads(resp.content), resp.headers,
                            resp.headers.get("x-request-id"))

    def parse_payload(self, payload, request_id=None):
        return openai_reply(payload, None, request_id)


class AnthropicAdapter(Adapter):
    def __init__(self) -> None:
        super().__init__("anthropic", False, True, 100_000, 250 * 1024 * 1024)

    def make_client(self, base_url, key, timeout, max_connections):
        import anthropic
        import httpx2
        http = anthropic.DefaultAioHttpClient(
            timeout=httpx2.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx2.Limits(max_connections=max_connections,
                                 max_keepalive_connections=max_connections))
        return anthropic.AsyncAnthropic(api_key=key, base_url=base_url, max_retries=0,
                                        timeout=timeout, http_client=http)

    def body(self, model, params, messages, n):
        from curator.teachers.prompts import split_system
        system, msgs = split_system(messages)
        b: dict[str, Any] = {"model": model, "max_tokens": params.get("max_tokens") or 1024,
                             "messages": msgs}
        if system:
            b["system"] = system
        for k in ("temperature", "top_p"):
            if params.get(k) is not None:
                b[k] = params[k]
        if params.get("stop") is not None:
            b["stop_sequences"] = params["stop"] if isinstance(params["stop"], list) else [params["stop"]]
        return b

    async def send(self, client, body, sample_ids, timeout):
        # Sampling parameters this SDK no longer types travel in extra_body.
        typed = {k: v for k, v in body.items() if k not in ("temperature", "top_p")}
        extra = {k: body[k] for k in ("temperature", "top_p") if k in body}
        raw = await client.messages.with_raw_response.create(
            **typed, extra_body=extra or None,
            extra_headers={SAMPLE_HEADER: ",".join(sample_ids)}, timeout=timeout)
        msg = await raw.parse()
        return anthropic_reply(msg, raw.headers, raw.headers.get("request-id"))

    def parse_payload(self, payload, request_id=None):
        return anthropic_reply(payload, None, request_id)


def make_adapter(provider: str) -> Adapter:
    if provider == "openai":
        return OpenAIAdapter(compatible=False)
    if provider == "openai-compatible":
        return OpenAIAdapter(compatible=True)
    if provider == "anthropic":
        return AnthropicAdapter()
    raise CuratorError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
