"""What the two batch APIs of the local teacher server share: the fault drawn for each
item (logged like a request) and answering one item's body as the synchronous endpoint
would. A mixin of :class:`curator.server.app.TeacherServer`, whose config, responder,
request log and error replies it uses."""

from __future__ import annotations

import time

from curator.errors import CuratorError
from curator.server.responder import Completion
from curator.server.wire import _prompt_of, _rid


class BatchItems:
    """Per-item work of a batch, in either dialect."""

    def _batch_item_fault(self) -> str:
        if self.config.batch_item_faults:
            return self.config.batch_item_faults.pop(0)
        if self.config.batch_item_error_rate and self.rng.random() < self.config.batch_item_error_rate:
            return "error"
        return "ok"

    def _complete_body(self, body: dict, dialect: str) -> tuple[dict, str]:
        prompt, prompt_tokens = _prompt_of(body, dialect)
        n = min(int(body.get("n") or 1), self.config.n_max) if dialect == "openai" else 1
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        try:
            _, comps = self.responder.respond(prompt, n, max_tokens)
        except CuratorError as exc:      # a programmatic teacher that cannot answer
            comps = [Completion(f"error: {exc}", "stop", 0, False)]
        ctoks = sum(c.completion_tokens for c in comps)
        if dialect == "openai":
            return {"id": _rid("chatcmpl-"), "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model"),
                    "choices": [{"index": i, "logprobs": None, "finish_reason": c.finish_reason,
                                 "message": {"role": "assistant", "content": c.text, "refusal": None}}
                                for i, c in enumerate(comps)],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": ctoks,
                              "total_tokens": prompt_tokens + ctoks}}, _rid("req_")
        c = comps[0]
        return {"id": _rid("msg_"), "type": "message", "role": "assistant",
                "model": body.get("model"),
                "stop_reason": "max_tokens" if c.finish_reason == "length" else "end_turn",
                "stop_sequence": None, "content": [{"type": "text", "text": c.text}],
                "usage": {"input_tokens": prompt_tokens, "output_tokens": ctoks}}, _rid("req_")


    def _item_fault(self, b: dict, cid, expired: bool) -> str:
        """The fault of one batch item (``expired`` once one item has expired), logged."""
        fault = "expired" if expired else self._batch_item_fault()
        self._append_log({"seq": self.log_base + len(self.log), "t": time.time(), "kind": "batch_item",
                          "batch_id": b["id"], "custom_id": cid, "fault": fault})
        return fault

    def _find(self, store: dict, request, dialect: str, kind: str, message: str):
        """``(batch, None)`` for the request's ``batch_id`` in ``store``, else ``(None, 404)``."""
        b = store.get(request.match_info["batch_id"])
        if b is None:
            return None, self._error(dialect, 404, kind, message)
        return b, None
