"""Small helpers of the local teacher server's wire formats, shared by the server
(:mod:`curator.server.app`) and its batch routes (:mod:`curator.server.batches`,
:mod:`curator.server.openai_batches`, :mod:`curator.server.anthropic_batches`): ids,
timestamps, the text of a message's content, JSONL bodies and list pages."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import orjson

from curator.server.responder import count_tokens


def _rid(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _content_text(content) -> str:
    """Text of a chat message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(orjson.dumps(x) + b"\n" for x in rows)


def _page(data: list[dict], **extra) -> dict:
    """One page of a list endpoint: the whole list (enough for a local server)."""
    return {**extra, "data": data, "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def _prompt_of(body: dict, dialect: str) -> tuple[str, int]:
    """What a chat request asks: the text of its last user message (what the responder
    answers) and the prompt tokens of all its messages (and of Anthropic's system prompt)."""
    messages = body.get("messages") or []
    user_msgs = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    prompt = _content_text(user_msgs[-1].get("content")) if user_msgs else ""
    all_text = "\n".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
    if dialect == "anthropic" and body.get("system"):
        all_text = _content_text(body["system"]) + "\n" + all_text
    return prompt, count_tokens(all_text)
