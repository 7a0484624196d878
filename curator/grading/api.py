"""``grade``, ``equivalent`` and ``extract_answer``: the grader's Python API.

A verdict is computed in three steps, each testable alone: extract the final answer
(:mod:`~curator.grading.extract`), parse it and the reference into typed answers
(:mod:`~curator.grading.normalize`), compare them (:mod:`~curator.grading.compare`,
which hands scalars that are not plain numbers to :mod:`~curator.grading.symbolic`).

The first steps are pure Python with linear-time work and run in the calling process;
whenever a verdict needs sympy, the comparison is sent to a worker process that is killed
at the time limit (:mod:`~curator.grading.pool`), so no input can hang or crash the
caller. A timeout is a verdict (status ``timeout``), not an exception.
"""

from __future__ import annotations

import atexit
import functools
from dataclasses import dataclass

from curator.errors import InputError
from curator.grading.compare import (CORRECT, UNPARSEABLE, Context, NeedsSympy, Verdict,
                                     asks_for_approximation, compare)
from curator.grading.extract import (Extraction, extract,  # noqa: F401  (re-exported)
                                     extract_answer)
from curator.grading.normalize import Answer, parse

# Bump whenever a verdict can change: grades are keyed by this, so a new version
# regrades every sample while the old verdicts stay queryable.
GRADER_VERSION = "curator-grader-3"

DEFAULT_TIMEOUT = 5.0

STATUSES = ("correct", "wrong", "no_answer", "unparseable", "timeout")


@dataclass(frozen=True)
class Grade:
    """The verdict on one rationale.

    ``extracted`` is the final answer as written, ``normalized`` its canonical form,
    ``rule`` the comparison rule that decided (``exact``, ``number``, ``sympy-value``,
    ``set``, ``interval``, ``timeout``...), ``extraction`` how the answer was found
    (``boxed``, ``phrase``, ``hashes``, ``bare``, ``last-math``...).
    """
    correct: bool
    status: str
    extracted: str | None
    normalized: str | None
    rule: str
    extraction: str | None = None

    def as_row(self) -> tuple:
        return (self.correct, self.status, self.extracted, self.normalized, self.rule,
                self.extraction)


# a problem's question is graded once per rationale (8 or more times)
_asks_for_approximation = functools.lru_cache(maxsize=8192)(asks_for_approximation)


@functools.lru_cache(maxsize=16384)
def parse_cached(text: str) -> Answer:
    return parse(text)


@functools.lru_cache(maxsize=65536)
def _compare_cached(reference: str, answer: str, approx: bool, sympy: bool) -> Verdict:
    return compare(parse_cached(reference), parse_cached(answer), Context(approx=approx, sympy=sympy))


def compare_answers(reference: str, answer: str, approx: bool = False) -> tuple[str, str]:
    """(outcome, rule) for two bare answers, sympy allowed: what a worker runs."""
    v = _compare_cached(reference, answer, approx, True)
    return v.outcome, v.rule


def _reference_text(reference_answer: str) -> str:
    if reference_answer is None or not str(reference_answer).strip():
        raise InputError("the reference answer is empty: nothing to grade against")
    return str(reference_answer)


def _status(v: Verdict) -> str:
    if v.outcome == CORRECT:
        return "correct"
    if v.outcome == UNPARSEABLE:
        return "unparseable"
    return "wrong"


def normalized_form(answer: str) -> str | None:
    """The canonical form of a bare answer (what `curator check` shows), or None."""
    try:
        a = parse_cached(answer)
    except Exception:
        return None
    return a.canonical()[:2000] if a.kind != "empty" else None


def extraction_step(reference: str, completion: str, question: str | None) -> tuple[Extraction, bool]:
    """The answer ``completion`` commits to (multiple-choice letters when the reference
    is one) and whether the question asks for an approximation: everything about a
    verdict that does not depend on the comparison."""
    ref_parsed = parse_cached(reference)
    ext = extract(completion if isinstance(completion, str) else "",
                  multiple_choice=ref_parsed.kind == "choice")
    return ext, _asks_for_approximation(question)


