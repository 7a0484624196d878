"""The OpenAI Files and Batch API of the local teacher server: upload an input file,
create a batch, follow it, cancel it, download its output and error files. A mixin of
:class:`curator.server.app.TeacherServer`."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from curator.server.batches import BatchItems
from curator.server.wire import _jsonl, _page, _rid


class OpenAIFilesAndBatches(BatchItems):
    """``/v1/files`` and ``/v1/batches``."""

    def _file_object(self, f: dict) -> dict:
        return {"id": f["id"], "object": "file", "bytes": len(f["data"]),
                "created_at": f["created_at"], "filename": f["filename"],
                "purpose": f["purpose"], "status": "processed", "expires_at": None,
                "status_details": None}

    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict:
        f = {"id": _rid("file-"), "data": data, "filename": filename, "purpose": purpose,
             "created_at": int(time.time())}
        self.files[f["id"]] = f
        return f

    async def file_upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        up = form.get("file")
        if up is None or not hasattr(up, "file"):
            return self._error("openai", 400, "invalid_request_error", "missing file")
        f = self._new_file(up.file.read(), up.filename or "upload.jsonl",
                           str(form.get("purpose", "batch")))
        self._log_done(self._log_start(request, "file_upload"), 200, file_id=f["id"],
                       bytes=len(f["data"]))
        return web.json_response(self._file_object(f))

    async def file_get(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None:
            return self._error("openai", 404, "not_found", "no such file")
        return web.json_response(self._file_object(f))

    async def file_content(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None:
            return self._error("openai", 404, "not_found", "no such file")
        return web.Response(body=f["data"], content_type="application/octet-stream")

    def _batch_object(self, b: dict) -> dict:
        keys = ("id", "object", "endpoint", "input_file_id", "completion_window", "status",
                "output_file_id", "error_file_id", "created_at", "in_progress_at",
                "expires_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
                "cancelled_at", "finalizing_at", "request_counts", "metadata", "errors")
        return {k: b.get(k) for k in keys}

    async def batch_create(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        f = self.files.get(body.get("input_file_id"))
        if f is None:
            return self._error("openai", 400, "invalid_request_error",
                               f"input file {body.get('input_file_id')} not found")
        try:
            lines = [orjson.loads(x) for x in f["data"].splitlines() if x.strip()]
        except orjson.JSONDecodeError:
            return self._error("openai", 400, "invalid_request_error", "input file is not JSONL")
        now = int(time.time())
        b = {"id": _rid("batch_"), "object": "batch", "endpoint": body.get("endpoint"),
             "input_file_id": f["id"], "completion_window": body.get("completion_window", "24h"),
             "status": "validating", "created_at": now, "expires_at": now + 86400,
             "metadata": body.get("metadata"), "errors": None,
             "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
             "_lines": lines, "_cancel": False}
        self.batches[b["id"]] = b
        self._log_done(self._log_start(request, "batch_create"), 200, batch_id=b["id"],
                       items=len(lines))
        self._spawn(self._run_openai_batch(b))
        return web.json_response(self._batch_object(b))

    async def _run_openai_batch(self, b: dict) -> None:
        b["status"], b["in_progress_at"] = "in_progress", int(time.time())
        await asyncio.sleep(self.config.batch_delay_s)
        out, err = [], []
        expired = False
        for line in b["_lines"]:
            cid = line.get("custom_id")
            if b["_cancel"]:
                break
            fault = self._item_fault(b, cid, expired)
            if fault == "expired":
                expired = True
                err.append({"id": _rid("batch_req_"), "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could "
                                      "not be executed before the completion window expired."}})
            elif fault == "error":
                err.append({"id": _rid("batch_req_"), "custom_id": cid,
                            "response": {"status_code": 500, "request_id": _rid("req_"),
                                         "body": {"error": {"message": "server error (injected)",
                                                            "type": "server_error"}}},
                            "error": None})
            else:
                payload, rid = self._complete_body(line.get("body") or {}, "openai")
                out.append({"id": _rid("batch_req_"), "custom_id": cid,
                            "response": {"status_code": 200, "request_id": rid, "body": payload},
                            "error": None})
        now = int(time.time())
        if out:
            b["output_file_id"] = self._new_file(_jsonl(out),
                                                 "batch_output.jsonl", "batch_output")["id"]
        if err:
            b["error_file_id"] = self._new_file(_jsonl(err),
                                                "batch_errors.jsonl", "batch_output")["id"]
        b["request_counts"] = {"total": len(b["_lines"]), "completed": len(out), "failed": len(err)}
        if b["_cancel"]:
            b["status"], b["cancelled_at"] = "cancelled", now
        elif expired:
            b["status"], b["expired_at"] = "expired", now
        else:
            b["finalizing_at"] = now
            b["status"], b["completed_at"] = "completed", now

    async def batch_list(self, request: web.Request) -> web.Response:
        # newest first, like the real API; one page is enough for a local server
        data = [self._batch_object(b) for b in reversed(self.batches.values())]
        return web.json_response(_page(data, object="list"))

    async def batch_get(self, request: web.Request) -> web.Response:
        b, missing = self._find(self.batches, request, "openai", "not_found", "no such batch")
        if missing is not None:
            return missing
        return web.json_response(self._batch_object(b))

    async def batch_cancel(self, request: web.Request) -> web.Response:
        b, missing = self._find(self.batches, request, "openai", "not_found", "no such batch")
        if missing is not None:
            return missing
        if b["status"] in ("validating", "in_progress"):
            b["_cancel"] = True
            b["status"], b["cancelling_at"] = "cancelling", int(time.time())
        self._log_done(self._log_start(request, "batch_cancel"), 200, batch_id=b["id"])
        return web.json_response(self._batch_object(b))
