"""Fixtures shared by every test package: temporary warehouses, the CLI, the data paths,
local teacher servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def shared_data() -> Path:
    """The real public data beside the project; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "wh" / "curator.duckdb"


@pytest.fixture
def wh(db_path):
    from curator.warehouse import Warehouse
    w = Warehouse(db_path, lock_timeout=30)
    w.init()
    return w


@pytest.fixture
def cli(db_path):
    """Run `curator ...` in-process against the temporary warehouse; returns the result."""
    from typer.testing import CliRunner

    from curator.cli import app

    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(app, [*map(str, args)], env={"CURATOR_DB": str(db_path)},
                               catch_exceptions=True)
        if ok and result.exit_code != 0:
            raise AssertionError(f"curator {' '.join(map(str, args))} exited "
                                 f"{result.exit_code}:\n{result.output}\n{result.exception!r}")
        return result

    return run


def pytest_collection_modifyitems(config, items):
    # Tests that read ../shared/data are marked by the fixture they use.
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


os.environ.setdefault("CURATOR_LOCK_TIMEOUT", "60")


@pytest.fixture
def serve():
    """Start local teacher servers: ``srv = serve(latency_ms=..., ...)``."""
    from curator.server import ServerConfig, TeacherServer

    servers = []

    def start(**config):
        srv = TeacherServer(ServerConfig(**config))
        srv.start_in_thread()
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        s.stop_thread()
