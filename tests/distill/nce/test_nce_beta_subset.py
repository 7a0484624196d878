"""`distill nce --max-steps N` computes betas only for the samples the N steps train on,
read from the trainer's own sampler: training then needs no beta it lacks."""

from __future__ import annotations

import pytest

from distill import data as D
from distill.nce import BetaStore, NCETrainer, build_nce


def test_betas_only_for_the_samples_trained_on(tiny, nat_dir, export_file, nce_config,
                                               tmp_path, monkeypatch):
    cfg = nce_config(max_steps=2, per_device_train_batch_size=3, gradient_accumulation_steps=2)
    trainer, _ = build_nce(D.read_export(export_file), tiny, nat_dir, cfg)
    rows = trainer.rows_to_train()
    n = len(trainer.train_dataset)
    assert rows is not None and len(rows) == 12 < n          # 2 steps x 2 x 3, random order
    assert rows != sorted(rows)
    store = BetaStore(tmp_path / "run", {"teacher": "t"})
    calls = []
    betas = trainer.precompute_betas(store, rows=rows, progress=calls.append)
    assert sum(calls) == 12 and len(store.load()) == 12 and len(betas) == 12
    trainer.use_betas(betas)
    seen = []
    real = NCETrainer.compute_loss

    def spy(self, model, inputs, *a, **k):
        seen.extend(inputs["row"].tolist())
        return real(self, model, inputs, *a, **k)

    monkeypatch.setattr(NCETrainer, "compute_loss", spy)
    monkeypatch.setattr(NCETrainer, "teacher_betas",
                        lambda *a, **k: pytest.fail("a trained sample had no beta"))
    trainer.train()
    assert seen == rows                                        # the predicted order exactly

    # a run that reaches every sample computes them all
    full, _ = build_nce(D.read_export(export_file), tiny, nat_dir, nce_config(max_steps=-1))
    assert full.rows_to_train() is None


def test_a_sample_without_beta_gets_one_in_its_step(tiny, nat_dir, export_file, nce_config,
                                                    tmp_path):
    cfg = nce_config(max_steps=2, per_device_train_batch_size=4,
                     train_sampling_strategy="sequential")
    trainer, _ = build_nce(D.read_export(export_file), tiny, nat_dir, cfg)
    ids = list(trainer.train_dataset["sample_id"])
    ref = trainer.precompute_betas(BetaStore(tmp_path / "all", {}))
    trainer.use_betas({sid: ref[sid] for sid in ids[:4]})      # step 2's samples missing
    trainer.train()
    assert sorted(trainer.seen_betas) == [4, 5, 6, 7]
    assert all(trainer.seen_betas[r][0] == pytest.approx(ref[ids[r]], rel=1e-5)
               for r in range(4, 8))
