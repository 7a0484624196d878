"""How rationales are sampled: the settings :func:`distill.generate.generate` takes and
:class:`distill.evaluate.EvalConfig` extends. Imports no torch, so configs can be built
before any model code loads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingConfig:
    samples: int = 1
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 16
    seed: int = 0
