"""The programmatic teacher of ``curator serve --teacher synthetic``: answers the
synthetic arithmetic problems of :mod:`curator.synthetic` with column rationales, wrong
ones drawn by the documented error model (:class:`curator.synthetic.TeacherModel`).

It has the interface of :class:`curator.server.responder.Responder`, so the server's
HTTP layer (latency, faults, rate limits, the request log, batches) is the same as for
replayed rationales, and ``curator generate`` reaches it through the real client.
"""

from __future__ import annotations

from collections import defaultdict

from curator.errors import CuratorError
from curator.server.responder import Completion, finish
from curator.synthetic import TeacherModel, parse_question


class NoProblem(CuratorError):
    """The prompt holds no synthetic problem (answered with HTTP 400)."""


class SyntheticResponder:
    """Successive samples of the same problem get successive sample indices, so K
    requests (or one request with ``n = K``) see K independent draws of the error model;
    each draw depends only on (seed, problem, index)."""

    def __init__(self, error_rate: float, seed: int = 0) -> None:
        self.model = TeacherModel(error_rate=error_rate, seed=seed)
        self._next: dict[str, int] = defaultdict(int)
        self.library = ()          # nothing recorded: len() == 0 in the server's banner
        self.kinds: dict[str, int] = defaultdict(int)   # correct / slip / bug, served so far

    def respond(self, prompt: str, n: int, max_tokens: int | None,
                force_length: bool = False) -> tuple[str | None, list[Completion]]:
        p = parse_question(prompt)
        if p is None:
            raise NoProblem("the synthetic teacher found no 'What is A - B?' (or A + B) "
                            "question in the prompt")
        out = []
        for _ in range(n):
            i = self._next[p.source_id]
            self._next[p.source_id] = i + 1
            text, kind = self.model.answer(p, i)
            self.kinds[kind] += 1
            out.append(finish(text, max_tokens, force_length, replayed=False))
        return p.source_id, out
