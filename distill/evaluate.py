"""``distill eval``: sample K rationales per problem from a student, grade them with the
curator's grader, vote with every rule of :mod:`distill.asc.voting`, and report accuracy.

Steps, each leaving a file in OUT so that an interrupted evaluation resumes where it
stopped and nothing paid for is computed twice:

1. sampling through :func:`distill.generate.generate` (batched across problems, left
   padding) into ``samples.jsonl`` (K per problem) and, when sampling at a temperature,
   one greedy rationale per problem into ``greedy.jsonl``; both are the JSONL that
   ``curator import jsonl`` loads, so a student's rationales can go to the warehouse too;
2. grading with :func:`curator.grading.grade` (the code path that labelled the teacher
   data) into ``grades.jsonl``; with a warehouse (:mod:`distill.eval_warehouse`), the
   rationales are stored there as a student run and graded there, by the teachers'
   grader and version, and those verdicts are the ones voted on;
3. ranking-model scores (``--ranker``) into ``scores.jsonl``;
4. voting (``votes.jsonl``, one row per problem and rule) and the report: accuracy
   overall, per subject and per level for every rule in ``report.json``, ``report.md``
   (laid out like the paper's table: rules by subjects, then the average over subjects)
   and ``report.png``; with a warehouse, each rule's result is a row of ``evaluations``
   (with its 95% interval), read back into ``report.json`` under ``warehouse``.

Accuracy is a mean of per-problem credits (ties share credit, see :mod:`distill.asc.voting`);
``avg`` is the mean over subjects (the paper's "Avg"), ``all`` the mean over problems.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from curator.durable import append_jsonl_durable
from curator.durable import read_jsonl_durable as read_jsonl
from curator.errors import CuratorError
from distill.asc.voting import Candidate, rules_for, vote_all
from distill.sampling import SamplingConfig

# The MATH subjects in the paper's column order; other subjects (or datasets without one)
# follow alphabetically.
MATH_SUBJECTS = ("Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
                 "Number Theory", "Prealgebra", "Precalculus")
SHORT = {"Algebra": "Alg", "Counting & Probability": "C&P", "Geometry": "Geo",
         "Intermediate Algebra": "IAlg", "Number Theory": "NT", "Prealgebra": "PAlg",
         "Precalculus": "PCalc"}

SAMPLES, GREEDY, GRADES, SCORES, VOTES = ("samples.jsonl", "greedy.jsonl", "grades.jsonl",
                                          "scores.jsonl", "votes.jsonl")
MANIFEST = "eval.json"
REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"


@dataclass(frozen=True)
class EvalConfig(SamplingConfig):
    """How rationales are sampled and which rules are reported (the sampling settings
    of :class:`SamplingConfig`, in its field order, with eval's defaults)."""
    samples: int = 16
    temperature: float = 0.7
    batch_size: int = 32
    greedy: bool = True          # one extra greedy rationale per problem (rule "greedy")
    limit: int | None = None     # only the first N problems
    asc_weight: str = "s"        # the ASC weighting shown as "ASC" in summaries

    def sampling_key(self) -> dict:
        """What two evaluations must share for their samples to be interchangeable (K,
        the problems, the seed and the batch size may change between invocations)."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p}


# -- small file helpers ----------------------------------------------------------------------

def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Append and fsync: what is on disk survives an interruption (a torn last line left
    by an interrupted run is cut off first; :func:`read_jsonl` ignores it until then)."""
    append_jsonl_durable(path, records, ensure_ascii=False, clean_tail=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _sample_key(rec: dict, source: str) -> str:
    return f"{source}|{rec['problem_id']}|{rec['sample_index']}|{_digest(rec['completion'])}"


# -- steps -----------------------------------------------------------------------------------

def check_manifest(out: Path, manifest: dict) -> bool:
    """Refuse to mix samples of different students or sampling settings in one OUT;
    returns whether OUT has no ``eval.json`` yet (the caller writes it once every other
    check has passed, so that a refused evaluation leaves nothing behind)."""
    path = out / MANIFEST
    if not path.is_file():
        return True
    old = json.loads(path.read_text())
    diff = [k for k in ("base", "adapter", "mode", "model", "sampling", "prompt_format")
            if old.get(k) != manifest.get(k)]
    if diff:
        raise CuratorError(f"{out} holds an evaluation with other settings ({', '.join(diff)}: "
                           f"{[old.get(k) for k in diff]} there, {[manifest.get(k) for k in diff]} "
                           f"now); choose another --out")
    return False


def sample(model, tokenizer, fmt, problems: list[dict], cfg: EvalConfig, name: str,
           mode: str | None, out: Path, progress: Callable[[int], None] | None = None
           ) -> tuple[int, float]:
    """Sample what ``samples.jsonl`` / ``greedy.jsonl`` still miss; returns (new
    rationales, seconds)."""
    from distill.generate import generate

    start = time.perf_counter()
    # Problems with prompts of similar length share batches: less left padding to
    # prefill and attend over. (Records are keyed by problem, so the order is free.)
    problems = sorted(problems, key=lambda p: len(fmt.prompt_ids(tokenizer, p["question"])))
    n = 0
    runs = [(SamplingConfig(samples=cfg.samples, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p,
                            batch_size=cfg.batch_size, seed=cfg.seed), name, SAMPLES)]
    if cfg.greedy and cfg.temperature > 0:
        runs.append((SamplingConfig(samples=1, max_new_tokens=cfg.max_new_tokens,
                                    temperature=0.0, batch_size=cfg.batch_size,
                                    seed=cfg.seed), f"{name}:greedy", GREEDY))
    for scfg, model_name, file in runs:
        for _ in generate(model, tokenizer, fmt, problems, scfg, model_name, mode=mode,
                          out=out / file, progress=progress):
            n += 1
    return n, time.perf_counter() - start


def load_samples(out: Path, problems: list[dict], k: int) -> dict[str, dict[str, list[dict]]]:
    """``{source: {problem_id: [records by sample_index]}}`` for the evaluated problems."""
    wanted = {p["problem_id"] for p in problems}
    res: dict[str, dict[str, list[dict]]] = {}
    for source, file, limit in (("samples", SAMPLES, k), ("greedy", GREEDY, 1)):
        by: dict[str, dict[int, dict]] = defaultdict(dict)
        for r in read_jsonl(out / file):
            if r["problem_id"] in wanted and int(r["sample_index"]) < limit:
                by[r["problem_id"]][int(r["sample_index"])] = r
        res[source] = {pid: [d[i] for i in sorted(d)] for pid, d in by.items()}
    return res


def warehouse_grades(out: Path, samples: dict, store, progress=None) -> dict[str, dict]:
    """The warehouse's verdicts on every sample (stored and graded there first), keyed
    like :func:`grade_samples`'; the ones ``grades.jsonl`` lacks are appended to it."""
    from curator import grading
    version = grading.GRADER_VERSION
    verdicts = store.store_and_grade(samples, progress=progress)
    have = {g["key"] for g in read_jsonl(out / GRADES) if g.get("grader") == version}
    cache, new = {}, []
    for source, per in samples.items():
        for pid, recs in per.items():
            for r in recs:
                g = verdicts.get(source, {}).get((pid, int(r["sample_index"])))
                if g is None:
                    raise CuratorError(f"the warehouse could not grade problem {pid} sample "
                                       f"{r['sample_index']} ({source}): it has no reference "
                                       f"answer there")
                key = _sample_key(r, source)
                cache[key] = {"key": key, "grader": version, "correct": bool(g["correct"]),
                              "status": g["status"], "extracted": g["extracted"],
                              "normalized": g["normalized"], "rule": None}
                if key not in have:
                    new.append(cache[key])
    if new:
        append_jsonl(out / GRADES, new)
    return cache


def grade_samples(out: Path, problems: list[dict], samples: dict, grader=None,
                  progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """Grades of every sample by ``curator.grading.grade``, cached in ``grades.jsonl``
    under the grader version (a newer grader regrades)."""
    from curator import grading
    grader = grader or grading.grade
    version = grading.GRADER_VERSION
    cache = {g["key"]: g for g in read_jsonl(out / GRADES) if g.get("grader") == version}
    by_id = {p["problem_id"]: p for p in problems}
    todo = []
    for source, per in samples.items():
        for pid, recs in per.items():
            for r in recs:
                key = _sample_key(r, source)
                if key not in cache:
                    todo.append((key, by_id[pid], r))
    batch: list[dict] = []
    for i, (key, p, r) in enumerate(todo):
        g = grader(p["reference_answer"], r["completion"], question=p["question"])
        row = {"key": key, "grader": version, "correct": bool(g.correct), "status": g.status,
               "extracted": g.extracted, "normalized": g.normalized, "rule": g.rule}
        cache[key] = row
        batch.append(row)
        if len(batch) >= 256 or i == len(todo) - 1:
            append_jsonl(out / GRADES, batch)
            if progress:
                progress(len(batch))
            batch = []
    return cache


def score_samples(out: Path, problems: list[dict], samples: dict, ranker_dir: Path,
                  dtype: str, device: str | None, batch_size: int) -> dict[str, float]:
    """Ranker scores of the sampled rationales, cached in ``scores.jsonl`` per ranker."""
    from distill.asc.ranker import MANIFEST as RANKER_MANIFEST
    from distill.asc.ranker import Ranker

    manifest = Path(ranker_dir) / RANKER_MANIFEST
    if not manifest.is_file():
        raise CuratorError(f"--ranker {ranker_dir}: no {RANKER_MANIFEST} there; train one "
                           f"with `distill ranker`")
    ranker_id = _digest(manifest.read_text())
    cache = {s["key"]: s["score"] for s in read_jsonl(out / SCORES) if s.get("ranker") == ranker_id}
    by_id = {p["problem_id"]: p for p in problems}
    todo = [(_sample_key(r, "samples"), by_id[pid]["question"], r["completion"])
            for pid, recs in samples["samples"].items() for r in recs]
    todo = [t for t in todo if t[0] not in cache]
    if todo:
        ranker = Ranker.load(ranker_dir, dtype=dtype, device=device, batch_size=batch_size)
        chunk = 256
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            scores = ranker.score([q for _, q, _ in part], [c for _, _, c in part])
            rows = [{"key": k, "ranker": ranker_id, "score": s} for (k, _, _), s in zip(part, scores)]
            append_jsonl(out / SCORES, rows)
            cache.update({r["key"]: r["score"] for r in rows})
        del ranker
        _free()
    return cache


def _free() -> None:
    """Give a finished model's accelerator memory back before the next model loads. (A
    full gc pass costs a third of a second with torch and transformers imported, so it
    runs only where it frees device memory.)"""
    import torch
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def candidates_of(recs: list[dict], source: str, grades: dict, scores: dict | None
                  ) -> list[Candidate]:
    out = []
    for r in recs:
        key = _sample_key(r, source)
        g = grades[key]
        out.append(Candidate(answer=g["extracted"], correct=g["correct"],
                             logprob=r.get("logprob"), tokens=r.get("completion_tokens"),
                             score=None if scores is None else scores.get(key)))
    return out


def vote_problems(problems: list[dict], samples: dict, grades: dict, scores: dict | None,
                  same=None, greedy_is_first: bool = False) -> tuple[list[str], list[dict]]:
    """(rules, one row per problem with every rule's answer and credit)."""
    if same is None:
        from curator.grading import equivalent as same
    rules = list(rules_for(scores is not None))
    has_greedy = greedy_is_first or bool(samples.get("greedy"))
    all_rules = (["greedy"] if has_greedy else []) + rules
    rows = []
    for p in problems:
        cands = candidates_of(samples["samples"].get(p["problem_id"], []), "samples", grades, scores)
        votes = vote_all(cands, rules, same)
        row = {"problem_id": p["problem_id"], "dataset": p.get("dataset"),
               "subject": p.get("subject"), "level": p.get("level"), "samples": len(cands),
               "correct_samples": sum(c.correct for c in cands), "rules": {}}
        if has_greedy:
            if greedy_is_first:
                g = votes["first"]
            else:
                gc_ = candidates_of(samples["greedy"].get(p["problem_id"], []), "greedy", grades, None)
                g = vote_all(gc_, ["first"], same)["first"]
            row["rules"]["greedy"] = {"answer": g.answer, "credit": g.credit, "tied": g.tied}
        for r, v in votes.items():
            row["rules"][r] = {"answer": v.answer, "credit": v.credit, "tied": v.tied}
        rows.append(row)
    return all_rules, rows


# -- summaries (pure) --------------------------------------------------------------------------

def subject_of(row: dict) -> str:
    """The column a problem counts in: its subject, or its dataset when it has none."""
    return row.get("subject") or row.get("dataset") or "(none)"


def subject_order(subjects: Iterable[str]) -> list[str]:
    s = set(subjects)
    return [m for m in MATH_SUBJECTS if m in s] + sorted(s - set(MATH_SUBJECTS))


def summarise(rules: list[str], rows: list[dict]) -> dict:
    """Accuracy (mean credit) per rule: ``all`` (over problems), ``avg`` (mean over
    subjects), ``by_subject``, ``by_level``, ``by_dataset``; plus problem counts."""
    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    out = {}
    for rule in rules:
        by_s, by_l, by_d = defaultdict(list), defaultdict(list), defaultdict(list)
        for row in rows:
            c = row["rules"][rule]["credit"]
            by_s[subject_of(row)].append(c)
            by_l[str(row["level"]) if row.get("level") is not None else "none"].append(c)
            by_d[row.get("dataset") or "(none)"].append(c)
        subj = {s: mean(by_s[s]) for s in subject_order(by_s)}
        out[rule] = {"all": mean([row["rules"][rule]["credit"] for row in rows]),
                     "avg": mean(list(subj.values())), "by_subject": subj,
                     "by_level": {k: mean(v) for k, v in sorted(by_l.items())},
                     "by_dataset": {k: mean(v) for k, v in sorted(by_d.items())}}
    counts = {"problems": len(rows),
              "by_subject": {s: n for s, n in _counts(rows, subject_of).items()},
              "by_level": _counts(rows, lambda r: str(r["level"]) if r.get("level") is not None else "none")}
    return {"accuracy": out, "counts": counts}


def _counts(rows, key) -> dict:
    c: dict = defaultdict(int)
    for r in rows:
        c[key(r)] += 1
    return dict(sorted(c.items()))


RULE_TITLES = {"greedy": "greedy", "first": "first sample", "majority": "self-consistency",
               "prob": "prob.-weighted SC", "asc:1": "ASC w=1", "asc:1+s": "ASC w=1+s",
               "asc:1+2s": "ASC w=1+2s", "asc:s": "ASC w=s"}


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def markdown_report(report: dict) -> str:
    """The paper's layout: one row per rule, one column per subject, then Avg (mean over
    subjects) and All (mean over problems); then the same by level."""
    acc, counts = report["accuracy"], report["counts"]
    rules = report["rules"]
    subjects = list(counts["by_subject"])
    levels = list(counts["by_level"])
    lines = [f"# Evaluation of {report['model']}", "",
             f"{report['problems']} problems from `{report['data']}`, {report['samples']} "
             f"rationales each (temperature {report['sampling']['temperature']}, at most "
             f"{report['sampling']['max_new_tokens']} new tokens); accuracy in %.", "",
             "## By subject", "",
             "| rule | " + " | ".join(f"{SHORT.get(s, s)} ({counts['by_subject'][s]})"
                                       for s in subjects) + " | Avg | All |",
             "|---|" + "---:|" * (len(subjects) + 2)]
    for r in rules:
        a = acc[r]
        lines.append(f"| {RULE_TITLES.get(r, r)} | " + " | ".join(pct(a["by_subject"][s])
                                                            for s in subjects)
                     + f" | {pct(a['avg'])} | {pct(a['all'])} |")
    lines += ["", "## By level", "",
              "| rule | " + " | ".join(f"L{lv} ({counts['by_level'][lv]})" for lv in levels) + " |",
              "|---|" + "---:|" * len(levels)]
    for r in rules:
        lines.append(f"| {RULE_TITLES.get(r, r)} | " + " | ".join(pct(acc[r]["by_level"][lv])
                                                            for lv in levels) + " |")
    s = report["sample_grades"]
    lines += ["", f"Sampled rationales graded correct: {s['correct']} of {s['total']} "
                  f"({pct(s['correct'] / s['total'] if s['total'] else None)} %); statuses "
                  + ", ".join(f"{k} {v}" for k, v in s["status"].items()) + "."]
    if report.get("ranker"):
        ra = report["ranker"].get("pairwise_accuracy_on_samples") or {}
        lines.append(f"Ranker `{report['ranker']['dir']}`: pairwise accuracy on these samples "
                     f"{pct(ra.get('micro'))} % over {ra.get('pairs', 0)} pairs.")
    if report.get("warehouse"):
        w = report["warehouse"]
        lines.append(f"Stored in the warehouse `{w['db']}` as run `{w['run_id']}` "
                     f"(`{w['model']}`), one row of `evaluations` per rule.")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: Path) -> Path:
    """Grouped bars: accuracy per subject (and Avg) for every rule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = report["accuracy"]
    rules = report["rules"]
    cols = list(report["counts"]["by_subject"]) + ["Avg"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(cols) + 2), 3.8))
    width = 0.8 / max(1, len(rules))
    for i, r in enumerate(rules):
        ys = [100 * (acc[r]["by_subject"].get(c) or 0) for c in cols[:-1]] + [100 * (acc[r]["avg"] or 0)]
        ax.bar([j + i * width for j in range(len(cols))], ys, width, label=RULE_TITLES.get(r, r))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))])
    ax.set_xticklabels([SHORT.get(c, c) for c in cols], rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report['model']}: {report['problems']} problems, k={report['samples']}")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the whole evaluation ----------------------------------------------------------------------

def evaluate(base: str | Path, data: str | Path, out: str | Path, cfg: EvalConfig = EvalConfig(),
             adapter: str | Path | None = None, mode: str | None = None,
             ranker: str | Path | None = None, dtype: str = "float32",
             device: str | None = None, fmt=None, model_name: str | None = None,
             progress: Callable[[str, int], Callable[[int], None]] | None = None,
             warehouse=None, echo: Callable[[str], None] | None = None) -> dict:
    """Evaluate a student (``base`` + ``adapter`` in ``mode``) on the problems of ``data``
    (a ``curator export-eval`` file); writes OUT as described in the module docstring and
    returns the report. ``progress(label, total)`` returns a callback that is advanced
    by the number of items finished. ``warehouse`` (a
    :class:`distill.eval_warehouse.WarehouseTarget`) stores the student's rationales,
    grades and results there too; ``echo`` prints what was stored."""
    from distill.data import PromptFormat, read_eval
    from distill.generate import student_name
    from distill.models import default_device
    from distill.student import load_student, modes_of, read_manifest

    from curator.paths import guard_output
    from distill.outputs import EVAL_OUT

    # (cfg's sampling settings were checked when it was made: SamplingConfig)
    # OUT: absent, empty or an evaluation (never a foreign folder or a warehouse's)
    out = guard_output(out, EVAL_OUT, option="--out")
    problems = read_eval(data)
    no_ref = [p["problem_id"] for p in problems if not (p.get("reference_answer") or "").strip()]
    problems = [p for p in problems if (p.get("reference_answer") or "").strip()]
    if cfg.limit:
        problems = problems[:cfg.limit]
    if not problems:
        raise CuratorError(f"{data}: no problem with a reference answer to evaluate against")
    modes = modes_of(adapter)
    mode = mode or modes[0]
    if mode not in modes:
        raise CuratorError(f"--mode {mode!r}: this student supports {', '.join(modes)}")
    name = model_name or student_name(adapter, base, mode)
    device = device or default_device()
    greedy_is_first = cfg.temperature == 0
    # The prompt format a student was trained with (what load_student uses), known
    # before loading the model so that a mismatching OUT is refused at once.
    fmt = fmt or (PromptFormat.from_json(read_manifest(adapter)["prompt_format"])
                  if adapter is not None and "prompt_format" in read_manifest(adapter)
                  else PromptFormat())
    manifest = _manifest(base, adapter, mode, name, data, cfg, fmt)
    new_out = check_manifest(out, manifest)
    store = None
    if warehouse is not None:   # before the model loads: a wrong warehouse fails at once
        from distill.eval_warehouse import StudentStore
        store = StudentStore(warehouse, base=_where(base), adapter=adapter, mode=mode,
                             name=name, sampling={**cfg.sampling_key(), "mode": mode,
                                                  "prompt_format": fmt.to_json()},
                             problems=problems, echo=echo,
                             greedy_run=cfg.greedy and not greedy_is_first)
    # every check passed: OUT is this evaluation's from now on
    out.mkdir(parents=True, exist_ok=True)
    if new_out:
        from curator.paths import atomic_write
        with atomic_write(out / MANIFEST) as fh:
            fh.write(json.dumps(manifest, indent=2))

    def tick(label: str, total: int):
        return progress(label, total) if progress else None

    # 1. sampling (skipped entirely when every rationale is already on disk)
    samples = load_samples(out, problems, cfg.samples)
    have = sum(len(v) for v in samples["samples"].values()) + sum(len(v) for v in samples["greedy"].values())
    need = len(problems) * (cfg.samples + (1 if cfg.greedy and not greedy_is_first else 0))
    new, seconds = 0, 0.0
    if have < need:
        model, tokenizer, _, _ = load_student(base, adapter, dtype=dtype, device=device)
        new, seconds = sample(model, tokenizer, fmt, problems, cfg, name, mode, out,
                              tick("sampling", need - have))
        del model
        _free()
        samples = load_samples(out, problems, cfg.samples)

    # 2. grading, 3. ranker scores
    total = sum(len(v) for src in samples.values() for v in src.values())
    if store is None:
        grades = grade_samples(out, problems, samples, progress=tick("grading", total))
    else:
        grades = warehouse_grades(out, samples, store, progress=tick("grading", total))
    scores = None
    if ranker is not None:
        scores = score_samples(out, problems, samples, Path(ranker), dtype, device, cfg.batch_size)

    # 4. votes and report
    rules, rows = vote_problems(problems, samples, grades, scores, greedy_is_first=greedy_is_first)
    tmp = out / (VOTES + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    os.replace(tmp, out / VOTES)
    stored = None
    if store is not None:
        stored = store.summary(store.record(rules, rows, {
            "k": cfg.samples, "data": str(data), "out": str(out.resolve()),
            "ranker": str(ranker) if ranker is not None else None}))
    report = _report(out, base, adapter, mode, name, data, cfg, ranker, problems, samples,
                     grades, scores, rules, rows, no_ref, new, seconds, stored)
    return report


def _where(path) -> str:
    """A local path in one spelling (``out/nce`` and ``./out/nce`` are the same student);
    hub names as given."""
    p = Path(str(path))
    return str(p.resolve()) if p.exists() else str(path)


def _manifest(base, adapter, mode, name, data, cfg: EvalConfig, fmt) -> dict:
    return {"base": _where(base), "adapter": _where(adapter) if adapter else None, "mode": mode,
            "model": name, "data": str(data), "sampling": cfg.sampling_key(),
            "prompt_format": fmt.to_json()}


def _report(out, base, adapter, mode, name, data, cfg, ranker, problems, samples, grades,
            scores, rules, rows, no_ref, new, seconds, stored=None) -> dict:
    from distill.asc.ranker import pairwise_accuracy

    status: dict[str, int] = defaultdict(int)
    correct = total = 0
    ranked = []
    for pid, recs in samples["samples"].items():
        pos, neg = [], []
        for r in recs:
            key = _sample_key(r, "samples")
            g = grades[key]
            status[g["status"]] += 1
            correct += g["correct"]
            total += 1
            if scores is not None:
                (pos if g["correct"] else neg).append(scores[key])
        ranked.append((pos, neg))
    summary = summarise(rules, rows)
    report = {
        "model": name, "base": str(base), "adapter": str(adapter) if adapter else None,
        "mode": mode, "data": str(data), "problems": len(problems), "samples": cfg.samples,
        "skipped_without_reference": len(no_ref), "sampling": asdict(cfg), "rules": rules,
        "asc_rule": f"asc:{cfg.asc_weight}" if scores is not None else None,
        **summary,
        "sample_grades": {"correct": correct, "total": total, "status": dict(sorted(status.items()))},
        "ranker": {"dir": str(ranker), "pairwise_accuracy_on_samples": pairwise_accuracy(ranked)}
        if scores is not None else None,
        "throughput": {"new_rationales": new, "sampling_seconds": round(seconds, 3),
                       "rationales_per_second": round(new / seconds, 3) if seconds else None},
    }
    if stored is not None:
        report["warehouse"] = stored
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2))
    (out / REPORT_MD).write_text(markdown_report(report))
    plot_report(report, out / REPORT_PNG)
    return report
