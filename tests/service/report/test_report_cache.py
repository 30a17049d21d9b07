"""GET /sweeps/{id}/report builds a finished sweep's page once and serves it from memory;
a large sweep's page is built in the background (202 + Retry-After meanwhile)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.routes.report as report_route
from service.report.cache import ReportCache, cache_key, is_final
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
        ray_job_id=None,
        attempt=1,
    )


def test_cache_keys_and_eviction() -> None:
    done = datetime(2026, 1, 2, tzinfo=UTC)
    key = cache_key(_sweep(1, SweepStatus.succeeded, done))
    assert key == (1, "succeeded", done, ()) and is_final(key)
    assert not is_final(cache_key(_sweep(1, SweepStatus.running, None)))
    assert cache_key(_sweep(1, SweepStatus.cancelled, done)) != key
    cache = ReportCache(max_pages=2)
    keys = [(i, "succeeded", done, ()) for i in range(3)]
    cache.put(keys[0], "a")
    cache.put(keys[1], "b")
    assert cache.get(keys[0]) == "a"  # now the most recently used
    cache.put(keys[2], "c")  # evicts keys[1], the least recently used
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert (cache.get(keys[0]), cache.get(keys[2])) == ("a", "c")
    assert cache.latest(2) == (keys[2], "c") and cache.latest(1) is None
    cache.close()


@pytest.fixture
def gated_builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Background builds wait for the returned event before they build the real page,
    so a test can look at the API while a build is in flight."""
    gate = threading.Event()
    real = report_route.build_page

    def gated(engine: Any, sweep_id: int) -> str:
        assert gate.wait(60), "the test never opened the gate"
        return real(engine, sweep_id)

    monkeypatch.setattr(report_route, "build_page", gated)
    yield gate
    gate.set()


def test_large_sweep_is_built_in_the_background_while_the_api_answers(
    stored: StoredSweeps, tmp_path: Path, gated_builds: threading.Event
) -> None:
    """Over ``inline_trials`` runs: 202 + Retry-After at once, one build however often
    the page is asked for, other requests answered meanwhile, then the page (cached)."""
    with make_client(stored.url, tmp_path) as client:
        cache: ReportCache = client.app.state.report_cache  # type: ignore[attr-defined]
        cache.inline_trials = 10  # the stored sweeps have 48 and 12 runs
        url = f"/sweeps/{stored.paper}/report"
        first = client.get(url)
        assert first.status_code == 202, first.text
        assert int(first.headers["retry-after"]) >= 1
        body = first.json()
        assert body["status"] == "building" and body["sweep_id"] == stored.paper
        again = client.get(url)
        assert again.status_code == 202
        assert cache.building(stored.paper) is not None  # still in flight (gated)
        # The API answers other requests while the page is being built.
        assert client.get("/health").status_code == 200
        assert client.get(f"/sweeps/{stored.paper}").json()["id"] == stored.paper
        assert client.get(f"/sweeps/{stored.paper}/trials?limit=5").status_code == 200
        gated_builds.set()
        deadline = time.monotonic() + 120
        while (page := client.get(url)).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert page.status_code == 200 and page.headers["x-idem-report"] == "cached"
        assert "report-paper" in page.text
        assert [k[0] for k in cache.built] == [stored.paper]  # built once
