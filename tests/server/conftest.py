"""Fixtures for the tests of the local teacher server (curator.server); ``serve``, which
starts one per test, is in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_TDG = ROOT / "curator" / "demo" / "tdg_gpt4_200.jsonl.gz"
