"""The report's plots: each function takes a small frame and returns PNG bytes, or None
when there is nothing to draw. matplotlib with the non-interactive Agg backend, so the
report renders on machines without a display.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

STATUS_COLOURS = {"correct": "#2ca02c", "wrong": "#d62728", "no_answer": "#ff7f0e",
                  "unparseable": "#9467bd", "timeout": "#8c564b"}
MAX_EXPORTS = 8  # the newest ones; the table under the plot lists all
VERDICT_COLOURS = {"positive": "#2ca02c", "negative": "#d62728"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _grouped_bars(ax, categories: list, series: dict[str, list[float]], ylabel: str) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(categories))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [str(c) for c in categories], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)


def pass_rate(df: pl.DataFrame, by: str, title: str) -> bytes | None:
    """Pass rate per teacher run by ``by`` (subject or level)."""
    if df.is_empty():
        return None
    cats = sorted(df[by].unique().to_list())
    series = {}
    for label in sorted(df["label"].unique().to_list()):
        sub = dict(df.filter(pl.col("label") == label).select(by, "pass_rate").iter_rows())
        series[label] = [100 * sub.get(c, 0.0) for c in cats]
    fig, ax = plt.subplots(figsize=(9, 4))
    _grouped_bars(ax, cats, series, "pass rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def positives_per_problem(df: pl.DataFrame) -> bytes | None:
    """How many problems have 0..K positive rationales, per run."""
    if df.is_empty():
        return None
    k = int(df["positives"].max())
    cats = list(range(k + 1))
    series = {}
    for label in sorted(df["label"].unique().to_list()):
        sub = dict(df.filter(pl.col("label") == label).select("positives", "problems").iter_rows())
        series[label] = [sub.get(c, 0) for c in cats]
    fig, ax = plt.subplots(figsize=(9, 4))
    _grouped_bars(ax, cats, series, "problems")
    ax.set_xlabel("positive rationales per problem (0: negatives are the only signal)")
    ax.set_title("Positives per problem")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def status_breakdown(df: pl.DataFrame) -> bytes | None:
    """Grade statuses per run, as stacked shares."""
    if df.is_empty():
        return None
    labels = sorted(df["label"].unique().to_list())
    statuses = sorted(df["status"].unique().to_list(),
                      key=lambda s: (list(STATUS_COLOURS).index(s) if s in STATUS_COLOURS else 99, s))
    totals = {lb: df.filter(pl.col("label") == lb)["samples"].sum() for lb in labels}
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(labels)))
    left = np.zeros(len(labels))
    for st in statuses:
        sub = dict(df.filter(pl.col("status") == st).select("label", "samples").iter_rows())
        share = np.array([100 * sub.get(lb, 0) / totals[lb] for lb in labels])
        ax.barh(labels, share, left=left, label=st, color=STATUS_COLOURS.get(st))
        left += share
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of graded samples (%)")
    ax.set_title("Grade status")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def lengths(df: pl.DataFrame) -> bytes | None:
    """Rationale length of positives vs negatives, per run."""
    if df.is_empty():
        return None
    labels = sorted(df["label"].unique().to_list())
    top = float(df["chars"].quantile(0.99) or 1)
    bins = np.linspace(0, max(top, 1), 40)
    fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels), 3.5), squeeze=False)
    for ax, label in zip(axes[0], labels):
        sub = df.filter(pl.col("label") == label)
        for verdict in ("positive", "negative"):
            v = sub.filter(pl.col("verdict") == verdict)["chars"].to_numpy()
            if len(v):
                ax.hist(np.clip(v, 0, bins[-1]), bins=bins, alpha=0.55,
                        color=VERDICT_COLOURS[verdict],
                        label=f"{verdict} (n={len(v)}, median {int(np.median(v))})")
        ax.set_title(label)
        ax.set_ylabel("rationales")
        ax.legend(fontsize=8)
    fig.supxlabel("rationale length in characters (the last bin holds everything longer)",
                  fontsize=9)
    return _png(fig)


def recorded_usage(runs: pl.DataFrame) -> tuple[pl.DataFrame, bool, bool]:
    """The runs that recorded tokens or cost, and whether any recorded tokens / cost
    (imported runs record neither)."""
    if runs.is_empty():
        return runs, False, False
    tokens = runs["prompt_tokens"].is_not_null() | runs["completion_tokens"].is_not_null()
    cost = runs["cost_usd"].is_not_null()
    return runs.filter(tokens | cost), bool(tokens.any()), bool(cost.any())


def tokens_and_cost(runs: pl.DataFrame) -> bytes | None:
    """Prompt and completion tokens, and cost, of the runs that recorded them; a panel
    only for what some run recorded, and None when no run recorded either."""
    runs, has_tokens, has_cost = recorded_usage(runs)
    if runs.is_empty():
        return None
    labels = runs["label"].to_list()
    panels = int(has_tokens) + int(has_cost)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    axes = list(axes[0])
    drawn = []
    if has_tokens:
        ax1 = axes.pop(0)
        pt = runs["prompt_tokens"].fill_null(0).to_numpy()
        ct = runs["completion_tokens"].fill_null(0).to_numpy()
        ax1.bar(labels, pt, label="prompt")
        ax1.bar(labels, ct, bottom=pt, label="completion")
        ax1.set_ylabel("tokens")
        ax1.set_title("Tokens per run")
        ax1.legend(fontsize=8)
        drawn.append((ax1, ("prompt_tokens", "completion_tokens")))
    if has_cost:
        ax2 = axes.pop(0)
        ax2.bar(labels, runs["cost_usd"].fill_null(0).to_numpy(), color="#8c564b")
        ax2.set_ylabel("USD")
        ax2.set_title("Cost per run")
        drawn.append((ax2, ("cost_usd",)))
    for ax, cols in drawn:
        ax.tick_params(axis="x", rotation=20)
        # 0 and "never recorded" look alike on a bar chart: say which it is.
        for i, row in enumerate(runs.select(cols).iter_rows()):
            if all(v is None for v in row):
                ax.text(i, 0, "not recorded", ha="center", va="bottom", fontsize=8,
                        color="#666")
    return _png(fig)


def export_charts(df: pl.DataFrame) -> list[tuple[str, int]]:
    """(export, how many other exports have the same split sizes) per chart to draw.

    Exports with the same split sizes share one chart (re-exports of the same data would
    otherwise draw identical charts side by side), titled by the newest of them."""
    groups: dict[tuple, list[str]] = {}
    for name in df["export"].unique(maintain_order=True).to_list():
        sub = df.filter(pl.col("export") == name)
        key = tuple(sub.select("kind", "split", "records", "positive", "negative").iter_rows())
        groups.setdefault(key, []).append(name)
    return [(names[-1], len(names) - 1) for names in groups.values()][-MAX_EXPORTS:]


def export_splits(df: pl.DataFrame) -> bytes | None:
    """Records per split for each export, positives and negatives stacked."""
    if df.is_empty():
        return None
    df = df.with_columns(
        (pl.col("name").map_elements(lambda p: Path(p).name, return_dtype=pl.Utf8)
         + "\n" + pl.col("created_at").fill_null("").str.slice(0, 16)).alias("export"))
    charts = export_charts(df)
    fig, axes = plt.subplots(1, len(charts), figsize=(min(4 * len(charts), 16), 3.5),
                             squeeze=False)
    for ax, (name, same) in zip(axes[0], charts):
        sub = df.filter(pl.col("export") == name)
        splits = sub["split"].to_list()
        pos = sub["positive"].to_numpy()
        if sub["positive"].null_count() == len(sub):  # eval export: problems only
            top = ax.bar(splits, sub["records"].to_numpy(), color="#1f77b4", label="problems")
        else:
            neg = sub["negative"].fill_null(0).to_numpy()
            pos = sub["positive"].fill_null(0).to_numpy()
            ax.bar(splits, pos, color=VERDICT_COLOURS["positive"], label="positive")
            top = ax.bar(splits, neg, bottom=pos, color=VERDICT_COLOURS["negative"],
                         label="negative")
        # Small splits are slivers next to train: print every total on its bar.
        ax.bar_label(top, labels=[str(v) for v in sub["records"].to_list()], fontsize=8)
        ax.set_title(name + (f"\n(and {same} more export(s) of these sizes)" if same else ""),
                     fontsize=8)
        ax.margins(y=0.15)
        ax.legend(fontsize=7)
    fig.suptitle("Export split sizes (records)")
    return _png(fig)
