"""`curator sql` without --write: DuckDB's own controls (a read-only attach, external
access disabled, configuration locked) keep every statement from writing a file or
changing a setting; reads of any shape, PIVOT included, are answered."""

from __future__ import annotations

import hashlib
import json

import pytest


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def loaded(cli, fixtures, db_path):
    cli("load", "math", fixtures / "math")
    cli("import", "tdg", fixtures / "tdg_gpt35.jsonl", "--model", "gpt-3.5-turbo")
    return db_path


@pytest.mark.parametrize("make_sql", [
    # the probe's three cases, as written
    lambda t: f"EXPLAIN ANALYZE COPY (SELECT 'x') TO '{t}' (HEADER false)",
    lambda t: f"PRAGMA enable_profiling='json'; PRAGMA profiling_output='{t}'; SELECT 1",
    lambda t: f"SET log_query_path='{t}'; SELECT 1",
    # and other ways of reaching a file or a setting
    lambda t: f"SET enable_profiling='json'; SET profiling_output='{t}'; SELECT 1",
    lambda t: f"CALL enable_logging(storage='file', storage_path='{t}')",
    lambda t: f"WITH x AS (SELECT 1) SELECT * FROM x; EXPLAIN ANALYZE COPY problems TO '{t}'",
    lambda t: f"RESET lock_configuration; SET enable_external_access=true; "
              f"COPY (SELECT 1) TO '{t}'",
    lambda t: f"SET temp_directory='{t}'; SELECT 1",
])
def test_no_statement_writes_a_file(cli, loaded, tmp_path, make_sql):
    target = tmp_path / "victim" / "out.txt"
    target.parent.mkdir()
    before = _digest(loaded)
    r = cli("sql", make_sql(target), ok=False)
    assert r.exit_code != 0
    assert list(target.parent.iterdir()) == []
    assert _digest(loaded) == before


def test_refusals_say_why(cli, loaded, tmp_path):
    r = cli("sql", f"EXPLAIN ANALYZE COPY (SELECT 'x') TO '{tmp_path / 'v.txt'}'", ok=False)
    assert "no file can be read or written" in str(r.exception)
    r = cli("sql", "SET log_query_path='q.log'; SELECT 1", ok=False)
    assert "cannot change settings" in str(r.exception)
    r = cli("sql", "CREATE TABLE notes (a INT)", ok=False)
    assert "--write" in str(r.exception)


def test_reads_of_any_shape_are_answered(cli, loaded):
    out = cli("sql", "PIVOT (SELECT model, 1 AS x FROM runs) ON model USING count(x)",
              "-f", "json").output
    assert json.loads(out) == [{"gpt-3.5-turbo": 1}]
    out = cli("sql", "SUMMARIZE problems", "-f", "json").output
    assert any(r["column_name"] == "problem_id" for r in json.loads(out))
    out = cli("sql", "CALL pragma_table_info('problems')", "-f", "json").output
    assert any(r["name"] == "question" for r in json.loads(out))
    # temporary tables live in memory only, and qualified names still resolve
    out = cli("sql", "CREATE TEMP TABLE t AS SELECT count(*) AS n FROM curator.main.problems; "
                     "SELECT n FROM t", "-f", "json").output
    assert json.loads(out) == [{"n": 5}]


def test_files_are_read_only_through_file_tables(cli, loaded, tmp_path):
    data = tmp_path / "preds.jsonl"
    data.write_text('{"problem_id": "x", "ok": true}\n{"problem_id": "y", "ok": false}\n')
    r = cli("sql", f"SELECT count(*) FROM read_json_auto('{data}')", ok=False)
    assert "no file can be read or written" in str(r.exception)
    out = cli("sql", "--file", f"preds={data}",
              "SELECT count(*) AS n, (SELECT count(*) FROM problems) AS p FROM preds",
              "-f", "json").output
    assert json.loads(out) == [{"n": 2, "p": 5}]
    # a loaded file is a copy: writing back over it is still impossible
    before = data.read_bytes()
    r = cli("sql", "--file", f"preds={data}", f"COPY preds TO '{data}'", ok=False)
    assert r.exit_code != 0 and data.read_bytes() == before
    r = cli("sql", "--file", f"1bad={data}", "SELECT 1", ok=False)
    assert "not a plain table name" in str(r.exception)
    r = cli("sql", "--file", f"p={tmp_path / 'missing.csv'}", "SELECT 1", ok=False)
    assert "is not a file" in str(r.exception)


def test_write_keeps_working(cli, loaded, tmp_path):
    target = tmp_path / "copy.csv"
    cli("sql", "--write", f"COPY (SELECT count(*) AS n FROM problems) TO '{target}'")
    assert target.read_text().splitlines() == ["n", "5"]
    cli("sql", "--write", "CREATE TABLE notes (a INT); INSERT INTO notes VALUES (1)")
    assert json.loads(cli("sql", "SELECT a FROM notes", "-f", "json").output) == [{"a": 1}]
