"""Rendering the comparison: ``comparison.md`` (one seed or over seeds),
``comparison.png`` and ``comparison.json``."""

from __future__ import annotations

from pathlib import Path

from distill.compare.config import METHODS, TITLES, CompareConfig
from distill.compare.stages import _write_json_atomic
from distill.compare.tables import aggregate, table
from distill.compare.teacher import teacher_markdown


def markdown_table(t: dict) -> str:
    from distill.evaluate import RULE_TITLES, SHORT, pct
    lines = [f"# {t['name']}: accuracy (%) of each method", "",
             f"Base model `{t['base']}`. Rows show the rule named in brackets; Avg is the mean "
             f"over subjects (the paper's), All the mean over problems.", ""]
    summary_head = "| method | " + " | ".join(f"{n} Avg" for n in t["sets"]) + " |"
    summary = [summary_head, "|---|" + "---:|" * len(t["sets"])]
    for m in t["methods"]:
        cells = []
        for s in t["sets"].values():
            row = s["rows"].get(m)
            cells.append(pct(row["avg"]) if row else "–")
        summary.append(f"| {TITLES[m]} | " + " | ".join(cells) + " |")
    for name, s in t["sets"].items():
        subj = s["subjects"]
        lines += [f"## {name}", "", f"`{s['data']}`", "",
                  "| method | " + " | ".join(SHORT.get(x, x) for x in subj) + " | Avg | All |",
                  "|---|" + "---:|" * (len(subj) + 2)]
        for m in t["methods"]:
            row = s["rows"].get(m)
            if row is None:
                lines.append(f"| {TITLES[m]} | " + " | ".join("–" for _ in subj) + " | – | – |")
                continue
            lines.append(f"| {TITLES[m]} ({RULE_TITLES.get(row['rule'], row['rule'])}) | "
                         + " | ".join(pct(row["by_subject"].get(x)) for x in subj)
                         + f" | {pct(row['avg'])} | {pct(row['all'])} |")
        tset = (t.get("teacher") or {}).get("sets", {}).get(name)
        if tset:
            lines.append(f"| teacher {t['teacher']['model']} (mean over its "
                         f"{tset['samples']} samples) | "
                         + " | ".join(pct(tset["by_subject"].get(x)) for x in subj)
                         + f" | {pct(tset['avg'])} | {pct(tset['all'])} |")
        rules = []
        for row in s["rows"].values():
            for k in (row or {}).get("rules", {}):
                if k not in rules:
                    rules.append(k)
        lines += ["", f"Every voting rule on {name} (All):", "",
                  "| student | " + " | ".join(RULE_TITLES.get(k, k) for k in rules) + " |",
                  "|---|" + "---:|" * len(rules)]
        seen = set()
        for m in t["methods"]:
            row = s["rows"].get(m)
            student = METHODS[m][0]
            if row is None or student in seen:
                continue
            seen.add(student)
            title = TITLES["nat+nce" if student == "nce" else m]
            lines.append(f"| {title} | " + " | ".join(pct(row["rules"].get(k)) for k in rules) + " |")
        lines.append("")
    if len(t["sets"]) > 1:
        lines += ["## All sets", ""] + summary + [""]
    if t.get("teacher"):
        lines += teacher_markdown(t["teacher"])
    return "\n".join(lines) + "\n"


def _cell(iv: dict | None, signed: bool = False) -> str:
    """``12.34 ± 1.20`` (percent; mean ± half-width), just the value when one seed."""
    if iv is None:
        return "–"
    m = 100 * iv["mean"]
    head = f"{m:+.2f}" if signed else f"{m:.2f}"
    return head if iv["half"] is None else f"{head} ± {100 * iv['half']:.2f}"


