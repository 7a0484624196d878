"""The teachers' commands through the real CLI: generate (live, dry run, batch), batch
follow-up, and `curator serve` as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from curator.errors import CuratorError

from .conftest import DEMO_PROBLEMS, DEMO_TDG, OPENAI_KEY

ROOT = Path(__file__).resolve().parents[2]


def test_generate_dry_run_live_and_rerun(cli, serve, keys, prices):
    cli("load", "math", DEMO_PROBLEMS)
    srv = serve(replay=[str(DEMO_TDG)])
    args = ["generate", "--provider", "openai", "--model", "teacher", "--base-url",
            srv.base_url + "/v1", "--samples", "2", "--limit", "4", "--prices", prices, "-q"]
    dry = cli(*args, "--dry-run")
    assert "dry run: nothing sent" in dry.output and srv.log == []
    live = cli(*args)
    assert "stored 8 of 8 samples" in live.output and OPENAI_KEY not in live.output
    again = cli(*args)
    assert "stored 0 of 0 samples" in again.output
    out = cli("sql", "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM samples",
              "--format", "csv")
    assert out.output.strip().splitlines()[-1] == "8,1"


def test_generate_reports_bad_options_as_errors(cli, serve, keys, prices):
    cli("load", "math", DEMO_PROBLEMS)
    srv = serve()
    base = ["generate", "--provider", "openai", "--model", "teacher", "--base-url",
            srv.base_url + "/v1", "--samples", "2", "--prices", prices]
    r = cli(*base, "--where", "no_such_column > 1", ok=False)
    assert isinstance(r.exception, CuratorError) and "--where" in str(r.exception)
    r = cli(*base, "--dataset", "gsm8k", ok=False)
    assert "no problems match" in str(r.exception)
    r = cli("generate", "--provider", "other", "--model", "m", "--samples", "1", ok=False)
    assert "unknown provider" in str(r.exception)


def test_batch_commands(cli, serve, keys, prices):
    cli("load", "math", DEMO_PROBLEMS)
    srv = serve(script=["The answer is 1."], batch_delay_s=0.05)
    cli("generate", "--provider", "openai", "--model", "teacher", "--base-url",
        srv.base_url + "/v1", "--samples", "2", "--limit", "3", "--prices", prices, "--batch")
    time.sleep(0.3)
    st = cli("batch", "status", "--format", "csv")
    assert "completed" in st.output
    col = cli("batch", "collect", "--wait", "--poll-interval", "0.1")
    assert "batch collect" in col.output
    out = cli("sql", "SELECT count(completion) FROM samples", "--format", "csv")
    assert out.output.strip().splitlines()[-1] == "6"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_runs_as_a_process_until_interrupted(tmp_path, stop):
    port_file = tmp_path / "url.txt"
    log = tmp_path / "requests.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "curator.cli", "serve", "--port", "0",
                             "--port-file", str(port_file), "--replay", str(DEMO_TDG),
                             "--latency-ms", "5", "--fault", "429=0", "--log", str(log)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = port_file.read_text().strip()
        client = openai.OpenAI(base_url=url + "/v1", api_key="sk-x", max_retries=0)
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
    finally:
        proc.send_signal(stop)
        proc.wait(20)
    assert proc.returncode == 0                   # a clean stop on Ctrl-C and on kill
    assert log.read_text().count("\n") == 1
