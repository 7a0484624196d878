"""The grading policy, case by case: (reference, completion, expected verdict), from the
table in policy_cases.toml, grouped by what each group of cases checks.

Two kinds of cases. Regressions: disagreements with math-verify on the TDG rationales, or
with the published grader-cases corpus, that were grader errors and are fixed. Policy:
disagreements we keep on purpose, each listed with its reason in the README ("Grading
policy"), asserted here so that a change of policy is a visible decision.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from case_table import grouped_cases

from curator.grading import grade


def boxed(ans: str) -> str:
    return f"Putting it together, we get $\\boxed{{{ans}}}$."


CASES = Path(__file__).with_name("policy_cases.toml")


def case(values: list) -> tuple[str, str, bool]:
    """A case of the table: its completion is written ``{boxed = X}`` for ``boxed(X)``."""
    reference, completion, expected = values
    if isinstance(completion, dict):
        completion = boxed(completion["boxed"])
    return reference, completion, expected


REGRESSIONS = grouped_cases(CASES, "regression", prefix="regression: ", convert=case)
POLICY = grouped_cases(CASES, "policy", prefix="policy: ", convert=case)


@pytest.mark.parametrize("reference, completion, expected", REGRESSIONS + POLICY)
def test_policy_case(reference, completion, expected):
    g = grade(reference, completion, timeout=20)
    assert g.status != "timeout"
    assert g.correct is expected, (g.status, g.rule, g.extracted, g.normalized)
