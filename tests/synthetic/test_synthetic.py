"""Synthetic problem families, the programmatic teacher's error model, and the loader."""

from __future__ import annotations

from collections import Counter

import pytest

from curator import synthetic as S
from curator.errors import CuratorError


def test_problems_are_stable_from_the_seed_with_equal_levels_and_disjoint_splits():
    a = S.generate("subtraction", 100, seed=3)
    assert a == S.generate("subtraction", 100, seed=3)
    assert a != S.generate("subtraction", 100, seed=4)
    assert Counter(p.level for p in a) == {lv: 25 for lv in (1, 2, 3, 4)}
    test = S.generate("subtraction", 100, seed=3, split="test")
    assert not set(a) & set(test)
    assert all(S.split_of(p) == "train" for p in a) and all(S.split_of(p) == "test" for p in test)
    # a larger draw from the same seed starts with the same problems
    assert S.generate("subtraction", 150, seed=3)[:100] == a
    for p in a:
        assert 100 <= p.answer <= 999 and p.answer == p.a - p.b
        assert S.rationale_answer(S.rationale(p)) == str(p.answer)


def test_levels_count_borrows_and_borrowing_across_a_zero():
    assert S.Arith(678, 234, "-").level == 1            # no borrow
    assert S.Arith(673, 234, "-").level == 2            # ones borrow
    assert S.Arith(623, 284, "-").level == 3            # ones and tens borrow
    assert S.Arith(503, 187, "-").level == 4            # tens: a 0 receiving a borrow
    assert S.Arith(5003, 1867, "-").level == 5          # 4 digits: tens and hundreds
    assert S.Arith(5003, 1867, "-").family == "subtraction4"
    assert S.generate("subtraction4", 10, 0)[0].family == "subtraction4"
    text = S.rationale(S.Arith(5003, 1867, "-"))
    assert text.splitlines() == [
        "ones: 13-7-0=6, write 6, borrow 1",
        "tens: 10-6-1=3, write 3, borrow 1",
        "hundreds: 10-8-1=1, write 1, borrow 1",
        "thousands: 5-1-1=3, write 3, borrow 0",
        "The answer is 3136."]
    assert S.rationale(S.Arith(4738, 1596, "+")).splitlines()[0] == "ones: 8+6+0=14, write 4, carry 1"
    assert S.parse_question("Question:\nWhat is 12 + 3?\nQuestion:\nWhat is 5003 - 1867?") \
        == S.Arith(5003, 1867, "-")
    assert S.parse_question("What is six?") is None


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_teacher_accuracy_is_within_3_points_of_its_configured_rate(rate):
    problems = S.generate("subtraction", 1000, seed=0)
    teacher = S.TeacherModel(error_rate=rate, seed=1)
    correct = 0
    for p in problems:
        text, kind = teacher.answer(p, 0)
        right = S.rationale_answer(text) == str(p.answer)
        assert right == (kind == "correct")
        correct += right
    assert abs(correct / len(problems) - (1 - rate)) <= 0.03


def test_errors_are_likelier_on_harder_levels_and_the_bug_lives_across_zeros():
    problems = S.generate("subtraction4", 500, seed=1)
    teacher = S.TeacherModel(error_rate=0.5, seed=0)
    wrong, kinds = Counter(), Counter()
    for p in problems:
        for k in range(4):
            text, kind = teacher.answer(p, k)
            kinds[(p.level, kind)] += 1
            wrong[p.level] += kind != "correct"
    assert wrong[1] < wrong[2] < wrong[3] < wrong[4]
    assert kinds[(5, "bug")] > kinds[(5, "slip")] > 0          # the systematic bug: level 5 only
    assert not any(kinds[(lv, "bug")] for lv in (1, 2, 3, 4))
    small = Counter(k for p in S.generate("subtraction", 200, seed=1)
                    for k in [(p.level, teacher.answer(p, 0)[1])])
    assert small[(4, "bug")] > 0 and not any(small[(lv, "bug")] for lv in (1, 2, 3))
    # the bug: the 0 becomes 9, the borrow is dropped, the next column follows it
    p = S.Arith(5003, 1867, "-")
    text = next(t for t, kind in (teacher.answer(p, k) for k in range(50)) if kind == "bug")
    assert text.splitlines()[1:] == [
        "tens: 9-6-0=3, write 3, borrow 0",
        "hundreds: 10-8-0=2, write 2, borrow 1",
        "thousands: 5-1-1=3, write 3, borrow 0",
        "The answer is 3236."]


def test_a_slip_keeps_the_hard_steps_and_later_steps_follow_it():
    p = S.Arith(5673, 1234, "-")       # only the ones column borrows (4 digits: 3 easy columns)
    teacher = S.TeacherModel(error_rate=1.0, seed=0)
    right = p.steps()
    slipped_easy = 0
    slips = 0
    for k in range(60):
        text, kind = teacher.answer(p, k)
        if kind == "correct":            # error chance is capped at 0.95
            continue
        assert kind == "slip"            # no zero on top: never the bug
        slips += 1
        lines = text.splitlines()[:-1]
        bad = [i for i, (a, b) in enumerate(zip(lines, (S.step_line(s, "-") for s in right)))
               if a != b]
        assert len(bad) == 1          # a subtraction slip changes one digit only
        slipped_easy += bad[0] != 0
    assert slipped_easy >= 0.6 * slips       # mostly not the borrowing column
    a = S.Arith(4738, 1596, "+")      # addition: the carry follows the slipped sum
    text = S.render(teacher._slip(a, a.steps(), __import__("random").Random(0)), "+")
    assert S.rationale_answer(text) != str(a.answer)


def test_bad_family_and_arguments_are_refused():
    with pytest.raises(CuratorError, match="unknown synthetic family"):
        S.generate("division", 5, 0)
    with pytest.raises(CuratorError, match="train or test"):
        S.generate("subtraction", 5, 0, split="dev")
    with pytest.raises(CuratorError, match="error-rate"):
        S.TeacherModel(error_rate=1.5)


def test_load_synthetic_stores_problems_once(cli, wh):
    r = cli("load", "synthetic", "--family", "subtraction", "--n", "25", "--seed", "2")
    assert r.exit_code == 0, r.output
    r = cli("load", "synthetic", "--family", "subtraction", "--n", "25", "--seed", "2")
    assert r.exit_code == 0 and "25" in r.output
    r = cli("load", "synthetic", "--family", "subtraction", "--n", "10", "--seed", "2",
            "--split", "test")
    assert r.exit_code == 0, r.output
    with wh.read() as con:
        rows = con.execute("SELECT split, count(*), min(level), max(level), "
                           "count(DISTINCT problem_id) FROM problems GROUP BY 1 ORDER BY 1").fetchall()
        ans = con.execute("SELECT question, reference_answer FROM problems LIMIT 1").fetchall()
    assert rows == [("test", 10, 1, 4, 10), ("train", 25, 1, 4, 25)]
    q, a = ans[0]
    assert S.parse_question(q).answer == int(a)
    r = cli("load", "synthetic", "--n", "5", ok=False)
    assert r.exit_code != 0 and "--family" in str(r.exception)
