"""The answer grader: decides whether a rationale's final answer equals the reference.

Public API::

    from curator.grading import grade, equivalent, extract_answer, GRADER_VERSION
    g = grade(r"\\frac{1}{2}", "... so the answer is $\\boxed{0.5}$.")
    g.correct, g.status, g.extracted, g.normalized, g.rule

and, over a warehouse, :func:`grade_pending` (what ``curator grade`` runs). The policy
(what counts as equal, and where we differ from other graders) is in the README section
"Grading policy".
"""

from curator.grading.api import (DEFAULT_TIMEOUT, GRADER_VERSION, STATUSES, Grade,
                                 equivalent, extract_answer, grade)


def __getattr__(name):
    # the warehouse side (duckdb, pyarrow) is imported only by those who use it
    if name in ("grade_pending", "GradeReport"):
        from curator.grading import batch
        return getattr(batch, name)
    raise AttributeError(name)


__all__ = ["DEFAULT_TIMEOUT", "GRADER_VERSION", "STATUSES", "Grade", "GradeReport",
           "equivalent", "extract_answer", "grade", "grade_pending"]
