"""The teacher's row: its pass rate on the training export and, from the warehouse, its
accuracy on the eval sets' problems."""

from __future__ import annotations

from pathlib import Path

from curator.errors import CuratorError
from distill.compare.config import CompareConfig
from distill.compare.stats import _level_key


def teacher_stats(cfg: CompareConfig) -> dict:
    """The teacher named by ``[teacher] model``: its pass rate on the training export's
    problems (share of its rationales labelled positive, overall and per level, and the
    share of problems with at least one positive), and, when ``[teacher] db`` names the
    warehouse, its accuracy on each eval set's problems from the warehouse's grades (per
    problem, the mean over its samples)."""
    from distill.data import read_export
    tc = cfg.teacher or {}
    model = tc["model"]
    export = Path(tc.get("export") or cfg.train_data)
    if not export.exists():
        raise CuratorError(f"{cfg.path}: [teacher] export {export}: no such file")
    every = read_export(export)
    recs = [r for r in every if r.get("teacher_model") == model]
    if not recs:
        models = sorted({str(r.get("teacher_model")) for r in every})
        raise CuratorError(f"{cfg.path}: [teacher] model {model!r} has no rationale in {export} "
                           f"(its teacher_model values: {', '.join(models) or 'none'})")
    by_level: dict[str, list[bool]] = {}
    solved: dict[str, bool] = {}
    for r in recs:
        ok = r["label"] == "positive"
        lv = str(r["level"]) if r.get("level") is not None else "none"
        by_level.setdefault(lv, []).append(ok)
        solved[r["problem_id"]] = solved.get(r["problem_id"], False) or ok
    out = {"model": model, "title": tc.get("title") or f"teacher {model}",
           "train": {"export": str(export), "problems": len(solved), "rationales": len(recs),
                     "pass_rate": sum(r["label"] == "positive" for r in recs) / len(recs),
                     "problems_with_a_positive": sum(solved.values()) / len(solved),
                     "by_level": {k: sum(v) / len(v) for k, v in
                                  sorted(by_level.items(), key=lambda kv: _level_key(kv[0]))}},
           "sets": {}}
    if tc.get("db"):
        out["grader_version"], out["sets"] = _teacher_on_sets(cfg, model, Path(tc["db"]),
                                                              tc.get("grader_version"))
    return out


def _teacher_on_sets(cfg: CompareConfig, model: str, db: Path, grader_version: str | None):
    from curator.grading.api import GRADER_VERSION
    from curator.warehouse import Warehouse
    from distill.data import read_eval
    from distill.evaluate import subject_of, subject_order

    if not db.is_file():
        raise CuratorError(f"{cfg.path}: [teacher] db {db}: no such warehouse file")
    gv = grader_version or GRADER_VERSION
    sets = {}
    with Warehouse(db).read() as con:
        for e in cfg.evals:
            problems = read_eval(e["data"])
            limit = e.get("limit", cfg.evaluate.get("limit"))
            if limit:
                problems = [p for p in problems if (p.get("reference_answer") or "").strip()][:limit]
            ids = [p["problem_id"] for p in problems]
            if not ids:
                continue
            rows = con.execute(
                "SELECT s.problem_id, avg(CASE WHEN g.correct THEN 1.0 ELSE 0.0 END), count(*) "
                "FROM samples s JOIN runs r USING (run_id) JOIN grades g USING (sample_id) "
                "WHERE r.model = ? AND g.grader_version = ? AND s.problem_id IN "
                "(SELECT unnest(?::VARCHAR[])) GROUP BY s.problem_id",
                [model, gv, ids]).fetchall()
            if not rows:
                continue
            acc = {pid: (a, n) for pid, a, n in rows}
            meta = {p["problem_id"]: p for p in problems}
            by_s: dict[str, list[float]] = {}
            by_l: dict[str, list[float]] = {}
            for pid, (a, _) in acc.items():
                p = meta[pid]
                by_s.setdefault(subject_of(p), []).append(a)
                by_l.setdefault(str(p["level"]) if p.get("level") is not None else "none", []).append(a)
            subj = {x: sum(by_s[x]) / len(by_s[x]) for x in subject_order(by_s)}
            sets[e["name"]] = {
                "problems": len(acc), "of": len(ids), "samples": sum(n for _, n in acc.values()),
                "all": sum(a for a, _ in acc.values()) / len(acc),
                "avg": sum(subj.values()) / len(subj), "by_subject": subj,
                "by_level": {k: sum(v) / len(v) for k, v in
                             sorted(by_l.items(), key=lambda kv: _level_key(kv[0]))}}
    return gv, sets


def teacher_markdown(teacher: dict) -> list[str]:
    from distill.evaluate import pct
    tr = teacher["train"]
    levels = list(tr["by_level"])
    lines = [f"## {teacher['title']}", "",
             f"On the training export's {tr['problems']} problems (`{tr['export']}`): "
             f"{pct(tr['pass_rate'])}% of its {tr['rationales']} rationales are labelled "
             f"positive; {pct(tr['problems_with_a_positive'])}% of the problems have at least "
             f"one positive. These are the students' training problems, not the eval sets.", "",
             "| | " + " | ".join(f"L{lv}" for lv in levels) + " | All |",
             "|---|" + "---:|" * (len(levels) + 1),
             "| pass rate | " + " | ".join(pct(tr["by_level"][lv]) for lv in levels)
             + f" | {pct(tr['pass_rate'])} |", ""]
    for name, s in teacher.get("sets", {}).items():
        lines.append(f"On {name}: {pct(s['all'])}% (All), {pct(s['avg'])}% (Avg), the mean over "
                     f"its {s['samples']} graded samples of {s['problems']} of the {s['of']} "
                     f"problems ({teacher.get('grader_version')}).")
    if teacher.get("sets"):
        lines.append("")
    return lines
