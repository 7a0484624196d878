"""What a comparison decides: a :class:`Verdict` (outcome and the rule that decided it).

Shared by :mod:`curator.grading.compare` and :mod:`curator.grading.symbolic`, which both
return verdicts; it lives apart so that neither has to import the other to build one."""

from __future__ import annotations

from dataclasses import dataclass

CORRECT = "correct"
WRONG = "wrong"
UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Verdict:
    outcome: str   # correct | wrong | unparseable
    rule: str

    @property
    def correct(self) -> bool:
        return self.outcome == CORRECT
