"""GET /sweeps/{id}/report builds a finished sweep's page once and serves it from memory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.routes.report as report_route
from service.report.cache import ReportCache, cache_key
from service.settings import Settings
from service.store.records import SweepRecord
from service.store.status import SweepStatus
from tests.service.report.conftest import StoredSweeps


@pytest.fixture
def counted_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each real build_report call the route makes, by sweep id."""
    calls: list[int] = []
    real = report_route.build_report

    def counting(data: Any) -> Any:
        calls.append(data.sweep.id)
        return real(data)

    monkeypatch.setattr(report_route, "build_report", counting)
    return calls


def make_client(url: str, tmp_path: Path) -> TestClient:
    from service.app import create_app

    settings = Settings(database_url=url, data_dir=tmp_path / "data")
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_finished_sweep_page_is_built_once(
    stored: StoredSweeps, tmp_path: Path, counted_builds: list[int]
) -> None:
    with make_client(stored.url, tmp_path) as client:
        first = client.get(f"/sweeps/{stored.fixed}/report")
        second = client.get(f"/sweeps/{stored.fixed}/report")
        assert first.status_code == second.status_code == 200
        assert first.headers["x-idem-report"] == "built"
        assert second.headers["x-idem-report"] == "cached"
        assert second.text == first.text and "report-fixed" in first.text
        assert counted_builds == [stored.fixed]
        missing = client.get("/sweeps/99999/report")  # still a 404, never cached
        assert missing.status_code == 404 and "99999" in missing.json()["detail"]


def test_running_sweep_page_is_built_every_time(
    sqlite_client: TestClient, counted_builds: list[int]
) -> None:
    from tests.service.conftest import SMALL_SPEC

    created = sqlite_client.post("/sweeps", json=SMALL_SPEC).json()
    pages = [sqlite_client.get(f"/sweeps/{created['id']}/report") for _ in range(2)]
    assert [p.status_code for p in pages] == [200, 200]
    assert [p.headers["x-idem-report"] for p in pages] == ["built", "built"]
    assert counted_builds == [created["id"], created["id"]]


def _sweep(sweep_id: int, status: SweepStatus, finished: datetime | None) -> SweepRecord:
    return SweepRecord(
        id=sweep_id,
        name="s",
        status=status,
        priority=0,
        spec={},
        spec_hash="h",
        trial_count=1,
        trials_by_status={},
        progress=1.0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        started_at=None,
        finished_at=finished,
        claimed_by=None,
        heartbeat_at=None,
        cancel_requested=False,
        error=None,
        ray_experiment=None,
        ray_dashboard_url=None,
    )


def test_cache_keys_and_eviction() -> None:
    done = datetime(2026, 1, 2, tzinfo=UTC)
    assert cache_key(_sweep(1, SweepStatus.running, None)) is None
    assert cache_key(_sweep(1, SweepStatus.queued, None)) is None
    key = cache_key(_sweep(1, SweepStatus.succeeded, done))
    assert key == (1, "succeeded", done)
    assert cache_key(_sweep(1, SweepStatus.cancelled, done)) != key
    cache = ReportCache(max_pages=2)
    keys = [(i, "succeeded", done) for i in range(3)]
    cache.put(keys[0], "a")
    cache.put(keys[1], "b")
    assert cache.get(keys[0]) == "a"  # now the most recently used
    cache.put(keys[2], "c")  # evicts keys[1], the least recently used
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert (cache.get(keys[0]), cache.get(keys[2])) == ("a", "c")
