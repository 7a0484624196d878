"""The report draws only plots with something in them: no token/cost plot for runs that
recorded no usage (imports), one chart for exports of the same split sizes."""

from __future__ import annotations

import json

from curator.reporting import build_report
from curator.warehouse import Warehouse


def test_imported_runs_get_no_empty_usage_plot_and_equal_exports_share_a_chart(
        cli, fixtures, db_path, tmp_path):
    cli("load", "math", fixtures / "math")
    cli("import", "tdg", fixtures / "tdg_gpt35.jsonl", "--model", "gpt-3.5-turbo")
    cli("grade", "-q")
    for name, fmt in (("a", "jsonl"), ("b", "parquet")):  # the same data exported twice
        cli("export", tmp_path / name, "--splits", "train=0.5,test=0.5", "--data-format", fmt)
    rep = build_report(Warehouse(db_path), tmp_path / "r" / "report.html")
    names = [p.name for p in rep.images]
    assert not any("tokens-cost" in n for n in names), names
    assert any("no tokens and cost plot" in n for n in rep.notes), rep.notes
    page = rep.html.read_text()
    assert "Tokens and cost" not in page
    assert sum("export-splits" in n for n in names) == 1
    from curator.reporting import data, plots
    exports = data.collect(Warehouse(db_path)).exports
    labelled = exports.with_columns(export=exports["name"])
    charts = plots.export_charts(labelled)
    assert len(charts) == 1 and charts[0][1] == 1  # one chart, "and 1 more export"
    r = cli("report", tmp_path / "r2.html", "--format", "json")
    assert len(json.loads(r.stdout)["images"]) == len(rep.images)


def test_usage_plot_leaves_out_runs_that_recorded_none(wh):
    import polars as pl

    from curator.reporting import plots
    runs = pl.DataFrame({"label": ["imported", "generated"], "prompt_tokens": [None, 1200],
                         "completion_tokens": [None, 300], "cost_usd": [None, 0.01]})
    kept, tokens, cost = plots.recorded_usage(runs)
    assert kept["label"].to_list() == ["generated"] and tokens and cost
    assert plots.tokens_and_cost(runs)[:8] == b"\x89PNG\r\n\x1a\n"
    none = runs.head(1)
    assert plots.tokens_and_cost(none) is None
