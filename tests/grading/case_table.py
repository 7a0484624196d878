"""Case tables kept as data beside the tests that run them (``*_cases.toml``): arrays of
groups, each ``about`` (what its cases check) and ``cases`` (one list of values per case),
turned into pytest parameters whose ids name the group, so that a failing case says which
rule or policy it checks."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest


def grouped_cases(path: Path, table: str, *, prefix: str = "",
                  convert: Callable[[list], tuple] = tuple) -> list:
    """Each case of the groups ``[[table]]`` of ``path`` as a ``pytest.param`` of
    ``convert(case)``, with the id ``"<prefix><about> #<n>"`` (n counts from 1 in its
    group)."""
    groups = tomllib.loads(path.read_text(encoding="utf-8")).get(table)
    if not groups:
        raise ValueError(f"{path}: no [[{table}]] groups of cases")
    return [pytest.param(*convert(case), id=f"{prefix}{group['about']} #{n}")
            for group in groups for n, case in enumerate(group["cases"], 1)]
