"""Shared fixtures: a fresh, migrated database per test on SQLite and on PostgreSQL.

``db_url`` is parametrized over both backends, so every store test runs once per
backend (the way Optuna runs one storage suite against every storage). PostgreSQL is
skipped only when ``IDEM_TEST_POSTGRES_URL`` is unset (``make test`` always sets it).
Each test gets its own database: a copy of a template migrated once per session
(a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL).

Hypothesis runs under the profile "ci" unless ``--hypothesis-profile`` names another:
derandomized (the same examples on every run, so a red test is a real regression, not
bad luck) and without an example database (no .hypothesis directory to keep in sync).
"explore" draws fresh random examples, for hunting bugs by hand.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, database=None, deadline=None)
settings.load_profile("ci")  # the default; ``--hypothesis-profile`` loads another later

# Fixtures that make every test using them slow or Ray-bound: the marks follow the fixture,
# so `make test-fast` (-m "not ray and not postgres and not slow") stays fast as tests grow.
SLOW_FIXTURES = frozenset(
    {
        "stored",  # tests/service/report: real sweeps trained with idemcore
        "running_api",  # tests/e2e: a real sweep behind a real `idem api` process
        "api_server",  # tests/idemsweep/conftest.py: a real `idem api` process
        "api_schema",  # tests/service/test_schemathesis.py: hundreds of generated requests
    }
)
RAY_FIXTURES = frozenset({"ray_address", "local_ray"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the fixtures it uses (see SLOW_FIXTURES, RAY_FIXTURES)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if names & RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)


PG_ENV = "IDEM_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _pg_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (scripts/test.sh starts a throwaway PostgreSQL)")
    return url


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies."""
    from service.store.engine import upgrade_database

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[tuple[str, str]]:
    """(maintenance URL, template database name) migrated to head once per session."""
    from service.store.engine import upgrade_database

    admin_url = _pg_admin_url()
    name = f"idem_tpl_{uuid.uuid4().hex[:12]}"
    admin = _admin(admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        upgrade_database(_with_database(admin_url, name))
        yield admin_url, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def fresh_pg_database() -> Iterator[tuple[str, str]]:
    """Make (and afterwards drop) a uniquely named PostgreSQL database; yields
    (maintenance URL, name). Created empty unless a test adds a template itself."""
    admin_url = _pg_admin_url()
    name = f"idem_t_{uuid.uuid4().hex[:12]}"
    yield admin_url, name
    admin = _admin(admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _new_pg_database(request: pytest.FixtureRequest, template: str | None = None) -> str:
    """Create this test's PostgreSQL database (a copy of ``template`` when given, else
    empty); ``fresh_pg_database`` drops it afterwards. Returns its URL."""
    admin_url, name = request.getfixturevalue("fresh_pg_database")
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = _admin(admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    admin.dispose()
    return _with_database(admin_url, name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test: "sqlite" or "postgresql"."""
    name: str = request.param
    if name == "postgresql":
        _pg_admin_url()
    return name


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh database migrated to head, on each backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "idem.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    _, template = request.getfixturevalue("pg_template")
    return _new_pg_database(request, template)


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a fresh, empty database (no tables) on each backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return _new_pg_database(request)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A store Engine on a fresh migrated database (disposed after the test)."""
    from service.store.engine import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()
