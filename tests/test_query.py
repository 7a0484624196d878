"""`curator sql` and `curator stats`: read-only by default, formats, reading while writing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from curator.errors import CuratorError
from curator.query import run_sql, warehouse_stats
from curator.sources import load_problems
from curator.warehouse import Warehouse


def test_sql_refuses_modifications_without_write(wh, fixtures):
    load_problems(wh, "math", fixtures / "math")
    for q in ("DROP TABLE samples", "DELETE FROM problems", "UPDATE problems SET level = 1",
              "SELECT 1; DROP TABLE samples", "CREATE TABLE x (a INT)"):
        with pytest.raises(CuratorError, match="--write"):
            run_sql(wh, q)
    assert run_sql(wh, "SELECT count(*) AS n FROM problems") == (["n"], [(5,)])
    run_sql(wh, "CREATE TABLE notes (a INT)", write=True)
    assert run_sql(wh, "SELECT count(*) FROM notes")[1] == [(0,)]


def test_sql_error_is_a_user_error(wh):
    with pytest.raises(CuratorError, match="SQL error"):
        run_sql(wh, "SELECT * FROM no_such_table")


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_cli_sql_formats(cli, fixtures, fmt):
    cli("load", "math", fixtures / "math")
    out = cli("sql", "SELECT split, count(*) AS n FROM problems GROUP BY 1 ORDER BY 1", "-f", fmt).output
    if fmt == "json":
        assert json.loads(out) == [{"split": "test", "n": 2}, {"split": "train", "n": 3}]
    elif fmt == "csv":
        assert out.splitlines() == ["split,n", "test,2", "train,3"]
    elif fmt == "markdown":
        assert out.splitlines()[2] == "| test | 2 |"
    else:
        assert "train" in out and "3" in out


def test_cli_sql_refusal_message(cli):
    cli("init")
    r = cli("sql", "DROP TABLE samples", ok=False)
    assert r.exit_code != 0 and "--write" in str(r.exception)


def test_stats(wh, fixtures, cli):
    load_problems(wh, "math", fixtures / "math")
    from curator.imports import import_samples
    import_samples(wh, "tdg", fixtures / "tdg_gpt35.jsonl", model="gpt-3.5-turbo")
    st = warehouse_stats(wh)
    data = st.as_json()
    assert sum(r["problems"] for r in data["problems"]) == 5
    assert data["runs"][0]["samples"] == 9 and data["runs"][0]["model"] == "gpt-3.5-turbo"
    out = cli("stats", "-f", "json").output
    assert json.loads(out)["runs"][0]["samples"] == 9


def test_stats_csv_is_one_table_chosen_with_table(wh, cli, fixtures):
    """CSV holds one table: --table picks it (a bare -f csv would print two CSV tables,
    headers and all, into one stream)."""
    import csv
    import io
    load_problems(wh, "math", fixtures / "math")
    r = cli("stats", "-f", "csv", ok=False)
    assert r.exit_code != 0 and "--table problems or --table runs" in str(r.exception)
    rows = list(csv.reader(io.StringIO(cli("stats", "-f", "csv", "--table", "problems").stdout)))
    assert rows[0][:4] == ["dataset", "split", "subject", "problems"]
    assert sum(int(r[3]) for r in rows[1:]) == 5
    assert "runs" not in cli("stats", "-f", "json", "--table", "problems").stdout
    r = cli("stats", "--table", "nope", ok=False)
    assert r.exit_code != 0 and "choose problems or runs" in str(r.exception)


WRITER = r"""
import sys, time
from curator.warehouse import Warehouse
wh = Warehouse(sys.argv[1])
print("ready", flush=True)
t_end = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < t_end:
    with wh.write() as con:   # short commits, like a generation job
        con.execute("INSERT INTO prompts (prompt_id, template) VALUES (?, 'x')", [f"w{i}"])
        time.sleep(0.02)
    i += 1
print(i, flush=True)
"""


def test_reads_succeed_while_another_process_writes(wh):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(wh.path), "4"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        seen = []
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            cols, rows = run_sql(Warehouse(wh.path), "SELECT count(*) FROM prompts")
            seen.append(rows[0][0])
        writes = int(writer.stdout.readline())
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] > 0
    assert writes > 5


def test_cli_sql_subprocess_while_writing(wh):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(wh.path), "3"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        p = subprocess.run([sys.executable, "-m", "curator.cli", "sql",
                            "SELECT count(*) AS n FROM prompts", "-f", "json", "--db", str(wh.path)],
                           capture_output=True, text=True, timeout=60)
    finally:
        writer.wait(timeout=30)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["n"] >= 0


@pytest.mark.parametrize("sql, kind", [
    ("EXPORT DATABASE '/tmp/x'", "an EXPORT"), ("UPDATE problems SET level = 1", "an UPDATE"),
    ("ATTACH ':memory:' AS m", "an ATTACH"), ("INSERT INTO problems SELECT * FROM problems", "an INSERT"),
    ("DROP TABLE samples", "a DROP"), ("DELETE FROM problems", "a DELETE"),
])
def test_sql_refusal_grammar(wh, sql, kind):
    with pytest.raises(CuratorError) as exc:
        run_sql(wh, sql)
    assert f"refusing to run {kind} statement" in str(exc.value)
