"""Synthetic problem families: column arithmetic with digit-by-digit rationales, a
programmatic teacher with a documented error model, and a loader into ``problems``.

A family generates problems deterministically from a seed, splits them into disjoint
train and test sets, grades them by difficulty (``level``), writes the correct
rationale of any problem in one step format, and writes *wrong* rationales the way the
teacher's error model says (see docs/synthetic.md). The same step format is shared by
``addition`` (what a small base is pre-trained on, see ``distill pretrain``) and
``subtraction`` (the skill that is distilled), so that a base can know the format without
knowing the skill.

Step formats (one line per column, ones first)::

    addition     ones: 8+6+1=15, write 5, carry 1
    subtraction  ones: 13-9-1=3, write 3, borrow 1

In a subtraction step the top digit is written with a leading ``1`` when the column
borrows (``13`` for a top digit 3), then the bottom digit and the borrow coming in from
the column to the right. The last line is ``The answer is N.``.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from curator.errors import CuratorError

PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")
TEST_SHARE = 5                 # one problem in TEST_SHARE belongs to the test split
QUESTION = re.compile(r"What is (\d+) ([+-]) (\d+)\?")


# -- problems and their correct rationales ---------------------------------------------------

@dataclass(frozen=True)
class Step:
    place: str
    top: int          # the top digit as written in the step (13 when a subtraction borrows)
    bottom: int
    incoming: int     # carry/borrow coming in from the column to the right
    result: int       # the full result of the step (15 for 8+6+1; 3 for 13-9-1)
    write: int        # the digit written under the column
    outgoing: int     # carry/borrow passed to the next column


@dataclass(frozen=True)
class Arith:
    """One problem ``a op b``."""
    a: int
    b: int
    op: str           # '+' or '-'

    @property
    def family(self) -> str:
        """``addition``/``subtraction`` for 3-digit operands, ``subtraction4`` etc. else."""
        name = "addition" if self.op == "+" else "subtraction"
        digits = len(str(max(self.a, self.b)))
        return name if digits == 3 else f"{name}{digits}"

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def source_id(self) -> str:
        return f"{self.family}:{self.a}{self.op}{self.b}"

    def steps(self) -> list[Step]:
        return column_steps(self.a, self.b, self.op)

    @property
    def level(self) -> int:
        """Difficulty: 1 + carries (addition) or 1 + borrows (subtraction); for a
        subtraction that borrows across a zero (a 0 on top receiving a borrow), one more
        than the most borrows an n-digit subtraction can have (4 for 3 digits)."""
        steps = self.steps()
        if self.op == "-" and any(across_zero(s) for s in steps):
            return len(steps) + 1
        return 1 + sum(s.outgoing for s in steps)

    @property
    def subject(self) -> str:
        return self.family


def column_steps(a: int, b: int, op: str) -> list[Step]:
    """The correct column steps of ``a op b`` (ones first), over the digits of ``a``."""
    n = max(len(str(a)), len(str(b)))
    steps, incoming = [], 0
    for i in range(n):
        x, y = a // 10 ** i % 10, b // 10 ** i % 10
        place = PLACES[i] if i < len(PLACES) else f"10^{i}"
        if op == "+":
            s = x + y + incoming
            steps.append(Step(place, x, y, incoming, s, s % 10, s // 10))
            incoming = s // 10
        else:
            borrow = 1 if x < y + incoming else 0
            top = x + 10 * borrow
            r = top - y - incoming
            steps.append(Step(place, top, y, incoming, r, r, borrow))
            incoming = borrow
    return steps


def across_zero(s: Step) -> bool:
    """A subtraction column whose top digit is 0 and that receives a borrow (so it must
    borrow in turn): where the teacher's systematic bug lives."""
    return s.top % 10 == 0 and s.incoming == 1 and s.outgoing == 1


def step_line(s: Step, op: str) -> str:
    word = "carry" if op == "+" else "borrow"
    return (f"{s.place}: {s.top}{op}{s.bottom}{op}{s.incoming}={s.result}, "
            f"write {s.write}, {word} {s.outgoing}")


def render(steps: list[Step], op: str) -> str:
    """A rationale from steps; the answer is what the steps wrote (plus a final carry)."""
    digits = "".join(str(s.write) for s in reversed(steps))
    if op == "+" and steps[-1].outgoing:
        digits = str(steps[-1].outgoing) + digits
    answer = int(digits)
    return "\n".join([step_line(s, op) for s in steps] + [f"The answer is {answer}."])


def rationale(p: Arith) -> str:
    """The correct rationale of ``p``."""
    return render(p.steps(), p.op)


def rationale_answer(text: str) -> str | None:
    m = re.search(r"The answer is (-?\d+)\.", text)
    return m.group(1) if m else None


