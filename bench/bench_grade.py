"""Grading benchmark: our grader against math-verify and the Hendrycks string normaliser
on the 120,000 TDG rationales (MATH train, GPT-3.5-turbo and GPT-4, 8 each).

Three graders, one run:

* **ours**: ``grade_pending`` on a fresh copy of an ungraded warehouse (what
  ``curator grade`` runs: extraction and cheap pairs in process, each distinct pair
  once, sympy pairs in killable workers, verdicts committed every second), timed in a
  fresh process; and ``grade()`` called once per sample, in this process, on the
  subsample below (no pair deduplication across samples; its in-process LRU caches and
  its one guard worker for sympy are on, as in any user's loop).
* **math-verify** (PyPI ``math-verify``, a dev dependency): ``verify(parse(gold),
  parse(rationale))`` with its defaults (its own signal-based 5 s limits on parsing and
  on verifying), gold written as ``\\boxed{reference}``. It runs in one worker process
  of ours with a hard wall-clock limit per sample (``--mv-timeout``): a sample past it
  is counted as a hang, the worker is killed and replaced, and the run goes on.
* **hendrycks**: ``is_equiv`` on the last ``\\boxed{}`` of the rationale, as in
  hendrycks/math ``modeling/math_equivalence.py`` and ``dataset/util.py`` (reproduced
  below, bugs included): the normaliser the paper's code used, the anchor for
  positives/negatives. Pure string work, run on all 120,000.

math-verify manages about 100-125 samples/s here, so it runs on a fixed random subsample
(``--sample``, seeded); the throughput ratio compares both graders on that same
subsample, one process each at a time. Agreement is reported on the subsample (all
three) and, for ours vs hendrycks, on all 120,000.

    .venv/bin/python bench/bench_grade.py --db /tmp/tdg_ungraded.duckdb      # copied, not changed
    .venv/bin/python bench/bench_grade.py                                    # builds the warehouse
    .venv/bin/python bench/bench_grade.py --reuse --write                    # re-render saved results

Raw per-sample verdicts go to ``.bench-out/bench_grade/`` (``--reuse`` renders from
them without grading again); ``--write`` replaces the Grading section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / ".bench-out" / "bench_grade"
TEACHERS = ("gpt-3.5-turbo", "gpt-4")


# -- the anchor: Hendrycks' is_equiv, as published (hendrycks/math, MIT) ------------------
# Reproduced line for line, including its quirks (a bare `except`, `_remove_right_units`
# asserting on two "\text{ " and so falling back to raw string equality, "0.5" as the
# only decimal rewritten): this is the normaliser whose verdicts the paper trained on.

def last_boxed_only_string(string):
    idx = string.rfind("\\boxed")
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None

    i = idx
    right_brace_idx = None
    num_left_braces_open = 0
    while i < len(string):
        if string[i] == "{":
            num_left_braces_open += 1
        if string[i] == "}":
            num_left_braces_open -= 1
            if num_left_braces_open == 0:
                right_brace_idx = i
                break
        i += 1

    if right_brace_idx is None:
        retval = None
    else:
        retval = string[idx:right_brace_idx + 1]

    return retval


def remove_boxed(s):
    left = "\\boxed{"
    try:
        assert s[:len(left)] == left
        assert s[-1] == "}"
        return s[len(left):-1]
    except Exception:
        return None


def _fix_fracs(string):
    substrs = string.split("\\frac")
    new_str = substrs[0]
    if len(substrs) > 1:
        substrs = substrs[1:]
        for substr in substrs:
            new_str += "\\frac"
            if substr[0] == "{":
                new_str += substr
            else:
                try:
                    assert len(substr) >= 2
                except AssertionError:
                    return string
                a = substr[0]
                b = substr[1]
                if b != "{":
                    if len(substr) > 2:
                        post_substr = substr[2:]
                        new_str += "{" + a + "}{" + b + "}" + post_substr
                    else:
                        new_str += "{" + a + "}{" + b + "}"
                else:
                    if len(substr) > 2:
                        post_substr = substr[2:]
                        new_str += "{" + a + "}" + b + post_substr
                    else:
                        new_str += "{" + a + "}" + b
    string = new_str
    return string


def _fix_a_slash_b(string):
    if len(string.split("/")) != 2:
        return string
    a = string.split("/")[0]
    b = string.split("/")[1]
    try:
        a = int(a)
        b = int(b)
        assert string == "{}/{}".format(a, b)
        new_string = "\\frac{" + str(a) + "}{" + str(b) + "}"
        return new_string
    except (AssertionError, ValueError):
        return string


def _remove_right_units(string):
    # "\\text{ " only ever occurs (at least in the val set) when describing units
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        assert len(splits) == 2
        return splits[0]
    else:
        return string


def _fix_sqrt(string):
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[0] != "{":
            a = split[0]
            new_substr = "\\sqrt{" + a + "}" + split[1:]
        else:
            new_substr = "\\sqrt" + split
        new_string += new_substr
    return new_string


def _strip_string(string):
    # linebreaks
    string = string.replace("\n", "")
    # remove inverse spaces
    string = string.replace("\\!", "")
    # replace \\ with \
    string = string.replace("\\\\", "\\")
    # replace tfrac and dfrac with frac
    string = string.replace("tfrac", "frac")
    string = string.replace("dfrac", "frac")
    # remove \left and \right
    string = string.replace("\\left", "")
    string = string.replace("\\right", "")
    # Remove circ (degrees)
    string = string.replace("^{\\circ}", "")
    string = string.replace("^\\circ", "")
    # remove dollar signs
    string = string.replace("\\$", "")
    # remove units (on the right)
    string = _remove_right_units(string)
    # remove percentage
    string = string.replace("\\%", "")
    string = string.replace("\\%", "")  # the original's second line is "\%", the same string
    # " 0." equivalent to " ." and "{0." equivalent to "{." Alternatively, add "0" if "." is the start of the string
    string = string.replace(" .", " 0.")
    string = string.replace("{.", "{0.")
    # if empty, return empty string
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    # to consider: get rid of e.g. "k = " or "q = " at beginning
    if len(string.split("=")) == 2:
        if len(string.split("=")[0]) <= 2:
            string = string.split("=")[1]
    # fix sqrt3 --> sqrt{3}
    string = _fix_sqrt(string)
    # remove spaces
    string = string.replace(" ", "")
    # \frac1b or \frac12 --> \frac{1}{b} and \frac{1}{2}, etc.
    string = _fix_fracs(string)
    # manually change 0.5 --> \frac{1}{2}
    if string == "0.5":
        string = "\\frac{1}{2}"
    # NOTE: X/Y changed to \frac{X}{Y} in dataset, but in simple cases fix in case the model output is X/Y
    string = _fix_a_slash_b(string)
    return string


def is_equiv(str1, str2):
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        ss1 = _strip_string(str1)
        ss2 = _strip_string(str2)
        return ss1 == ss2
    except Exception:  # the original's bare `except:`
        return str1 == str2


def hendrycks_correct(reference: str, completion: str) -> bool:
    """The paper's labelling: ``is_equiv`` of the reference and the content of the
    rationale's last ``\\boxed{}`` (no box: negative)."""
    boxed = last_boxed_only_string(completion)
    return is_equiv(reference, remove_boxed(boxed) if boxed else None)


