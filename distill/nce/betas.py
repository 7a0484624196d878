"""NCE's betas on disk: ``betas.jsonl`` (one ``{sample_id, beta, mean_kl, tokens}`` per
line, appended batch by batch), ``betas.meta.json`` (the teacher and encoding they belong
to), and the report of their distribution (``beta_summary.json``, ``beta_hist.png``)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from curator.durable import append_jsonl_durable, read_jsonl_durable, sha256_file
from curator.errors import CuratorError
from distill import data as D
from distill.adapters import NEG, POS

BETAS_FILE = "betas.jsonl"
BETAS_META = "betas.meta.json"
BETA_SUMMARY = "beta_summary.json"
BETA_PLOT = "beta_hist.png"


class BetaStore:
    """``betas.jsonl`` in the run directory (one ``{sample_id, beta, mean_kl, tokens}`` per
    line, appended and flushed batch by batch) and ``betas.meta.json`` saying which
    teacher and encoding they belong to. Reusing betas of another teacher is refused."""

    def __init__(self, out: str | Path, meta: dict):
        self.dir = Path(out)
        self.path = self.dir / BETAS_FILE
        self.meta_path = self.dir / BETAS_META
        self.meta = meta

    def load(self) -> dict[str, dict]:
        if self.meta_path.is_file():
            saved = json.loads(self.meta_path.read_text())
            if saved != self.meta:
                diff = sorted(k for k in set(saved) | set(self.meta) if saved.get(k) != self.meta.get(k))
                raise CuratorError(f"{self.path} holds betas of another teacher or encoding "
                                   f"(differs in {', '.join(diff)}); use another --out or "
                                   f"remove {self.path} and {self.meta_path}")
        if not self.path.is_file():
            return {}
        # a line cut by an interruption is dropped (and its betas recomputed)
        recs = read_jsonl_durable(self.path, stop_at_bad=False, truncate=True)
        return {rec["sample_id"]: rec for rec in recs}

    def append(self, recs: list[dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.meta_path.is_file():
            self.meta_path.write_text(json.dumps(self.meta, indent=2))
        append_jsonl_durable(self.path, recs)


def beta_summary(betas: list[float]) -> dict:
    """Count, mean, standard deviation, min, quartiles, max and the share of zeros."""
    if not betas:
        return {"count": 0}
    xs = sorted(betas)
    n = len(xs)

    def q(f):
        k = (n - 1) * f
        lo, hi = math.floor(k), math.ceil(k)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    mean = sum(xs) / n
    return {"count": n, "mean": mean, "std": math.sqrt(sum((x - mean) ** 2 for x in xs) / n),
            "min": xs[0], "p25": q(0.25), "median": q(0.5), "p75": q(0.75), "max": xs[-1],
            "zero_fraction": sum(1 for x in xs if x == 0.0) / n}


def write_beta_report(out: str | Path, records: list[dict], source: str) -> dict:
    """``beta_summary.json`` and ``beta_hist.png`` (histogram of beta over samples)."""
    out = Path(out)
    betas = [r["beta"] for r in records]
    summary = {**beta_summary(betas), "source": source}
    (out / BETA_SUMMARY).write_text(json.dumps(summary, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # The whole [0, 1) range unless every beta is small: one bar at 0 would say nothing.
    top = max(betas, default=0.0)
    ax.hist(betas, bins=40, range=(0.0, 1.0 if top > 0.5 else max(top * 1.05, 1e-9)),
            color="#4c72b0")
    ax.set_xlabel("beta = tanh(mean KL(p_neg || p_nat))")
    ax.set_ylabel("samples")
    ax.set_title(f"NCE calibration weights ({source}, n={len(betas)}, "
                 f"mean {summary.get('mean', 0):.3f})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / BETA_PLOT, dpi=100)
    plt.close(fig)
    return summary


def nat_fingerprint(nat_dir: str | Path) -> str:
    """SHA-256 over the NAT adapters' weights: betas belong to exactly this teacher."""
    h = hashlib.sha256()
    for sub in (NEG, POS):
        sha256_file(Path(nat_dir) / sub / "adapter_model.safetensors", h)
    return h.hexdigest()


def beta_meta(nat: Path, base: str | Path, config, fmt: D.PromptFormat) -> dict:
    """What a precomputed beta depends on (a stored one is reused only when all match)."""
    from distill.run import model_dtype
    return {"nat": str(Path(nat).resolve()), "nat_sha256": nat_fingerprint(nat),
            "base_model": str(base), "positions": "attended" if config.distill_all_tokens
            else "targets", "train_on_prompt": config.train_on_prompt,
            "max_length": config.max_length, "prompt_format": fmt.to_json(),
            "dtype": model_dtype(config), "chunk_tokens": config.nce_chunk_tokens}