# -- families --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    name: str
    op: str
    digits: int
    levels: tuple[int, ...]
    # Relative chance of a teacher error per level (mean 1 over the levels: a problem
    # set drawn with uniform levels sees exactly the configured error rate).
    error_weight: dict[int, float] = field(default_factory=dict)

    def problem(self, rng: random.Random, level: int) -> Arith:
        """A random problem of ``level`` (rejection sampling over n-digit operands)."""
        lo, hi = 10 ** (self.digits - 1), 10 ** self.digits - 1
        for _ in range(100_000):
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            if self.op == "-":
                if a < b:
                    a, b = b, a
                if a - b < lo:            # keep n-digit answers: no leading zeros
                    continue
            p = Arith(a, b, self.op)
            if p.level == level:
                return p
        raise CuratorError(f"family {self.name}: found no problem of level {level}")


FAMILIES = {
    "addition": Family("addition", "+", 3, (1, 2, 3, 4), {1: 0.4, 2: 0.8, 3: 1.2, 4: 1.6}),
    "subtraction": Family("subtraction", "-", 3, (1, 2, 3, 4),
                          {1: 0.4, 2: 1.0, 3: 1.4, 4: 1.2}),
    "addition4": Family("addition4", "+", 4, (1, 2, 3, 4, 5),
                        {1: 0.4, 2: 0.7, 3: 1.0, 4: 1.3, 5: 1.6}),
    "subtraction4": Family("subtraction4", "-", 4, (1, 2, 3, 4, 5),
                           {1: 0.25, 2: 0.75, 3: 1.25, 4: 1.5, 5: 1.25}),
}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise CuratorError(f"unknown synthetic family {name!r}; choose one of: "
                           f"{', '.join(FAMILIES)}") from None


def split_of(p: Arith) -> str:
    """Train or test, fixed by the problem itself: the two splits never share a problem,
    whatever the seeds and sizes they were drawn with."""
    h = hashlib.sha256(p.source_id.encode()).digest()
    return "test" if h[0] % TEST_SHARE == 0 else "train"


def generate(name: str, n: int, seed: int, split: str = "train") -> list[Arith]:
    """``n`` distinct problems of family ``name`` in ``split``, levels in turn (equal
    numbers per level), from ``seed``. The same arguments give the same problems."""
    fam = family(name)
    if split not in ("train", "test"):
        raise CuratorError(f"synthetic split {split!r}: choose train or test")
    if n < 1:
        raise CuratorError(f"--n {n}: ask for at least one problem")
    rng = random.Random(f"{name}/{seed}/{split}")
    out: list[Arith] = []
    seen: set[Arith] = set()
    misses = 0
    while len(out) < n:
        level = fam.levels[len(out) % len(fam.levels)]
        p = fam.problem(rng, level)
        if p in seen or split_of(p) != split:
            misses += 1
            if misses > 1000 * n:
                raise CuratorError(f"family {name}: cannot draw {n} distinct {split} problems")
            continue
        seen.add(p)
        out.append(p)
    return out


def parse_question(text: str) -> Arith | None:
    """The problem a prompt asks (its last ``What is A op B?``), or None."""
    found = QUESTION.findall(text)
    if not found:
        return None
    a, op, b = found[-1]
    return Arith(int(a), int(b), op)


# -- the teacher's error model -----------------------------------------------------------------

