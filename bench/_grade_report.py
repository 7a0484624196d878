"""The grading benchmark's report: why two graders disagree (:func:`category`), the
summary of one run's verdicts, its Markdown tables, and the Grading section of
BENCHMARKS.md that ``--write`` replaces.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict

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


# Hand-checked verdicts per disagreement category, from reading the examples the run
# writes to .bench-out/bench_grade/disagreements.jsonl. Keyed by (vs, category) or category.
MV, HE = "mv", "hendrycks"
VERDICTS: dict = {
    # ours vs math-verify
    (MV, "+ answer not boxed (closing phrase or last number)"):
        "**ours right** (all 40 read): the answer is only in a plain-text closing line "
        "(\"The answer is 24x^2-6x+3\", \"The answer is even\", a pmatrix, 5-12i, 8:34 PM), "
        "outside `$...$` and `\\boxed`; math-verify's parse of the whole rationale picks another "
        "expression or nothing",
    (MV, "+ same number or expression, other notation"):
        "**ours right** (all read): `\\dfrac{3744}{2,\\!598,\\!960}` = 6/4165, a choice label "
        "before the value in the box (`\\textbf{(C) }0.20`), a chain `(8\\cos..., ...) = (4\\sqrt2, ...)`, "
        "the reference's `\\phantom -1` (it is 1)",
    (MV, "+ multiple-choice letter"):
        "**ours right**: the box holds the letter and its option (`\\text{(D) sphere}`)",
    (MV, "+ interval, inequality, union, equation"):
        "**ours right**: `-3 < k < 5` for `(-3,5)` (math-verify needs the interval form)",
    (MV, "+ units, percent, currency, degrees"):
        "**ours right**: `6.4\\%` when a percent is asked, `30^\\circ` against a reference "
        "`30^\\circ.`",
    (MV, "+ closing phrase after the last box"): "**ours right**: same answer, other notation",
    (MV, "+ rounded as the question asks"):
        "**policy**: the question asks for a rounding; `\\pi` rounds to the reference 3.14",
    (MV, "+ text answer"): "**ours right**: `\\text{Thursday}`, last of two boxes",
    (MV, "+ equivalent expression (sympy)"): "**ours right**: `\\textbf{(B) }\\sqrt{2}/2`",
    (MV, "- different answer"):
        "**ours right in 4**: math-verify accepts `3 + d` for 3, `y=f(x)` for `x=1`, a wrong "
        "matrix, `12_{6}10_{6}` for `22_6`; **ours wrong in 1** (known gap): \"the solutions are "
        "$x = 3^4 = 81$ and $x = 4^4 = 256$\", unboxed: we take only the last math span",
    (MV, "- multiple-choice letter"): "**ours right**: the model chose (F), the reference is (C)",
    (MV, "- unparseable"):
        "**ours right in 1** (math-verify equates 7 with an unparseable `\\dotsm` product); "
        "**ours wrong in 1** (known gap): `\\text C. \\ \\ 119`, a choice label without "
        "parentheses before the value",
    (MV, "- closing phrase differs from the last box"):
        "**policy**: box 0, then \"The answer is (A).\": the last commitment is a bare letter, "
        "and the question is not multiple choice",
    (MV, "- no answer found"):
        "**ours right**: \"there is no such triangle\"; math-verify takes a 2 from the text",
    # ours vs hendrycks
    (HE, "+ answer not boxed (closing phrase or last number)"):
        "**ours right** (65 read, all right): mostly GPT-3.5, which often ends with \"The answer "
        "is X\" and no box; `is_equiv` has nothing to compare",
    (HE, "+ same number or expression, other notation"):
        "**ours right** (40 read): thousands separators (`21,\\!000`, `13,382`), `k = ...` labels, "
        "`5! = 120` chains, choice labels; **policy** for unsimplified fractions "
        "(`\\frac{52}{30}` for 26/15: the value counts, not the form)",
    (HE, "+ closing phrase after the last box"):
        "**ours right** (40 read): the closing line restates the box in other notation "
        "(`22500` for `22,500`, `-11, 5` for `5,\\,-11`) or simplifies it",
    (HE, "+ equivalent expression (sympy)"):
        "**ours right** (40 read): `\\sqrt{18}` = `3\\sqrt2`, `-7z-1` = `-1-7z`, `5!` = 120, "
        "`\\frac{9\\pi}{4}`; **policy** where the form was asked (`3(x^2+9x+20)` to \"expand\"): "
        "we grade the value, not the form",
    (HE, "+ multiple-choice letter"):
        "**ours right**: `\\text{(B) } x^2` for (B), `\\text{E}` for `\\text{(E)}`",
    (HE, "+ several answers, other order or form"):
        "**policy**: lists of solutions are unordered (`-2, -1, 2` for `-1,2,-2`)",
    (HE, "+ units, percent, currency, degrees"):
        "**ours right**: `\\$5,\\!500` for 5500, `-2,-12` for `-2 \\text{ or } -12`, "
        "`\\$10` for `10.00`",
    (HE, "+ base"): "**ours right**: the subscript written on one side only (`1011` for `1011_2`, "
        "`24` for `24_{10}`, `110111_2` for `110111`)",
    (HE, "+ interval, inequality, union, equation"):
        "**ours right**: `-1 \\le x \\le 2` for `[-1,2]`, `-2x + y - 3z - 8 = 0` for "
        "`2x - y + 3z + 8 = 0`, `\\sqrt{8}` for `2\\sqrt2` in a pair",
    (HE, "- several answers where one is asked"):
        "**policy**: two or more different boxed answers where one is asked (`30^\\circ` and "
        "`150^\\circ`): a hedge; `is_equiv` reads only the last box and is right by luck",
    (HE, "+ matrix, vector, tuple"):
        "**ours right**: bmatrix for pmatrix, `1/\\sqrt2` for `\\sqrt2/2`, `a=\\boxed{2}`, "
        "`c=\\boxed{8}` for `(2,8)`",
    (HE, "- closing phrase differs from the last box"):
        "**policy**: the closing line commits to something else than the box (box 7, then "
        "\"The answer is 42\"; box 0.20, then \"The answer is C.\")",
    (HE, "- different answer"):
        "**ours right**: 8:34 a.m. for 8:34 p.m.; **policy** in the others, several answers "
        "where one is asked: `\\boxed{(-2,4)}` and `\\boxed{(1,-2)}`, \"6 or 10\", black and gray",
    (HE, "+ text answer"): "**ours right**: `\\boxed{Sunday}` without `\\text`",
    (HE, "+ rounded as the question asks"):
        "**policy**: the question asks for a rounding, the answer rounds to the reference",
    (HE, "+ time"): "**ours right**: 20:34 for 8:34 p.m.",
    (HE, "- unparseable"):
        "**policy**: \"the answer is $\\text C$\", a bare letter for a question that is not "
        "multiple choice",
}


def write_benchmarks(text: str) -> None:
    write_section("bench-grading", text)
