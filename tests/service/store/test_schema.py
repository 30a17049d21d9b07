"""Migrations match the models, the schema guard names its fix, datetimes stay UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from idemsweep.cli import main
from service.exceptions import SchemaNotCurrent
from service.settings import Settings
from service.store.engine import make_engine, require_current_schema, session_scope
from service.store.models import Base, Worker


def test_migrated_empty_database_matches_models(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    with pytest.raises(SchemaNotCurrent, match="idem db upgrade"):
        require_current_schema(engine)
    assert main(["db", "upgrade", "--url", empty_db_url]) == 0
    require_current_schema(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert {"sweep", "trial", "epoch_metric", "worker", "idempotency_key"} <= tables
    engine.dispose()


def test_db_current_reports_head(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--url", db_url]) == 0
    assert "up to date" in capsys.readouterr().out


def test_datetimes_are_utc_aware(engine: Engine) -> None:
    local = datetime(2024, 9, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as s:
        s.add(Worker(id="w", host="h", started_at=local, heartbeat_at=local))
    with session_scope(engine) as s:
        w = s.get(Worker, "w")
        assert w is not None
        assert w.started_at.tzinfo is not None
        assert w.started_at == local
        assert w.started_at.utcoffset() == timedelta(0)
        assert w.started_at.astimezone(UTC).hour == 10


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with pytest.raises(Exception, match="naive datetime"), session_scope(engine) as s:
        s.add(Worker(id="w", host="h", started_at=datetime(2024, 1, 1)))
        s.flush()


def test_sqlite_runs_wal_with_busy_timeout(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_settings_default_url_is_sqlite_under_data_dir(tmp_path: object) -> None:
    settings = Settings(data_dir=f"{tmp_path}/d")
    assert settings.db_url == f"sqlite:///{tmp_path}/d/idem.db"
    assert Settings(database_url="postgresql+psycopg://x/y").db_url == "postgresql+psycopg://x/y"


def test_settings_read_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEM_LEASE_TIMEOUT_S", "7.5")
    monkeypatch.setenv("IDEM_DATABASE_URL", "sqlite:///elsewhere.db")
    settings = Settings()
    assert settings.lease_timeout_s == 7.5
    assert settings.db_url == "sqlite:///elsewhere.db"
    assert all(f.description for f in Settings.model_fields.values())
