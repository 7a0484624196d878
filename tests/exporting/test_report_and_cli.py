"""`curator report` renders, and the three commands work through the real CLI."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.cli import app


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.headings: list[str] = []
        self._in_h2 = False
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in ("meta", "br"):
            self.open_tags.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        assert self.open_tags and self.open_tags[-1] == tag, f"unbalanced </{tag}>"
        self.open_tags.pop()
        self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)


def run(*args, db: Path, ok: bool = True):
    result = CliRunner().invoke(app, [*map(str, args), "--db", str(db)])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def db(fresh_graded_wh) -> Path:
    return fresh_graded_wh.path


def test_cli_export_eval_and_report(db, tmp_path):
    out = tmp_path / "train"
    r = run("export", out, "--format", "parquet", "--splits", "train=0.8,test=0.2",
            "--max-negatives", "4", "--seed", "3", db=db)
    assert "train" in r.output and "manifest.json" in r.output
    assert "dropped" in r.output and "duplicate" in r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["selection"]["max_negatives"] == 4 and m["selection"]["seed"] == 3
    # refusing a non-empty OUT is an error, not a traceback
    again = run("export", out, db=db, ok=False)
    assert again.exit_code != 0 and "--overwrite" in str(again.exception)
    run("export-eval", tmp_path / "eval", "--dataset", "math", "--limit", "20", db=db)
    assert len((tmp_path / "eval" / "test.jsonl").read_text().splitlines()) == 20

    html_path = tmp_path / "rep" / "report.html"
    r = run("report", html_path, "--manifest", out, db=db)
    assert "plot" in r.output
    page = html_path.read_text()
    parser = _Images()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>") and parser.open_tags == []
    for heading in ("Pass rate by subject", "Pass rate by level", "Positives per problem",
                    "Grade status breakdown", "Rationale length: positives vs negatives",
                    "Tokens and cost", "Exports: split sizes"):
        assert heading in parser.headings
    assert len(parser.images) == 7
    pngs = sorted((tmp_path / "rep" / "report_plots").glob("*.png"))
    assert len(pngs) == 7
    import matplotlib.image as mpimg
    for img, png in zip(parser.images, pngs):
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)  # self-contained: nothing to fetch
        data = base64.b64decode(img["src"][len(prefix):], validate=True)
        assert data == png.read_bytes()
        pixels = mpimg.imread(io.BytesIO(data), format="png")
        h, w = pixels.shape[:2]
        assert h > 100 and w > 300
        assert pixels.std() > 0.01  # not a blank canvas
    # the two exports just made are in the split-size table
    assert str(out.resolve()) in page and str((tmp_path / "eval").resolve()) in page


def test_report_on_an_empty_warehouse(tmp_path):
    from curator.reporting import build_report
    from curator.warehouse import Warehouse
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.init()
    rep = build_report(wh, tmp_path / "r.html")
    assert rep.images == []
    page = (tmp_path / "r.html").read_text()
    assert "no runs yet" in page and "nothing to plot yet" in page


def test_report_rejects_a_bad_manifest(graded_wh, tmp_path):
    from curator.errors import CuratorError
    from curator.reporting import build_report
    bad = tmp_path / "manifest.json"
    bad.write_text("{}")
    with pytest.raises(CuratorError, match="not a curator export manifest"):
        build_report(graded_wh, tmp_path / "r.html", manifests=[bad])
