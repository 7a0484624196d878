"""Fixtures for the teacher tests: warehouses with the demo MATH slice loaded, keys in the
environment, a price table (the local teacher server per test, ``serve``, is in
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_PROBLEMS = ROOT / "curator" / "demo" / "math_train_200.jsonl"
DEMO_TDG = ROOT / "curator" / "demo" / "tdg_gpt4_200.jsonl.gz"
OPENAI_KEY = "sk-test-K3yThatMustNeverBeStored0123456789"
ANTHROPIC_KEY = "sk-ant-test-AnotherKeyNeverStored987654321"


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.delenv("CURATOR_API_KEY", raising=False)
    return {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}


@pytest.fixture
def math_wh(wh):
    """A warehouse with the 200 demo MATH train problems loaded."""
    from curator.sources import load_problems
    load_problems(wh, "math", DEMO_PROBLEMS)
    return wh


@pytest.fixture
def prices(tmp_path) -> Path:
    """A price table for the made-up model names the tests use."""
    p = tmp_path / "prices.json"
    p.write_text('{"models": {"teacher": {"input": 1.5, "output": 4.0}, '
                 '"claude-teacher": {"input": 3.0, "output": 15.0}}}')
    return p
