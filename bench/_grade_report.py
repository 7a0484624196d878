"""The grading benchmark's report: why two graders disagree (:func:`category`), the
summary of one run's verdicts, its Markdown tables, and the Grading section of
BENCHMARKS.md that ``--write`` replaces. The hand-checked verdict on each category is prose,
kept in ``grade_report_verdicts.md`` beside this file.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

from bench._common import ROOT, write_section
from bench._hendrycks import last_boxed_only_string

OUT = ROOT / ".bench-out" / "bench_grade"
TEACHERS = ("gpt-3.5-turbo", "gpt-4")


# -- disagreement categories ----------------------------------------------------------

_CHOICE_REF = re.compile(r"^\s*(?:\\text\{\s*)?\(?[A-J]\)?\s*\}?\s*$")
_WORD_REF = re.compile(r"^\s*(?:\\text(?:bf)?\{)?\s*[A-Za-z][A-Za-z ,.'-]{2,}\}?\s*$")


def category(r: dict, other: str) -> str:
    """Why ours and ``other`` (``mv`` or ``hendrycks``) differ on ``r``: a short name.

    The rules only route a sample to the category whose examples it resembles; what each
    category is, and who is right in it, comes from reading its examples (VERDICTS)."""
    ref, ext = (r["reference"] or "").strip(), r["extracted"] or ""
    comp = r["completion"] or ""
    box = last_boxed_only_string(comp)
    rule, how = r["rule"] or "", r["extraction"] or ""
    unboxed = how in ("phrase", "last-math", "hashes", "bare") or how.startswith(("phrase", "last", "leading"))
    if r["ours"]:
        if unboxed and box is None:
            return "+ answer not boxed (closing phrase or last number)"
        if unboxed:
            return "+ closing phrase after the last box"
        if _CHOICE_REF.match(ref) or rule.startswith("choice"):
            return "+ multiple-choice letter"
        if rule == "text" or _WORD_REF.match(ref):
            return "+ text answer"
        if rule in ("interval", "union", "relation") or "\\cup" in ref:
            return "+ interval, inequality, union, equation"
        if rule in ("matrix", "vector", "tuple"):
            return "+ matrix, vector, tuple"
        if rule in ("list", "set"):
            return "+ several answers, other order or form"
        if rule in ("base", "time", "ratio"):
            return f"+ {rule}"
        if rule in ("number-rounded", "sympy-rounded"):
            return "+ rounded as the question asks"
        if rule == "percent" or re.search(r"\\%|\\\$|\\text\{\s*[a-z]|\^\s*\{?\\circ", ext + ref):
            return "+ units, percent, currency, degrees"
        if rule in ("exact", "number"):
            return "+ same number or expression, other notation"
        return "+ equivalent expression (sympy)"
    if r["status"] == "no_answer":
        return "- no answer found"
    if r["status"] in ("unparseable", "timeout"):
        return f"- {r['status']}"
    if rule == "kind" and "," in ext and "," not in ref:
        return "- several answers where one is asked"
    if how.startswith("phrase") and box is not None:
        return "- closing phrase differs from the last box"
    if _CHOICE_REF.match(ref):
        return "- multiple-choice letter"
    return "- different answer"


# -- report ---------------------------------------------------------------------------

def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.2f}%" if b else "n/a"


def summarise(rows: list[dict], raw: dict) -> dict:
    by_id = {r["sample_id"]: r for r in rows}
    sub = [by_id[i] for i in raw["sub_ids"]]
    mv = raw["mv"]
    for r, m in zip(sub, mv["verdicts"]):
        r["mv"] = m
    res = {"machine": raw["machine"], "load_before": raw["load_before"],
           "load_after": raw.get("load_after"), "sample": len(sub), "seed": raw["seed"],
           "rationales": len(rows), "mv_timeout": raw["mv_timeout"],
           "grade_pending": raw["pending"], "grade_pending_1": raw["pending1"],
           "ours_per_sample_s": raw["ours_sub_wall"],
           "ours_per_sample_mismatch_vs_pending": sum(1 for r, o in zip(sub, raw["ours_sub"]) if o != r["ours"]),
           "mv_wall_s": mv["wall"], "mv_inner_s": mv["inner_seconds"], "mv_hangs": len(mv["hangs"]),
           "mv_errors": len(mv["errors"]), "mv_over_5s": mv["over_5s"], "mv_slowest_s": mv["slowest"],
           "hendrycks_s": raw["hendrycks_s"],
           "ours_timeouts": sum(1 for r in rows if r["status"] == "timeout")}
    # positives / negatives per teacher
    table = {}
    for t in TEACHERS:
        full = [r for r in rows if r["teacher"] == t]
        part = [r for r in sub if r["teacher"] == t]
        table[t] = {"n": len(full), "ours": sum(r["ours"] for r in full),
                    "hendrycks": sum(r["hendrycks"] for r in full),
                    "n_sub": len(part), "ours_sub": sum(r["ours"] for r in part),
                    "mv_sub": sum(r["mv"] for r in part),
                    "hendrycks_sub": sum(r["hendrycks"] for r in part)}
    res["per_teacher"] = table
    combos = Counter((r["ours"], r["mv"], r["hendrycks"]) for r in sub)
    res["combos"] = {f"{int(a)}{int(b)}{int(c)}": n for (a, b, c), n in combos.items()}
    res["agree"] = {
        "ours_mv": sum(r["ours"] == r["mv"] for r in sub),
        "ours_hendrycks_sub": sum(r["ours"] == r["hendrycks"] for r in sub),
        "mv_hendrycks": sum(r["mv"] == r["hendrycks"] for r in sub),
        "ours_hendrycks_full": sum(r["ours"] == r["hendrycks"] for r in rows)}
    cats: dict[str, dict[str, list]] = {"mv": defaultdict(list), "hendrycks": defaultdict(list)}
    for r in sub:
        if r["ours"] != r["mv"]:
            cats["mv"][category(r, "mv")].append(r)
    for r in rows:
        if r["ours"] != r["hendrycks"]:
            cats["hendrycks"][category(r, "hendrycks")].append(r)
    res["categories"] = {k: {c: len(v) for c, v in sorted(d.items(), key=lambda kv: -len(kv[1]))}
                         for k, d in cats.items()}
    # examples for the hand check (all of them go to the file; a few to the report)
    rng = random.Random(1)
    with open(OUT / "disagreements.jsonl", "w") as fh:
        for k, d in cats.items():
            for c, rs in d.items():
                for r in rng.sample(rs, min(len(rs), 40)):
                    fh.write(json.dumps({"vs": k, "category": c, "sample_id": r["sample_id"],
                                         "teacher": r["teacher"], "reference": r["reference"],
                                         "extracted": r["extracted"], "rule": r["rule"],
                                         "extraction": r["extraction"], "ours": r["ours"],
                                         "mv": r.get("mv"), "hendrycks": r["hendrycks"],
                                         "tail": (r["completion"] or "")[-300:]}) + "\n")
    return res


def markdown(res: dict, command: str) -> str:
    n = res["sample"]
    gp, gp1 = res["grade_pending"], res.get("grade_pending_1")
    ours_ps = n / res["ours_per_sample_s"]
    mv_ps = n / res["mv_wall_s"]
    lines = [
        "## Grading: `curator grade` vs math-verify, with Hendrycks `is_equiv` as the anchor",
        "",
        f"The {res['rationales']:,} TDG rationales (MATH train, GPT-3.5-turbo and GPT-4, 8 per "
        f"problem), imported with `curator import tdg`. Our grader (`{res['grade_pending']['version']}`) runs as "
        "users run it, `grade_pending` on a fresh copy of the ungraded warehouse in a fresh "
        "process (extraction and cheap pairs in process, each distinct pair once, sympy pairs in "
        "killable workers, verdicts committed every second), and as `grade()` called once per "
        "sample in one process (its one guard worker for sympy included). math-verify "
        "(`verify(parse('\\\\boxed{' + reference + '}'), parse(rationale))`, its defaults, its "
        "own 5 s signal limits) runs in one worker process with a hard "
        f"{res['mv_timeout']:.0f} s kill per sample, so a hang is counted, not fatal. At "
        f"{mv_ps:.0f} samples/s it would need {res['rationales'] / mv_ps / 60:.0f} minutes for all "
        f"{res['rationales']:,}, so both per-sample figures are on the same fixed random "
        f"subsample of {n:,} rationales (seed {res['seed']}); the `grade_pending` rows are all "
        f"{res['rationales']:,} against math-verify's per-sample rate. "
        "Hendrycks `is_equiv` on the last `\\boxed{}`, the paper's labelling, is reproduced "
        "verbatim in the script and runs on all of them.",
        "",
        "| grader | samples | processes | wall s | samples/s | x math-verify |",
        "|---|---:|---|---:|---:|---:|",
        f"| ours, `grade_pending` (fresh warehouse copy) | {gp['graded']:,} | 1 + {gp['workers']} sympy workers "
        f"| {gp['seconds']:.1f} | {gp['graded'] / gp['seconds']:,.0f} | **{gp['graded'] / gp['seconds'] / mv_ps:.0f}x** |",
    ]
    if gp1:
        lines.append(f"| ours, `grade_pending --workers 1` | {gp1['graded']:,} | 1 + 1 sympy worker "
                     f"| {gp1['seconds']:.1f} | {gp1['graded'] / gp1['seconds']:,.0f} | "
                     f"{gp1['graded'] / gp1['seconds'] / mv_ps:.0f}x |")
    lines += [
        f"| ours, `grade()` per sample | {n:,} | 1 (+ its guard worker, used in turn) | "
        f"{res['ours_per_sample_s']:.1f} | {ours_ps:,.0f} | **{ours_ps / mv_ps:.0f}x** |",
        f"| math-verify `parse` + `verify` per sample | {n:,} | 1 | {res['mv_wall_s']:.1f} | "
        f"{mv_ps:,.1f} | 1x |",
        f"| hendrycks `is_equiv` (string only) | {res['rationales']:,} | 1 | {res['hendrycks_s']:.1f} | "
        f"{res['rationales'] / res['hendrycks_s']:,.0f} | |",
        "",
        f"Hangs: math-verify {res['mv_hangs']} killed at {res['mv_timeout']:.0f} s, "
        f"{res['mv_over_5s']} samples ran into its own 5 s limit (slowest "
        f"{res['mv_slowest_s']:.1f} s), {res['mv_errors']} raised; ours "
        f"{res['ours_timeouts']} timeouts of 120,000 (status `timeout`, 5 s limit). "
        f"`grade_pending` compared {gp['pairs']:,} distinct pairs, {gp['sympy_pairs']:,} of them "
        f"in sympy ({gp['sympy_seconds']:.1f} s of the {gp['seconds']:.1f} s). The per-sample "
        f"`grade()` verdicts differ from `grade_pending`'s on "
        f"{res['ours_per_sample_mismatch_vs_pending']} of the {n:,} samples.",
        "",
        f"Targets: at least 10x math-verify's throughput, **met** ({gp['graded'] / gp['seconds'] / mv_ps:.0f}x "
        f"for `curator grade`, {ours_ps / mv_ps:.0f}x per sample); zero hangs, **met** "
        f"({res['mv_hangs']} for math-verify, {res['ours_timeouts']} timeouts for ours)."
        if gp['graded'] / gp['seconds'] / mv_ps >= 10 and ours_ps / mv_ps >= 10 and not res['ours_timeouts']
        and not res['mv_hangs'] else
        f"Targets: at least 10x math-verify's throughput ({gp['graded'] / gp['seconds'] / mv_ps:.0f}x for "
        f"`curator grade`, {ours_ps / mv_ps:.0f}x per sample); zero hangs ({res['mv_hangs']} for "
        f"math-verify, {res['ours_timeouts']} timeouts for ours): **not all met**.",
        "",
        "**Positives / negatives per teacher** (all 120,000 for ours and hendrycks; the "
        f"subsample for math-verify, with ours and hendrycks on the same subsample beside it):",
        "",
        "| teacher | rationales | ours | hendrycks | subsample | ours (sub) | math-verify (sub) | hendrycks (sub) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, d in res["per_teacher"].items():
        pn = lambda p, tot: f"{p:,} / {tot - p:,}"  # noqa: E731
        lines.append(f"| {t} | {d['n']:,} | {pn(d['ours'], d['n'])} | {pn(d['hendrycks'], d['n'])} | "
                     f"{d['n_sub']:,} | {pn(d['ours_sub'], d['n_sub'])} | {pn(d['mv_sub'], d['n_sub'])} | "
                     f"{pn(d['hendrycks_sub'], d['n_sub'])} |")
    a = res["agree"]
    lines += [
        "",
        "**Agreement** (share of samples with the same verdict): "
        f"ours vs math-verify {pct(a['ours_mv'], n)}, ours vs hendrycks {pct(a['ours_hendrycks_sub'], n)} "
        f"on the subsample and {pct(a['ours_hendrycks_full'], res['rationales'])} on all 120,000, "
        f"math-verify vs hendrycks {pct(a['mv_hendrycks'], n)}.",
        "",
        "| ours | math-verify | hendrycks | samples (subsample) |",
        "|---|---|---|---:|",
    ]
    for k, v in sorted(res["combos"].items(), key=lambda kv: -kv[1]):
        yn = lambda c: "positive" if c == "1" else "negative"  # noqa: E731
        lines.append(f"| {yn(k[0])} | {yn(k[1])} | {yn(k[2])} | {v:,} |")
    for vs, title in (("mv", "ours vs math-verify (subsample)"), ("hendrycks", "ours vs hendrycks (all 120,000)")):
        lines += ["", f"**Disagreements, {title}**, by category (`+`: ours positive, the other "
                  "negative; `-`: the reverse), each checked by hand on real examples "
                  "(`.bench-out/bench_grade/disagreements.jsonl` holds up to 40 per category):",
                  "", "| category | samples | verdict (hand check) |", "|---|---:|---|"]
        for c, cnt in res["categories"][vs].items():
            lines.append(f"| {c} | {cnt:,} | {VERDICTS.get((vs, c), 'not checked by hand (new in this run)')} |")
    lines += ["", f"Machine: {res['machine']}; load average {res['load_before']:.1f} before the run "
              "(the machine is shared with other engineers' jobs).",
              f"Command: `{command}`"]
    return "\n".join(lines)


def load_verdicts(path: Path) -> dict[tuple[str, str], str]:
    """The hand-checked verdict per disagreement category, ``{(other grader, category):
    verdict}``, from a Markdown file: ``## key: title`` names the other grader (``mv`` or
    ``hendrycks``), ``### category`` a category, and the paragraph under it (its lines
    joined with single spaces) is the verdict. Lines before the first ``##`` describe the
    file. A malformed file stops with an error naming its line."""
    verdicts: dict[tuple[str, str], list[str]] = {}
    vs = key = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path}:{n}"
        if line.startswith("## "):
            vs, sep, _ = line[3:].partition(":")
            if not sep or not vs.strip():
                raise ValueError(f"{where}: a grader heading is '## key: title', got {line!r}")
            vs, key = vs.strip(), None
        elif line.startswith("### "):
            if vs is None:
                raise ValueError(f"{where}: category {line[4:]!r} before any '## key: title'")
            key = (vs, line[4:].strip())
            if key in verdicts:
                raise ValueError(f"{where}: category {key[1]!r} of {vs!r} given twice")
            verdicts[key] = []
        elif line.strip() and vs is not None:
            if key is None:
                raise ValueError(f"{where}: text under {vs!r} outside any '### category'")
            verdicts[key].append(line.strip())
    empty = [k for k, text in verdicts.items() if not text]
    if empty:
        raise ValueError(f"{path}: no verdict under {empty[0][1]!r} of {empty[0][0]!r}")
    return {k: " ".join(text) for k, text in verdicts.items()}


# Hand-checked verdicts per disagreement category, from reading the examples the run
# writes to .bench-out/bench_grade/disagreements.jsonl.
VERDICTS = load_verdicts(Path(__file__).with_name("grade_report_verdicts.md"))


def write_benchmarks(text: str) -> None:
    write_section("bench-grading", text)
