"""Fixtures for the NCE tests: a tiny local model and a NAT model trained on it for a few
steps (built once per session, no download), the small export file of the distill tests
(its eval file lies beside it), and NCE configs sized for a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

EXPORT = Path(__file__).resolve().parents[1] / "fixtures" / "export_small.jsonl"

# Short enough to be quick; the few longer fixture prompts are dropped (and counted).
MAX_LENGTH = 96


@pytest.fixture(scope="session")
def tiny(tiny_model) -> Path:
    """The tiny model of ``tests/distill/conftest.py`` (default shape, seed 0)."""
    return tiny_model


@pytest.fixture(scope="session")
def nat_dir(tiny, tmp_path_factory) -> Path:
    """A `distill nat` output on ``tiny``; a high learning rate so that "neg" and "nat"
    differ enough for beta to be clearly above 0."""
    from distill.nat.trainer import NATConfig, train_nat
    out = tmp_path_factory.mktemp("nce-nat") / "nat"
    cfg = NATConfig(output_dir=str(out / "trainer"), max_steps=6, per_device_train_batch_size=4,
                    max_length=MAX_LENGTH, gate_width=16, learning_rate=5e-2, lora_dropout=0.0,
                    disable_tqdm=True, logging_steps=100, seed=0)
    train_nat(EXPORT, tiny, out, cfg)
    return out


@pytest.fixture
def nce_config(tmp_path):
    """``nce_config(**overrides)``: an NCEConfig for a few quick CPU steps."""
    from distill.nce import NCEConfig

    def make(**kw):
        base = dict(output_dir=str(tmp_path / "trainer"), max_length=MAX_LENGTH,
                    per_device_train_batch_size=4, learning_rate=2e-2, lora_dropout=0.0,
                    disable_tqdm=True, logging_steps=1, seed=0, use_cpu=True)
        return NCEConfig(**{**base, **kw})

    return make
