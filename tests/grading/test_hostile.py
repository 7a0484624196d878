"""No input may crash or hang grading: hostile rationales, and the worker processes that
enforce the wall-clock limit (a timeout is a status, never an exception)."""

from __future__ import annotations

import os
import time

import pytest

from curator.grading import grade
from curator.grading.pool import CRASHED, TIMEOUT, Guard, TaskTimeout, run_tasks

MB = 1024 * 1024


@pytest.mark.parametrize("reference, completion", [
    ("3", r"\boxed{\frac{1}{2}"),                       # unbalanced
    ("3", r"}}}{{{\boxed{}}}"),                        # stray braces, empty box
    ("3", r"\boxed{\frac{}{}}"),
    ("1", r"\boxed{10^{10^{10^{10}}}}"),               # power tower
    ("1", r"\boxed{1000000!}"),                        # huge factorial
    ("1", r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}"),   # deep nesting
    ("1", r"\boxed{" + "{" * 20000 + "}"),
    ("2", "the answer is \ud800\udfff 2"),              # lone surrogates (broken JSON escapes)
    (r"\frac{1}{2}", r"\boxed{\sqrt{\sqrt{\sqrt{\sqrt{\sqrt{\sqrt{2}}}}}}^{1000000}}"),
])
def test_hostile_completion_gets_a_verdict(reference, completion):
    t = time.monotonic()
    g = grade(reference, completion, timeout=3)
    assert time.monotonic() - t < 10
    assert g.status in ("wrong", "no_answer", "unparseable", "timeout") and not g.correct


def test_nul_and_surrogates_do_not_hide_a_right_answer():
    assert grade("2", "nul\x00bytes \\boxed{2}").correct
    assert grade("2", "broken \ud800 escape, the answer is $\\boxed{2}$").correct


@pytest.mark.parametrize("completion", [
    r"\boxed{" * (10 * MB // 7),                       # 10 MB of opening boxes
    "x" * (10 * MB),                                   # 10 MB of text
    r"\boxed{" + "9" * (10 * MB) + "}",                # a 10 MB number
    "The answer is " + "1+" * (5 * MB) + "1",
])
def test_ten_megabyte_completions_are_graded_quickly(completion):
    t = time.monotonic()
    g = grade("9", completion, timeout=3)
    assert time.monotonic() - t < 15
    assert not g.correct


def test_a_comparison_past_the_limit_is_a_timeout_verdict():
    # A fresh pair (a new constant each try, so no cache of the worker's helps) costs
    # tens of milliseconds of LaTeX parsing and sympy, against a 2 ms limit. A verdict
    # that is already back when the parent looks is kept, so on a loaded machine a try
    # may still come back decided; one of five must time out.
    import random
    statuses = []
    for _ in range(5):
        c = random.randint(10**6, 10**9)
        ref, ans = rf"(x+{c})^{{30}}", rf"({c}+x)^{{30}}+\sin(x)^2+\cos(x)^2-1"
        g = grade(ref, rf"so $\boxed{{{ans}}}$", timeout=0.002)
        statuses.append(g.status)
        assert g.status in ("timeout", "correct") and g.extracted == ans
        if g.status == "timeout":
            assert (g.correct, g.rule) == (False, "timeout")
            break
    assert "timeout" in statuses
    # and the replacement worker decides the same pair given time
    assert grade(ref, rf"so $\boxed{{{ans}}}$", timeout=60).correct


def test_guard_kills_a_task_past_its_limit_and_recovers():
    guard = Guard()
    try:
        t = time.monotonic()
        with pytest.raises(TaskTimeout):
            guard.call(time.sleep, (30,), 0.5)
        assert time.monotonic() - t < 10
        assert guard.call(abs, (-3,), 10) == 3
    finally:
        guard.close()


@pytest.fixture
def importable_here(monkeypatch):
    """Workers are fresh interpreters: let them import this module's task function."""
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    assert _mixed.__module__ == "test_hostile"


def test_pool_reports_timeouts_and_crashes_and_finishes_the_rest(importable_here):
    tasks = [(("sleep", i), (30,)) for i in range(2)]
    tasks += [(("ok", i), (-i,)) for i in range(20)]
    t = time.monotonic()
    got = {key: (ok, value) for key, ok, value in
           run_tasks(_mixed, [(k, (k[0], *a)) for k, a in tasks], workers=2, timeout=1.0,
                     batch_size=4)}
    assert time.monotonic() - t < 30
    assert set(got) == {k for k, _ in tasks}                      # every task answered once
    assert all(got[("sleep", i)] == (False, TIMEOUT) for i in range(2))
    assert all(got[("ok", i)] == (True, i) for i in range(20))


def test_pool_survives_a_worker_that_dies(importable_here):
    tasks = [(i, ("exit" if i == 3 else "ok", -i)) for i in range(8)]
    got = {key: (ok, value) for key, ok, value in run_tasks(_mixed, tasks, workers=2, timeout=10)}
    assert got[3] == (False, CRASHED)
    assert all(got[i] == (True, i) for i in range(8) if i != 3)


def _mixed(kind, x):
    if kind == "sleep":
        time.sleep(x)
    if kind == "exit":
        os._exit(3)
    return abs(x)
