"""`curator report`: one self-contained HTML page about the warehouse and its exports.

Per teacher run: pass rate by subject and by level, how many problems have 0..K
positives, grade statuses, rationale length of positives vs negatives, tokens and cost;
per export (the ``exports`` table, plus any ``--manifest``): split sizes. Plots are PNGs
embedded as base64 data URIs, so the HTML file can be mailed or opened anywhere; the same
PNGs are written beside it (``<name>_plots/``) for slides and notebooks.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path

from curator import __version__
from curator.errors import CuratorError
from curator.paths import PLOT_NAME, REPORT, REPORT_PLOTS, atomic_write, guard_output
from curator.warehouse import Warehouse


@dataclass
class Report:
    html: Path
    image_dir: Path
    images: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _table(columns: list[str], rows: list[tuple]) -> str:
    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .note { color: #8a5a00; } .meta { color: #666; font-size: 0.9em; }
"""


def build_report(wh: Warehouse, out: str | Path, manifests: list[Path] = (), *,
                 overwrite: bool = False) -> Report:
    """Write the HTML report to ``out`` and its PNGs to ``<out stem>_plots/``."""
    from curator.reporting import data, plots

    out = Path(out)
    if out.is_dir():
        raise CuratorError(f"{out} is a directory; name the HTML file to write, "
                           f"e.g. {out / 'report.html'}")
    image_dir = out.parent / f"{out.stem}_plots"
    # Before any work: OUT is a report page (or new, or --overwrite), never the
    # warehouse; the plots directory holds nothing but a report's PNGs.
    guard_output(out, REPORT, option="OUT", overwrite=overwrite,
                 overwrite_flag="--overwrite", warehouse=wh.path)
    guard_output(image_dir, REPORT_PLOTS, option="plots directory", warehouse=wh.path)
    d = data.collect(wh, [Path(m) for m in manifests])
    image_dir.mkdir(parents=True, exist_ok=True)
    for old_png in image_dir.iterdir():  # the previous report's plots (checked above)
        if PLOT_NAME.match(old_png.name):
            old_png.unlink()
    report = Report(html=out, image_dir=image_dir, notes=list(d.notes))

    sections: list[str] = []

    def figure(name: str, title: str, png: bytes | None, caption: str = "") -> None:
        if png is None:
            sections.append(f"<h2>{html.escape(title)}</h2><p class='note'>nothing to plot "
                            "yet</p>")
            return
        path = image_dir / f"{len(report.images) + 1:02d}-{name}.png"
        path.write_bytes(png)
        report.images.append(path)
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        sections.append(f"<h2>{html.escape(title)}</h2>"
                        + (f"<p>{html.escape(caption)}</p>" if caption else "")
                        + f"<img alt='{html.escape(title)}' src='{uri}'>")

    runs = d.runs
    run_rows = [(r["label"], r["kind"], r["samples"], r["graded"], r["positives"],
                 (r["positives"] / r["graded"]) if r["graded"] else None, r["errors"],
                 r["truncated"], r["prompt_tokens"], r["completion_tokens"], r["cost_usd"])
                for r in runs.iter_rows(named=True)]
    sections.append("<h2>Teacher runs</h2>" + _table(
        ["run", "kind", "samples", "graded", "positives", "pass rate", "errors", "truncated",
         "prompt tokens", "completion tokens", "cost (USD)"], run_rows))
    figure("pass-rate-by-subject", "Pass rate by subject", plots.pass_rate(
        d.by_subject, "subject", "Pass rate by subject, per teacher run"))
    figure("pass-rate-by-level", "Pass rate by level", plots.pass_rate(
        d.by_level, "level", "Pass rate by level, per teacher run"))
    figure("positives-per-problem", "Positives per problem",
           plots.positives_per_problem(d.positives_per_problem),
           "Problems with 0 positives are where the negatives are the only signal.")
    figure("grade-status", "Grade status breakdown", plots.status_breakdown(d.statuses))
    figure("rationale-length", "Rationale length: positives vs negatives",
           plots.lengths(d.lengths))
    recorded, _, _ = plots.recorded_usage(runs)
    if not runs.is_empty() and recorded.is_empty():
        report.notes.append("no run recorded tokens or cost (imported runs carry none), so "
                            "the report has no tokens and cost plot")
    elif not recorded.is_empty():
        left_out = runs.height - recorded.height
        figure("tokens-cost", "Tokens and cost", plots.tokens_and_cost(runs),
               f"{left_out} run(s) that recorded no usage (imports) are left out."
               if left_out else "")
    exports = d.exports
    figure("export-splits", "Exports: split sizes", plots.export_splits(exports))
    if not exports.is_empty():
        sections.append(_table(["export", "kind", "format", "created", "split", "records",
                                "positive", "negative"], exports.rows()))

    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in report.notes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>curator report</title>
<style>{_CSS}</style></head><body>
<h1>curator report</h1>
<p class="meta">warehouse {html.escape(str(wh.path))} &middot; grader
{html.escape(str(d.grader_version))} &middot; dust-curator {__version__} &middot; {stamp}</p>
{notes}
{''.join(sections)}
</body></html>
"""
    # Write-then-rename: a reader never sees half a report.
    guard_output(out, REPORT, option="OUT", overwrite=overwrite,
                 overwrite_flag="--overwrite", warehouse=wh.path)
    with atomic_write(out) as f:
        f.write(page)
    return report