def has_answer(ext: Extraction) -> bool:
    return not (ext.rule == "no-answer" or ext.answer is None or not ext.answer.strip())


def no_answer(ext: Extraction) -> Grade:
    return Grade(False, "no_answer", ext.answer or None, None, "no-answer", ext.rule)


def finish(ext: Extraction, v: Verdict | None) -> Grade:
    """The Grade for an extracted answer and its verdict (None: the comparison timed out)."""
    if v is None:
        return Grade(False, "timeout", ext.answer, normalized_form(ext.answer), "timeout", ext.rule)
    return Grade(v.outcome == CORRECT, _status(v), ext.answer, normalized_form(ext.answer),
                 v.rule, ext.rule)


def _grade(reference_answer: str, completion: str, question: str | None, *, sympy: bool,
           timeout: float = DEFAULT_TIMEOUT) -> Grade:
    ref = _reference_text(reference_answer)
    ext, approx = extraction_step(ref, completion, question)
    if not has_answer(ext):
        return no_answer(ext)
    return finish(ext, _verdict(ref, ext.answer, approx, sympy=sympy, timeout=timeout))


def _verdict(reference: str, answer: str, approx: bool, *, sympy: bool, timeout: float) -> Verdict | None:
    """The verdict, computed here when no sympy is needed, else in the guard worker
    (``sympy=False``) or here (``sympy=True``, inside a worker). None on timeout."""
    if sympy:
        return _compare_cached(reference, answer, approx, True)
    try:
        return _compare_cached(reference, answer, approx, False)
    except NeedsSympy:
        pass
    key = (reference, answer, approx)
    hit = _guarded_memo.get(key)
    if hit is not None:
        return hit
    from curator.grading.pool import TaskTimeout, WorkerCrashed
    try:
        outcome, rule = _guard().call(compare_answers, key, timeout)
    except TaskTimeout:
        return None
    except WorkerCrashed:
        v = Verdict(UNPARSEABLE, "worker-crashed")
    except RuntimeError as exc:
        v = Verdict(UNPARSEABLE, f"error: {exc}"[:120])
    else:
        v = Verdict(outcome, rule)
    if len(_guarded_memo) > 65536:
        _guarded_memo.clear()
    _guarded_memo[key] = v
    return v


_guarded_memo: dict[tuple, Verdict] = {}
_GUARD = None


def _guard():
    global _GUARD
    if _GUARD is None:
        from curator.grading.pool import Guard
        _GUARD = Guard()
        atexit.register(_GUARD.close)
    return _GUARD


def grade(reference_answer: str, completion: str, *, question: str | None = None,
          timeout: float = DEFAULT_TIMEOUT) -> Grade:
    """Grade a rationale (or a bare answer) against the reference final answer.

    ``reference_answer`` is the reference as the loaders store it (MATH: the content of
    the solution's last ``\\boxed{}``; GSM8K: the number after ``####``; ASDiv: values
    joined by ", "). ``question``, when given, lets the grader accept a decimal that
    correctly rounds an exact reference when the problem asks for rounding or a
    decimal. Every comparison that needs sympy runs in a worker process killed after
    ``timeout`` seconds; the verdict is then ``status="timeout"``.
    """
    return _grade(reference_answer, completion, question, sympy=False, timeout=timeout)


def equivalent(a: str, b: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Are two bare final answers the same answer (``a`` read as the reference)?

    The same comparison as :func:`grade`, without extraction: used to group a student's
    sampled answers when voting (ASC).
    """
    if a is None or b is None or not str(a).strip() or not str(b).strip():
        return False
    if a == b:
        return True
    v = _verdict(str(a), str(b), False, sympy=False, timeout=timeout)
    return v is not None and v.outcome == CORRECT
