"""`curator generate` through the real CLI: --format json prints one JSON document on
stdout, and a --max-cost stop says why and exits non-zero while samples are missing."""

from __future__ import annotations

import json

from .conftest import DEMO_PROBLEMS, DEMO_TDG, OPENAI_KEY


def _base(srv, prices):
    return ["generate", "--provider", "openai", "--model", "teacher", "--base-url",
            srv.base_url + "/v1", "--prices", prices, "-q"]


def test_generate_json_on_stdout_only(cli, serve, keys, prices, db_path):
    cli("load", "math", DEMO_PROBLEMS)
    srv = serve(replay=[str(DEMO_TDG)])
    r = cli(*_base(srv, prices), "--samples", "2", "--limit", "3", "--format", "json")
    data = json.loads(r.stdout)
    assert (data["stored"], data["requested"], data["missing"]) == (6, 6, 0)
    assert data["runs"][0]["requested samples"] == 6 and data["cost_usd"] > 0
    assert data["warehouse"] == str(db_path.resolve())
    assert "stored 6 of 6 samples" in r.stderr and OPENAI_KEY not in r.output


def test_max_cost_stop_says_why_and_fails_while_samples_are_missing(cli, serve, keys, prices):
    cli("load", "math", DEMO_PROBLEMS)
    srv = serve(replay=[str(DEMO_TDG)])
    r = cli(*_base(srv, prices), "--samples", "2", "--limit", "30", "--concurrency", "1",
            "--max-cost", "0.02", "--format", "json", ok=False)
    assert r.exit_code == 1, (r.output, r.exception)
    data = json.loads(r.stdout)
    assert data["stop_reason"] == "max_cost" and data["not_requested"] > 0
    assert data["stored"] + data["not_requested"] == 60
    assert "stopped by --max-cost $0.02" in r.stderr and "spent" in r.stderr
    assert f"{data['not_requested']:,} sample(s) were not requested" in r.stderr
    # a budget large enough for the rest finishes the run and succeeds
    r = cli(*_base(srv, prices), "--samples", "2", "--limit", "30", "--max-cost", "100")
    assert r.exit_code == 0 and "max-cost" not in r.stderr
