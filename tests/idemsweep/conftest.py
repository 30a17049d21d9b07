"""Fixtures for the CLI and client tests: a real `idem api` process over SQLite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store.engine import upgrade_database
from tests.utils.cli import IDEM, env_for
from tests.utils.processes import free_port, stop, wait_healthy


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`idem api` on a free port over a migrated SQLite store; yields (url, data_dir)."""
    data_dir = tmp_path_factory.mktemp("cli-data")
    upgrade_database(f"sqlite:///{data_dir / 'idem.db'}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*IDEM, "api", "--port", str(port), "--log-level", "warning"],
        env=env_for(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(url, proc, timeout=60)
        yield url, data_dir
    finally:
        stop(proc)
