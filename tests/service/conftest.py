"""Fixtures for the API tests: the real app on a fresh migrated database (each backend).

``db_url`` (tests/conftest.py) gives a fresh database per test on SQLite and on
PostgreSQL; ``make_client`` builds the real app for it with chosen settings and wraps it
in FastAPI's TestClient (real HTTP semantics, in process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.utils.factories import SMALL_SPEC

__all__ = ["SMALL_SPEC"]  # re-exported: the API tests import it from here


@pytest.fixture
def make_client(db_url: str, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a TestClient over ``create_app(Settings(...))``."""
    from service.app import create_app

    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {"database_url": db_url, "data_dir": tmp_path / "data"}
        values.update(overrides)
        settings = Settings(**values)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """The app with default settings (no tokens) on a fresh database."""
    return make_client()


@pytest.fixture
def sqlite_client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The app on a fresh migrated SQLite database (for tests that need one backend)."""
    import shutil

    from service.app import create_app

    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "fuzz.db"
    shutil.copyfile(template, path)
    settings = Settings(database_url=f"sqlite:///{path}", data_dir=tmp_path / "data")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
