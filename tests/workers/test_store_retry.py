"""Store writes retried while the database is unavailable (tenacity), on a real SQLite
file that another connection holds locked: a connection error is retried until the lock
goes or the timeout passes, anything else is raised at once."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from workers.store_retry import in_transaction


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    return path


@pytest.fixture
def engine(db: Path) -> Iterator[Engine]:
    # A 50 ms busy timeout: a locked database fails fast with "database is locked".
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 0.05})
    yield engine
    engine.dispose()


def _lock(db: Path) -> sqlite3.Connection:
    """Another connection holding the database's write lock until it commits."""
    con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    con.execute("BEGIN EXCLUSIVE")
    return con


def _insert(session: Session) -> int:
    session.execute(text("INSERT INTO t VALUES (1)"))
    return int(session.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_a_locked_database_is_retried_until_it_is_free(
    db: Path, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    locker = _lock(db)
    release = threading.Timer(0.3, locker.execute, args=("COMMIT",))
    release.start()
    with caplog.at_level(logging.WARNING, logger="workers.store_retry"):
        assert in_transaction(engine, _insert, what="probe", timeout_s=30) == 1
    release.join()
    locker.close()
    assert "probe: database unavailable" in caplog.text
    assert "retrying in 0.2 s" in caplog.text  # the first backoff


def test_it_gives_up_after_the_timeout(db: Path, engine: Engine) -> None:
    locker = _lock(db)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked"):
        in_transaction(engine, _insert, what="probe", timeout_s=1.0)
    # No try starts after the timeout (tries near 0, 0.2 and 0.6 s).
    assert time.monotonic() - started < 1.0 + 0.5
    locker.close()


def test_other_errors_are_not_retried(engine: Engine) -> None:
    calls: list[int] = []

    def fails(session: Session) -> None:
        calls.append(_insert(session))
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        in_transaction(engine, fails, timeout_s=30)
    assert calls == [1]
    with engine.connect() as conn:  # the failed try was rolled back
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
