"""How rationales are sampled: the settings :func:`distill.generate.generate` takes and
:class:`distill.evaluate.EvalConfig` extends. Imports no torch, so configs can be built
before any model code loads."""

from __future__ import annotations

from dataclasses import dataclass

from curator.errors import CuratorError


@dataclass(frozen=True)
class SamplingConfig:
    samples: int = 1
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        # checked here, before any model loads (the options of `distill generate|eval`)
        for flag, value, ok, want in (
                ("--samples", self.samples, self.samples >= 1, "at least 1"),
                ("--max-new-tokens", self.max_new_tokens, self.max_new_tokens >= 1,
                 "at least 1"),
                ("--temperature", self.temperature, self.temperature >= 0,
                 "0 (greedy) or more"),
                ("--top-p", self.top_p, 0 < self.top_p <= 1, "more than 0 and at most 1"),
                ("--batch-size", self.batch_size, self.batch_size >= 1, "at least 1")):
            if not ok:
                raise CuratorError(f"{flag} {value}: must be {want}")