# -- math-verify, one sample per task in a killable worker ------------------------------

def mv_task(reference: str, completion: str) -> tuple[bool, float]:
    """(verdict, seconds) of math-verify on one rationale, gold as ``\\boxed{reference}``."""
    from math_verify import parse, verify
    t = time.perf_counter()
    ok = bool(verify(parse("\\boxed{" + reference + "}"), parse(completion)))
    return ok, time.perf_counter() - t


def mv_warm() -> tuple[bool, float]:
    return mv_task("1", "x")


# -- the warehouse --------------------------------------------------------------------

def curator(*args: str, db: Path) -> None:
    exe = Path(sys.executable).with_name("curator")
    cmd = [str(exe) if exe.exists() else "curator", *args, "--db", str(db)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build(db: Path, data: Path) -> None:
    if not (data / "tdg").is_dir():
        sys.exit(f"no TDG data under {data}; pass --data (the shared data folder)")
    curator("load", "math", str(data / "MATH"), db=db)
    curator("import", "tdg", str(data / "tdg" / "GPT3.5-turbo-MATH.jsonl.gz"), "--model", "gpt-3.5-turbo", db=db)
    curator("import", "tdg", str(data / "tdg" / "GPT4-MATH.jsonl.gz"), "--model", "gpt-4", db=db)


GRADE_PENDING = r"""
import json, sys, time
t0 = time.perf_counter()
from curator.grading import grade_pending
from curator.warehouse import Warehouse
wh = Warehouse(sys.argv[1])
workers = int(sys.argv[2]) if sys.argv[2] != "0" else None
t1 = time.perf_counter()
rep = grade_pending(wh, workers=workers)
t2 = time.perf_counter()
print(json.dumps({"graded": rep.graded, "positives": rep.positives, "seconds": rep.seconds,
                  "wall_with_imports": t2 - t0, "imports": t1 - t0, "pairs": rep.pairs,
                  "sympy_pairs": rep.sympy_pairs, "sympy_seconds": rep.sympy_seconds,
                  "status": dict(rep.status), "version": rep.grader_version}))
"""


def time_grade_pending(src: Path, work: Path, workers: int) -> tuple[dict, Path]:
    """grade_pending on a fresh copy of ``src``, in a fresh process."""
    db = work / f"graded-w{workers}.duckdb"
    shutil.copyfile(src, db)
    p = subprocess.run([sys.executable, "-c", GRADE_PENDING, str(db), str(workers)],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        sys.exit(f"grade_pending failed:\n{p.stderr[-3000:]}")
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    rep["workers"] = workers or os.cpu_count()
    return rep, db


def load_rows(db: Path) -> list[dict]:
    """Every rationale with its teacher, reference, question and our verdict."""
    from curator.grading import GRADER_VERSION
    from curator.warehouse import Warehouse
    with Warehouse(db).read() as con:
        cur = con.execute("""
            SELECT s.sample_id, r.model, p.reference_answer, s.completion, p.question,
                   g.correct, g.status, g.extracted, g.rule, g.extraction
            FROM samples s JOIN problems p USING (problem_id) JOIN runs r USING (run_id)
            LEFT JOIN grades g ON g.sample_id = s.sample_id AND g.grader_version = ?
            WHERE s.completion IS NOT NULL ORDER BY s.sample_id""", [GRADER_VERSION])
        names = ["sample_id", "teacher", "reference", "completion", "question", "ours",
                 "status", "extracted", "rule", "extraction"]
        return [dict(zip(names, r)) for r in cur.fetchall()]


# -- the runs -------------------------------------------------------------------------

def run_ours_per_sample(sub: list[dict]) -> tuple[float, list[bool]]:
    from curator.grading import grade
    grade("1", "1")  # imports
    t = time.perf_counter()
    out = [grade(r["reference"], r["completion"], question=r["question"]).correct for r in sub]
    return time.perf_counter() - t, out


def run_math_verify(sub: list[dict], timeout: float) -> dict:
    import bench.bench_grade as me  # the worker imports this module by that name
    from curator.grading.pool import CRASHED, TIMEOUT, run_tasks
    # one warm-up task in its own pool, so the import of math-verify (about 1 s) is paid
    # before timing; the timed pool's worker imports it on its first task
    list(run_tasks(me.mv_warm, [(0, ())], workers=1, timeout=60))
    verdicts: dict[int, bool] = {}
    inner: list[float] = []
    hangs, errors = [], []
    t = time.perf_counter()
    tasks = ((i, (r["reference"], r["completion"])) for i, r in enumerate(sub))
    for i, ok, value in run_tasks(me.mv_task, tasks, workers=1, timeout=timeout, batch_size=16):
        if value is TIMEOUT or value is CRASHED:
            hangs.append(i)
            verdicts[i] = False
        elif not ok:
            errors.append((i, str(value)[:200]))
            verdicts[i] = False
        else:
            verdicts[i] = value[0]
            inner.append(value[1])
    wall = time.perf_counter() - t
    return {"wall": wall, "verdicts": [verdicts[i] for i in range(len(sub))], "hangs": hangs,
            "errors": errors, "inner_seconds": sum(inner),
            "over_5s": sum(1 for x in inner if x >= 4.9), "slowest": max(inner, default=0.0)}


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


def machine() -> str:
    import duckdb
    try:
        import importlib.metadata as md
        mv = md.version("math-verify")
        l2s = md.version("latex2sympy2_extended")
        sp = md.version("sympy")
    except Exception:
        mv = l2s = sp = "?"
    mem = ""
    try:
        kb = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 ** 2:.0f} GiB"
    except Exception:
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, "
            f"duckdb {duckdb.__version__}, sympy {sp}, latex2sympy2_extended {l2s}, math-verify {mv}")


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
    path = ROOT / "BENCHMARKS.md"
    src = path.read_text()
    if "<!-- bench-grading:begin -->" not in src:
        raise SystemExit("BENCHMARKS.md has no bench-grading markers")
    new = re.sub(r"(<!-- bench-grading:begin -->\n).*?(<!-- bench-grading:end -->)",
                 lambda m: m.group(1) + text + "\n" + m.group(2), src, flags=re.S)
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="ungraded warehouse with the TDG samples (copied, never changed)")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--sample", type=int, default=12_000, help="subsample for the per-sample runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mv-timeout", type=float, default=30.0, help="hard limit per math-verify sample, s")
    ap.add_argument("--workers-1", action="store_true", help="also time grade_pending with one sympy worker")
    ap.add_argument("--reuse", action="store_true",
                    help="no grading: recompute the tables from the last run's saved verdicts")
    ap.add_argument("--write", action="store_true", help="update the Grading section of BENCHMARKS.md")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        raw = json.loads((OUT / "raw.json").read_text())
    else:
        raw = measure(args)
        raw["command"] = ".venv/bin/python bench/bench_grade.py " + " ".join(
            a for a in sys.argv[1:] if a != "--write")
        (OUT / "raw.json").write_text(json.dumps(raw))
    rows = load_rows(OUT / "graded.duckdb")
    t = time.perf_counter()
    for r in rows:
        r["hendrycks"] = hendrycks_correct(r["reference"], r["completion"])
    if "hendrycks_s" not in raw:  # timed in the measuring run, kept by --reuse
        raw["hendrycks_s"] = time.perf_counter() - t
        (OUT / "raw.json").write_text(json.dumps(raw))
    res = summarise(rows, raw)
    (OUT / "results.json").write_text(json.dumps(res, indent=1))
    text = markdown(res, raw["command"].strip())
    print(text)
    if args.write:
        write_benchmarks(text)


