"""The warehouse file: creation, migrations, upgrades in place, lock waits."""

from __future__ import annotations

import duckdb
import pytest

from curator import warehouse as warehouse_mod
from curator.errors import CuratorError, WarehouseBusy
from curator.warehouse import Warehouse, resolve_db_path, scalar


def test_init_is_idempotent_and_records_migrations(db_path):
    wh = Warehouse(db_path)
    assert wh.init() is True
    assert wh.init() is False
    with wh.read() as con:
        versions = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert versions == [v for v, _, _ in warehouse_mod.migrations()]
    assert {"problems", "runs", "samples", "grades", "prompts", "positives", "negatives",
            "problem_stats"} <= tables


def test_db_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CURATOR_DB", raising=False)
    assert resolve_db_path(None).as_posix() == "warehouse/curator.duckdb"
    monkeypatch.setenv("CURATOR_DB", str(tmp_path / "env.duckdb"))
    assert resolve_db_path(None) == tmp_path / "env.duckdb"
    assert resolve_db_path(tmp_path / "flag.duckdb") == tmp_path / "flag.duckdb"


def test_read_without_warehouse_says_what_to_do(db_path):
    with pytest.raises(CuratorError, match="curator init"):
        with Warehouse(db_path).read():
            pass


def _migrations_dir(tmp_path, monkeypatch):
    """A copy of the real migrations that the warehouse reads instead of its own; a test
    adds its migration files to it."""
    extra = tmp_path / "migrations"
    extra.mkdir()
    for v, name, sql in warehouse_mod.migrations():
        (extra / f"{v:03d}_{name}.sql").write_text(sql)
    real = warehouse_mod.contract_dir
    monkeypatch.setattr(warehouse_mod, "contract_dir",
                        lambda name: extra if name == "migrations" else real(name))
    return extra


def test_new_migration_upgrades_old_warehouse_in_place(db_path, tmp_path, monkeypatch):
    wh = Warehouse(db_path)
    wh.init()
    with wh.write() as con:
        con.execute("INSERT INTO prompts (prompt_id, template) VALUES ('x', 'keep me')")
    extra = _migrations_dir(tmp_path, monkeypatch)
    (extra / "999_add_note.sql").write_text("ALTER TABLE prompts ADD COLUMN note VARCHAR;")
    with Warehouse(db_path).read() as con:
        assert con.execute("SELECT template, note FROM prompts").fetchall() == [("keep me", None)]
        assert scalar(con, "SELECT max(version) FROM schema_migrations") == 999


def test_failed_migration_leaves_warehouse_unchanged(db_path, tmp_path, monkeypatch):
    Warehouse(db_path).init()
    extra = _migrations_dir(tmp_path, monkeypatch)
    (extra / "998_broken.sql").write_text("CREATE TABLE half (a INT); SELECT * FROM no_such_table;")
    with pytest.raises(CuratorError, match="998_broken failed"):
        Warehouse(db_path).init()
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name='half'").fetchall() == [(0,)]
        assert 998 not in {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}
    finally:
        con.close()


def test_write_rolls_back_on_error(wh):
    with pytest.raises(RuntimeError):
        with wh.write() as con:
            con.execute("INSERT INTO prompts (prompt_id, template) VALUES ('a', 't')")
            raise RuntimeError("boom")
    with wh.read() as con:
        assert scalar(con, "SELECT count(*) FROM prompts") == 0


def test_lock_wait_gives_up_with_a_clear_error(db_path):
    import subprocess
    import sys
    import time
    Warehouse(db_path).init()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time\n"
        f"c = duckdb.connect({str(db_path)!r})\n"
        "print('held', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(WarehouseBusy, match="CURATOR_LOCK_TIMEOUT"):
            with Warehouse(db_path, lock_timeout=0.5).read():
                pass
        assert time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait()


def test_migration_numbered_below_an_applied_one_is_still_applied(db_path, tmp_path, monkeypatch):
    extra = _migrations_dir(tmp_path, monkeypatch)
    (extra / "900_later.sql").write_text("CREATE TABLE later_one (a INT);")
    Warehouse(db_path).init()
    (extra / "899_gap.sql").write_text("CREATE TABLE gap_one (a INT);")
    with Warehouse(db_path).read() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"later_one", "gap_one"} <= tables
