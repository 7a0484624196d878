"""The comparison as data, drawn from the evaluations' reports: :func:`table` (one seed)
and :func:`aggregate` (over seeds: mean, 95% interval and paired difference from CoT KD)."""

from __future__ import annotations

import json

from curator.errors import CuratorError
from distill.compare.config import METHODS, REFERENCE, CompareConfig
from distill.compare.stats import _level_key, interval, paired
from distill.compare.teacher import teacher_stats


def collect(cfg: CompareConfig) -> dict:
    """``{set: {method: report}}`` for every finished evaluation (the one-seed layout)."""
    from distill.evaluate import REPORT_JSON
    res: dict[str, dict[str, dict]] = {}
    for e in cfg.evals:
        res[e["name"]] = {}
        for m in cfg.methods:
            p = cfg.eval_dir(e["name"], METHODS[m][0], cfg.seeds[0]) / REPORT_JSON
            if p.is_file():
                res[e["name"]][m] = json.loads(p.read_text())
    return res


def collect_seeds(cfg: CompareConfig) -> dict:
    """``{set: {method: {seed: report}}}`` for every finished evaluation; a
    seed-independent student's single report is under seed None."""
    from distill.evaluate import REPORT_JSON
    res: dict[str, dict[str, dict]] = {}
    for e in cfg.evals:
        res[e["name"]] = {}
        for m in cfg.methods:
            student = METHODS[m][0]
            got = {}
            for seed in cfg.seeds_of(student):
                p = cfg.eval_dir(e["name"], student, seed) / REPORT_JSON
                if p.is_file():
                    got[seed] = json.loads(p.read_text())
            res[e["name"]][m] = got
    return res


def table(cfg: CompareConfig, reports: dict | None = None) -> dict:
    """The comparison as data: per set and method, the row's rule and its accuracy per
    subject, Avg (mean over subjects) and All (mean over problems); and every rule's
    overall accuracy."""
    from distill.evaluate import subject_order
    reports = reports if reports is not None else collect(cfg)
    out: dict = {"name": cfg.name, "base": cfg.base, "methods": cfg.methods, "sets": {}}
    teacher = teacher_stats(cfg) if cfg.teacher else None
    for e in cfg.evals:
        per = reports.get(e["name"], {})
        tset = (teacher or {}).get("sets", {}).get(e["name"]) or {}
        subjects = subject_order({s for r in per.values() for s in r["counts"]["by_subject"]}
                                 | set(tset.get("by_subject", {})))
        rows = {}
        for m in cfg.methods:
            r = per.get(m)
            if r is None:
                rows[m] = None
                continue
            rule = cfg.asc_rule if METHODS[m][1] == "asc_rule" else cfg.rule
            if rule not in r["accuracy"]:
                raise CuratorError(f"{cfg.path}: [report] rule {rule!r} is not in the "
                                   f"evaluation of {m} (has {', '.join(r['rules'])})")
            a = r["accuracy"][rule]
            rows[m] = {"rule": rule, "by_subject": a["by_subject"], "avg": a["avg"],
                       "all": a["all"], "rules": {k: v["all"] for k, v in r["accuracy"].items()},
                       "problems": r["problems"], "samples": r["samples"]}
        out["sets"][e["name"]] = {"data": str(e["data"]), "subjects": subjects, "rows": rows}
    if teacher:
        out["teacher"] = teacher
    return out


def _metric(report: dict, rule: str) -> dict:
    a = report["accuracy"][rule]
    return {"avg": a["avg"], "all": a["all"], "by_level": a.get("by_level", {}),
            "by_subject": a.get("by_subject", {})}


def aggregate(cfg: CompareConfig, reports: dict | None = None) -> dict:
    """The comparison over seeds as data: per set and method, each seed's accuracy (Avg over
    subjects, All over problems, per level and subject), the mean and 95% interval of each,
    and the paired difference against CoT KD (``sft``) with its interval."""
    from distill.evaluate import subject_order
    reports = reports if reports is not None else collect_seeds(cfg)
    out: dict = {"name": cfg.name, "base": cfg.base, "methods": cfg.methods,
                 "seeds": cfg.seeds, "confidence": 0.95,
                 "reference": REFERENCE if REFERENCE in cfg.methods else None, "sets": {}}
    for e in cfg.evals:
        per = reports.get(e["name"], {})
        levels = sorted({lv for runs in per.values() for r in runs.values()
                         for lv in r["counts"]["by_level"]}, key=_level_key)
        subjects = subject_order({x for runs in per.values() for r in runs.values()
                                  for x in r["counts"]["by_subject"]})
        rows: dict = {}
        for m in cfg.methods:
            runs = per.get(m) or {}
            if not runs:
                rows[m] = None
                continue
            rule = cfg.asc_rule if METHODS[m][1] == "asc_rule" else cfg.rule
            for seed, r in runs.items():
                if rule not in r["accuracy"]:
                    raise CuratorError(f"{cfg.path}: [report] rule {rule!r} is not in the "
                                       f"evaluation of {m} (seed {seed}; has "
                                       f"{', '.join(r['rules'])})")
            seeds = {seed: _metric(r, rule) for seed, r in runs.items()}
            rows[m] = {
                "rule": rule, "problems": next(iter(runs.values()))["problems"],
                # a seed-independent row's one value is under "once"
                "per_seed": {("once" if k is None else str(k)): v for k, v in seeds.items()},
                "avg": interval([v["avg"] for v in seeds.values()]),
                "all": interval([v["all"] for v in seeds.values()]),
                "by_level": {lv: interval([v["by_level"].get(lv) for v in seeds.values()])
                             for lv in levels},
                "by_subject": {x: interval([v["by_subject"].get(x) for v in seeds.values()])
                               for x in subjects},
                "_seeds": seeds}
        ref = rows.get(REFERENCE)
        for m, row in rows.items():
            if row is None:
                continue
            if ref is None or m == REFERENCE:
                row["vs_reference"] = None
                continue
            a, b = row["_seeds"], ref["_seeds"]
            row["vs_reference"] = {
                "avg": paired({k: v["avg"] for k, v in a.items()}, {k: v["avg"] for k, v in b.items()}),
                "all": paired({k: v["all"] for k, v in a.items()}, {k: v["all"] for k, v in b.items()}),
                "by_level": {lv: paired({k: v["by_level"].get(lv) for k, v in a.items()},
                                        {k: v["by_level"].get(lv) for k, v in b.items()})
                             for lv in levels}}
        for row in rows.values():
            if row is not None:
                row.pop("_seeds")
        out["sets"][e["name"]] = {"data": str(e["data"]), "levels": levels,
                                  "subjects": subjects, "rows": rows}
    if cfg.teacher:
        out["teacher"] = teacher_stats(cfg)
    return out