def _method_table(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """A titled Markdown table: a method column, then ``columns`` of right-aligned cells."""
    return (["", title, "", "| method | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
            + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows])


def markdown_aggregate(t: dict) -> str:
    from distill.evaluate import RULE_TITLES
    seeds = ", ".join(str(x) for x in t["seeds"])
    ref = t.get("reference")
    lines = [f"# {t['name']}: accuracy (%) of each method over {len(t['seeds'])} seeds", "",
             f"Base model `{t['base']}`; seeds {seeds}. Each cell is the mean over seeds ± the "
             f"half-width of its 95% interval (Student's t, n-1 degrees of freedom); a row "
             f"evaluated once (the untrained base) shows its one value. Avg is the mean over "
             f"subjects (the paper's), All the mean over problems."
             + (" Δ is the paired difference from CoT KD, seed by seed, with its own "
                "interval: an interval that excludes 0 is a difference these seeds resolve."
                if ref else ""), ""]
    for name, s in t["sets"].items():
        lines += [f"## {name}", "", f"`{s['data']}`", ""]
        head = "| method | seeds | Avg | All |" + (" Δ Avg vs CoT KD | Δ All vs CoT KD |" if ref else "")
        lines += [head, "|---|---:|---:|---:|" + ("---:|---:|" if ref else "")]
        for m in t["methods"]:
            row = s["rows"].get(m)
            if row is None:
                lines.append(f"| {TITLES[m]} | 0 | – | – |" + (" – | – |" if ref else ""))
                continue
            cells = [str(row["avg"]["n"] if row["avg"] else len(row["per_seed"])),
                     _cell(row["avg"]), _cell(row["all"])]
            if ref:
                d = row.get("vs_reference")
                cells += ["–", "–"] if d is None else [_cell(d["avg"], True), _cell(d["all"], True)]
            lines.append(f"| {TITLES[m]} ({RULE_TITLES.get(row['rule'], row['rule'])}) | "
                         + " | ".join(cells) + " |")
        tset = (t.get("teacher") or {}).get("sets", {}).get(name)
        if tset:
            lines.append(f"| teacher {t['teacher']['model']} (mean over its {tset['samples']} "
                         f"samples) | – | {_cell({'mean': tset['avg'], 'half': None})} | "
                         f"{_cell({'mean': tset['all'], 'half': None})} |"
                         + (" – | – |" if ref else ""))
        levels = s["levels"]
        if levels:
            by_level = [(TITLES[m], [_cell(row["by_level"].get(lv)) for lv in levels])
                        for m in t["methods"] if (row := s["rows"].get(m)) is not None]
            if tset:
                by_level.append((f"teacher {t['teacher']['model']}", [
                    _cell({"mean": tset["by_level"][lv], "half": None})
                    if tset["by_level"].get(lv) is not None else "–" for lv in levels]))
            columns = [f"L{lv}" for lv in levels]
            lines += _method_table(f"By level on {name} (All within each level):", columns,
                                   by_level)
            if ref:
                lines += _method_table(
                    f"By level on {name}, Δ vs CoT KD (paired over seeds):", columns,
                    [(TITLES[m], [_cell(row["vs_reference"]["by_level"].get(lv), True)
                                  for lv in levels])
                     for m in t["methods"]
                     if (row := s["rows"].get(m)) is not None and row.get("vs_reference")])
        per_seed = []
        for m in t["methods"]:
            row = s["rows"].get(m)
            if row is None:
                continue
            ps = row["per_seed"]
            if list(ps) == ["once"]:
                cells = [_cell({"mean": ps["once"]["avg"], "half": None})] * len(t["seeds"])
            else:
                cells = [_cell({"mean": ps[str(x)]["avg"], "half": None}) if str(x) in ps else "–"
                         for x in t["seeds"]]
            per_seed.append((TITLES[m], cells))
        lines += _method_table(f"Every seed on {name} (Avg):", [f"seed {x}" for x in t["seeds"]],
                               per_seed)
        lines.append("")
    if t.get("teacher"):
        lines += teacher_markdown(t["teacher"])
    return "\n".join(lines) + "\n"


def plot_table(t: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(t["sets"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(t["methods"]) + 2), 3.8))
    width = 0.8 / max(1, len(sets))
    for i, name in enumerate(sets):
        rows = t["sets"][name]["rows"]
        avgs = [(rows.get(m) or {}).get("avg") for m in t["methods"]]
        if any(isinstance(a, dict) for a in avgs):   # over seeds: mean with its interval
            ys = [100 * (a["mean"] if a else 0) for a in avgs]
            err = [100 * (a["half"] or 0) if a else 0 for a in avgs]
        else:
            ys, err = [100 * (a or 0) for a in avgs], None
        ax.bar([j + i * width for j in range(len(t["methods"]))], ys, width, label=name,
               yerr=err, capsize=3 if err else 0)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(t["methods"]))])
    ax.set_xticklabels([TITLES[m] for m in t["methods"]], rotation=25, ha="right")
    ax.set_ylabel("accuracy (%), Avg over subjects")
    ax.set_title(t["name"])
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_table(cfg: CompareConfig) -> dict:
    """``comparison.json``, ``comparison.md`` and ``comparison.png`` in OUT: the one-seed
    table, or with several seeds the aggregate over them."""
    t = aggregate(cfg) if cfg.multi_seed else table(cfg)
    _write_json_atomic(cfg.out / "comparison.json", t)
    (cfg.out / "comparison.md").write_text(markdown_aggregate(t) if cfg.multi_seed
                                           else markdown_table(t))
    plot_table(t, cfg.out / "comparison.png")
    return t