@dataclass
class TeacherModel:
    """A programmatic teacher: correct column rationales, with errors drawn per rationale.

    * Chance of an error: ``error_rate * w(level)`` (capped at 0.95), with the family's
      level weights, whose mean is 1: harder problems (more borrows) fail more often, and
      over a problem set with uniform levels the teacher's accuracy is ``1 - error_rate``.
    * Systematic bug: a wrong rationale of a problem that borrows across a zero is, with
      chance ``bug_share``, the classic bug at the first such column: the 0 on top becomes
      9 and the borrow is dropped (``9-6-0=3, write 3, borrow 0``); the next column is
      then computed correctly from the dropped borrow, so the answer is off by 10^(i+1).
    * Otherwise a slip: one step's result is off by one (``8-6-0=3``); with chance
      ``easy_slip`` the slip falls on a column that does not borrow or carry when there is
      one (a hard problem's negative gets the hard steps right and slips elsewhere). The
      steps after the slip are computed correctly from what was written.

    Every draw is a function of (seed, question, sample index): the same run gives the
    same rationales."""
    error_rate: float
    seed: int = 0
    bug_share: float = 0.75
    easy_slip: float = 0.8

    def __post_init__(self):
        if not 0.0 <= self.error_rate <= 1.0:
            raise CuratorError(f"--error-rate {self.error_rate}: must be within [0, 1]")

    def error_probability(self, p: Arith) -> float:
        fam = FAMILIES.get(p.family)      # a prompt may ask a size no family has
        w = fam.error_weight.get(p.level, 1.0) if fam else 1.0
        return min(0.95, self.error_rate * w)

    def rng(self, p: Arith, index: int) -> random.Random:
        return random.Random(f"teacher/{self.seed}/{p.source_id}/{index}")

    def answer(self, p: Arith, index: int) -> tuple[str, str]:
        """(rationale, kind) for sample ``index`` of ``p``; kind is 'correct', 'bug' or
        'slip'."""
        rng = self.rng(p, index)
        steps = p.steps()
        if rng.random() >= self.error_probability(p):
            return render(steps, p.op), "correct"
        zero = [i for i, s in enumerate(steps) if p.op == "-" and across_zero(s)]
        if zero and rng.random() < self.bug_share:
            return render(self._bug(p, steps, zero[0]), p.op), "bug"
        return render(self._slip(p, steps, rng), p.op), "slip"

    @staticmethod
    def _recompute(p: Arith, steps: list[Step], start: int, incoming: int) -> list[Step]:
        """Steps from ``start`` on, computed correctly from a (possibly wrong) incoming
        carry/borrow."""
        out = list(steps[:start])
        for s in steps[start:]:
            x = s.top % 10
            if p.op == "+":
                r = x + s.bottom + incoming
                out.append(Step(s.place, x, s.bottom, incoming, r, r % 10, r // 10))
                incoming = r // 10
            else:
                borrow = 1 if x < s.bottom + incoming else 0
                top = x + 10 * borrow
                r = top - s.bottom - incoming
                out.append(Step(s.place, top, s.bottom, incoming, r, r, borrow))
                incoming = borrow
        return out

    def _bug(self, p: Arith, steps: list[Step], i: int) -> list[Step]:
        s = steps[i]
        r = 9 - s.bottom                     # the 0 became 9, the borrow is dropped
        bad = Step(s.place, 9, s.bottom, 0, r, r, 0)
        return self._recompute(p, steps[:i] + [bad] + steps[i + 1:], i + 1, 0)

    def _slip(self, p: Arith, steps: list[Step], rng: random.Random) -> list[Step]:
        easy = [i for i, s in enumerate(steps) if not s.outgoing and not s.incoming]
        if easy and rng.random() < self.easy_slip:
            i = rng.choice(easy)
        else:
            i = rng.randrange(len(steps))
        s = steps[i]
        if p.op == "+":
            # the sum off by one; the carry follows what was written
            r = s.result + (1 if s.result == 0 else rng.choice((-1, 1)))
            bad = Step(s.place, s.top, s.bottom, s.incoming, r, r % 10, r // 10)
        else:
            r = s.result + (1 if s.result == 0 else -1 if s.result == 9 else rng.choice((-1, 1)))
            bad = Step(s.place, s.top, s.bottom, s.incoming, r, r, s.outgoing)
        return self._recompute(p, steps[:i] + [bad] + steps[i + 1:], i + 1, bad.outgoing)


# -- the pre-training corpus -----------------------------------------------------------------

def fact_lines(op: str = "-") -> list[str]:
    """Every single-column fact of the step format as a line of its own, without the
    column's place: ``13-9-1=3, write 3, borrow 1`` (top 0-19, bottom 0-9, borrow in
    0/1, result 0-9) or ``8+6+1=15, write 5, carry 1``. These are the digit facts a
    multi-column rationale combines; they say nothing about which digits to take from
    the question or how borrows chain from column to column."""
    out = []
    for top in range(20 if op == "-" else 10):
        for bottom in range(10):
            for inc in (0, 1):
                if op == "-":
                    r = top - bottom - inc
                    if 0 <= r <= 9:
                        out.append(f"{top}-{bottom}-{inc}={r}, write {r}, borrow {top // 10}")
                else:
                    r = top + bottom + inc
                    out.append(f"{top}+{bottom}+{inc}={r}, write {r % 10}, carry {r // 10}")
    return out


# -- loading into the warehouse ------------------------------------------------------------------

def problems(name: str, n: int, seed: int, split: str = "train", dataset: str | None = None):
    """:class:`curator.sources.Problem` records for the warehouse."""
    from curator.sources import Problem
    out = []
    for i, p in enumerate(generate(name, n, seed, split)):
        out.append(Problem(
            dataset=dataset or "synthetic", split=split, question=p.question,
            reference_answer=str(p.answer), source_id=p.source_id, subject=p.subject,
            level=p.level, reference_solution=rationale(p),
            source_path=f"synthetic:{name}?seed={seed}", source_position=i,
            metadata={"family": name, "a": p.a, "b": p.b, "op": p.op, "seed": seed}))
    return out


def load_synthetic(wh, name: str, n: int, seed: int, split: str = "train",
                   dataset: str | None = None):
    """Generate and store problems (ids are stable: loading twice adds nothing)."""
    from curator.sources import LoadReport, insert_problems, problems_frame
    recs = problems(name, n, seed, split, dataset)
    with wh.write() as con:
        counts = insert_problems(con, problems_frame(recs))
    return LoadReport(counts=[tuple(r) for r in counts.iter_rows()])