def measure(args) -> dict:
    """Run the graders; return what the tables need (the graded warehouse is kept in OUT)."""
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    try:
        src = work / "ungraded.duckdb"
        if args.db:
            shutil.copyfile(args.db, src)
        else:
            build(src, args.data)
        print("grade_pending on a fresh copy ...", flush=True)
        pending, graded_db = time_grade_pending(src, work, 0)
        print(json.dumps(pending), flush=True)
        pending1 = None
        if args.workers_1:
            pending1, _ = time_grade_pending(src, work, 1)
            print(json.dumps(pending1), flush=True)
        shutil.copyfile(graded_db, OUT / "graded.duckdb")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = load_rows(OUT / "graded.duckdb")
    sub_idx = sorted(random.Random(args.seed).sample(range(len(rows)), min(args.sample, len(rows))))
    sub = [rows[i] for i in sub_idx]
    print(f"ours per sample on {len(sub):,} ...", flush=True)
    ours_wall, ours_sub = run_ours_per_sample(sub)
    print(f"  {ours_wall:.1f}s; math-verify on the same {len(sub):,} ...", flush=True)
    mv = run_math_verify(sub, args.mv_timeout)
    print(f"  {mv['wall']:.1f}s, {len(mv['hangs'])} hangs", flush=True)
    return {"machine": machine(), "load_before": load, "seed": args.seed, "mv_timeout": args.mv_timeout,
            "sub_ids": [r["sample_id"] for r in sub], "mv": mv, "ours_sub": ours_sub,
            "ours_sub_wall": ours_wall, "pending": pending, "pending1": pending1,
            "load_after": os.getloadavg()[0]}


if __name__ == "__main__":
    main()
