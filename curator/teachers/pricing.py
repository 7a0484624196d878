"""Prices per model and the cost of a response.

Prices are USD per million tokens, input and output separately, from the table shipped
in ``prices.json`` (list prices, dated inside the file) and overridden by a user file of
the same shape (``--prices``). Batch APIs are billed at the table's ``batch_discount``.
A model missing from both has no price: its cost is stored as NULL and ``--max-cost``
refuses to run rather than guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from curator.errors import InputError

_DEFAULT_TABLE = Path(__file__).resolve().parent / "prices.json"
_SNAPSHOT = re.compile(r"-(?:\d|latest\b)")


@dataclass(frozen=True)
class Price:
    model: str                 # the table entry that matched
    input_per_m: float         # USD per 1M input tokens
    output_per_m: float        # USD per 1M output tokens
    batch_discount: float = 0.5

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        usd = (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1e6
        return usd * self.batch_discount if batch else usd


def _read_table(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read price table: {exc}", path=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"price table is not JSON: {exc.msg}", path=str(path),
                         line=exc.lineno) from exc
    models = obj.get("models") if isinstance(obj, dict) else None
    if not isinstance(models, dict):
        raise InputError('expected {"models": {"<model>": {"input": USD/1M, "output": USD/1M}}}',
                         path=str(path))
    for name, p in models.items():
        if (not isinstance(p, dict) or not isinstance(p.get("input"), (int, float))
                or not isinstance(p.get("output"), (int, float))
                or p["input"] < 0 or p["output"] < 0):
            raise InputError("each model needs non-negative numbers 'input' and 'output' "
                             "(USD per 1M tokens)", path=str(path), record=name)
    disc = obj.get("batch_discount", 0.5)
    if not isinstance(disc, (int, float)) or not 0 < disc <= 1:
        raise InputError("batch_discount must be a number in (0, 1]", path=str(path))
    return {"models": models, "batch_discount": float(disc)}


class PriceTable:
    def __init__(self, user_file: str | Path | None = None) -> None:
        base = _read_table(_DEFAULT_TABLE)
        self.models = dict(base["models"])
        self.batch_discount = base["batch_discount"]
        self.sources = [str(_DEFAULT_TABLE)]
        if user_file is not None:
            user = _read_table(Path(user_file))
            self.models.update(user["models"])
            self.batch_discount = user["batch_discount"]
            self.sources.append(str(user_file))

    def lookup(self, model: str) -> Price | None:
        """The exact model, else a dated snapshot or ``-latest`` alias of a table entry
        (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``, but ``gpt-4.5`` is not ``gpt-4``)."""
        name = model
        if name not in self.models:
            prefixes = [m for m in self.models if _SNAPSHOT.match(model[len(m):])
                        and model.startswith(m)]
            if not prefixes:
                return None
            name = max(prefixes, key=len)
        p = self.models[name]
        return Price(name, float(p["input"]), float(p["output"]), self.batch_discount)


def split_tokens(total: int, weights: list[int]) -> list[int]:
    """Split an integer total over choices in proportion to weights (largest remainder),
    so the parts add up to the total exactly."""
    k = len(weights)
    if k == 0:
        return []
    wsum = sum(weights)
    if wsum <= 0:
        weights, wsum = [1] * k, k
    raw = [total * w / wsum for w in weights]
    parts = [int(x) for x in raw]
    order = sorted(range(k), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts
