"""Fixtures for the ASC/evaluation tests: a tiny local model (built once per session) and a
ranker trained on it for a few steps; the export/eval files (``export_file``,
``eval_file``) come from ``tests/distill/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

EXPORT = Path(__file__).resolve().parents[1] / "fixtures" / "export_small.jsonl"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    from distill.tiny import TinyShape, init_tiny
    return init_tiny(tmp_path_factory.mktemp("asc-tiny") / "model", TinyShape(hidden=32, intermediate=64))


@pytest.fixture(scope="session")
def trained_ranker(tiny, tmp_path_factory) -> Path:
    from distill.asc.ranker import RankerConfig, train_ranker
    out = tmp_path_factory.mktemp("asc-ranker") / "ranker"
    cfg = RankerConfig(output_dir=str(out), max_steps=3, per_device_train_batch_size=4,
                       lora_r=4, lora_alpha=8, max_length=128, holdout=0.25, seed=3)
    train_ranker(EXPORT, tiny, out, cfg)
    return out

