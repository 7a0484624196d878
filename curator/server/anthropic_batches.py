"""The Anthropic Message Batches API of the local teacher server: create a batch of
message requests, follow it, cancel it, read its results. A mixin of
:class:`curator.server.app.TeacherServer`."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from curator.server.batches import BatchItems
from curator.server.wire import _iso, _jsonl, _page, _rid


class AnthropicMessageBatches(BatchItems):
    """``/v1/messages/batches``."""

    def _message_batch_object(self, b: dict) -> dict:
        keys = ("id", "type", "processing_status", "request_counts", "ended_at", "created_at",
                "expires_at", "archived_at", "cancel_initiated_at", "results_url")
        return {k: b.get(k) for k in keys}

    async def message_batch_create(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        reqs = body.get("requests") or []
        now = time.time()
        b = {"id": _rid("msgbatch_"), "type": "message_batch", "processing_status": "in_progress",
             "request_counts": {"processing": len(reqs), "succeeded": 0, "errored": 0,
                                "canceled": 0, "expired": 0},
             "ended_at": None, "created_at": _iso(now), "expires_at": _iso(now + 86400),
             "archived_at": None, "cancel_initiated_at": None, "results_url": None,
             "_requests": reqs, "_cancel": False, "_results": b""}
        self.message_batches[b["id"]] = b
        self._log_done(self._log_start(request, "message_batch_create"), 200, batch_id=b["id"],
                       items=len(reqs))
        self._spawn(self._run_message_batch(b, f"{request.scheme}://{request.host}"))
        return web.json_response(self._message_batch_object(b))

    async def _run_message_batch(self, b: dict, base: str) -> None:
        await asyncio.sleep(self.config.batch_delay_s)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        lines = []
        expired = False
        for r in b["_requests"]:
            cid = r.get("custom_id")
            if b["_cancel"]:
                counts["canceled"] += 1
                lines.append({"custom_id": cid, "result": {"type": "canceled"}})
                continue
            fault = self._item_fault(b, cid, expired)
            if fault == "expired":
                expired = True
                counts["expired"] += 1
                lines.append({"custom_id": cid, "result": {"type": "expired"}})
            elif fault == "error":
                counts["errored"] += 1
                lines.append({"custom_id": cid, "result": {"type": "errored", "error": {
                    "type": "error", "error": {"type": "api_error",
                                               "message": "server error (injected)"}}}})
            else:
                payload, _ = self._complete_body(r.get("params") or {}, "anthropic")
                counts["succeeded"] += 1
                lines.append({"custom_id": cid, "result": {"type": "succeeded", "message": payload}})
        b["_results"] = _jsonl(lines)
        b["request_counts"] = counts
        b["processing_status"], b["ended_at"] = "ended", _iso(time.time())
        b["results_url"] = f"{base}/v1/messages/batches/{b['id']}/results"

    async def message_batch_list(self, request: web.Request) -> web.Response:
        data = [self._message_batch_object(b) for b in reversed(self.message_batches.values())]
        return web.json_response(_page(data))

    async def message_batch_get(self, request: web.Request) -> web.Response:
        b, missing = self._find(self.message_batches, request, "anthropic", "not_found_error",
                                "no such batch")
        if missing is not None:
            return missing
        return web.json_response(self._message_batch_object(b))

    async def message_batch_cancel(self, request: web.Request) -> web.Response:
        b, missing = self._find(self.message_batches, request, "anthropic", "not_found_error",
                                "no such batch")
        if missing is not None:
            return missing
        if b["processing_status"] == "in_progress":
            b["_cancel"] = True
            b["processing_status"] = "canceling"
            b["cancel_initiated_at"] = _iso(time.time())
        self._log_done(self._log_start(request, "message_batch_cancel"), 200, batch_id=b["id"])
        return web.json_response(self._message_batch_object(b))

    async def message_batch_results(self, request: web.Request) -> web.Response:
        b = self.message_batches.get(request.match_info["batch_id"])
        if b is None or b["processing_status"] != "ended":
            return self._error("anthropic", 404, "not_found_error", "results not available")
        return web.Response(body=b["_results"], content_type="application/binary")
