"""NCE, Negative Calibration Enhancement (METHOD.md step 2).

- :mod:`distill.nce.loss`     the loss as trained: positions, beta, the chunked objective
- :mod:`distill.nce.trainer`  ``NCEConfig``, the dataset and collator, ``NCETrainer``
- :mod:`distill.nce.betas`    ``betas.jsonl`` and its report
- :mod:`distill.nce.train`    ``build_nce`` and ``train_nce``, the ``distill nce`` job
"""

from distill.nce.betas import BetaStore, beta_summary
from distill.nce.train import NCEResult, build_nce, train_nce
from distill.nce.trainer import STUDENT, NCECollator, NCEConfig, NCETrainer

__all__ = ["STUDENT", "BetaStore", "NCECollator", "NCEConfig", "NCEResult", "NCETrainer",
           "beta_summary", "build_nce", "train_nce"]
