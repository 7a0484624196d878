"""Fixtures for the distill tests: tiny local models (built once per session) and the
small export/eval files in ``fixtures/``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The tiny models are far faster on one thread, and the test machine is shared: two
# threads per process oversubscribe the cores and make each step 10x slower.
torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
EXPORT = HERE / "fixtures" / "export_small.jsonl"
EVAL = HERE / "fixtures" / "eval_small.jsonl"


@pytest.fixture(autouse=True)
def _no_ambient_warehouse(monkeypatch):
    """`distill eval` stores into $CURATOR_DB when set: a warehouse in the shell that
    runs the tests must not receive (or refuse) the fixtures' students."""
    monkeypatch.delenv("CURATOR_DB", raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Tiny Llama, multi-head attention (q/k/v all 64 wide)."""
    from distill.tiny import TinyShape, init_tiny
    return init_tiny(tmp_path_factory.mktemp("tiny") / "model", TinyShape())


@pytest.fixture(scope="session")
def gqa_model(tmp_path_factory) -> Path:
    """Tiny Llama with grouped-query attention: k_proj/v_proj are 32 wide, q_proj 64."""
    from distill.tiny import TinyShape, init_tiny
    return init_tiny(tmp_path_factory.mktemp("gqa") / "model", TinyShape(kv_heads=2), seed=1)


@pytest.fixture
def export_file() -> Path:
    return EXPORT


@pytest.fixture
def eval_file() -> Path:
    return EVAL
