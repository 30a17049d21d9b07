"""`idem up` end to end: store migrated, Ray + API + worker started, a sweep runs, the
report is served, Ctrl-C stops every process it started and exits 0 (about a minute)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_up, stop_up
from tests.utils.factories import SMALL_SPEC
from tests.utils.processes import free_port, processes_mentioning, wait_healthy, wait_sweep_final

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = {**SMALL_SPEC, "name": "up-smoke", "learning_rates": [0.1], "epochs": 20}


def test_up_runs_a_sweep_and_stops_cleanly() -> None:
    # A short path, so Ray's temp dir (and its processes' command lines) lives inside it.
    data_dir = Path(tempfile.mkdtemp(prefix="idem-up-", dir="/tmp"))
    try:
        run_up(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_up(data_dir: Path) -> None:
    port = free_port()
    up = start_up(data_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, up, timeout=150)
        created = httpx.post(f"{url}/sweeps", json=SPEC, timeout=30).json()
        sweep = wait_sweep_final(url, created["id"], timeout=270, every=1)
        assert sweep["status"] == "succeeded"
        # The sweep ran as a Ray Job: the dashboard lists it with the sweep id in its
        # metadata, and the sweep's dashboard_url opens that job.
        job_id = sweep["ray_job_id"]
        dashboard, fragment = sweep["ray_dashboard_url"].split("/#/")
        assert fragment == f"jobs/{job_id}"
        listed = httpx.get(f"{dashboard}/api/jobs/", timeout=30).json()
        job = next(j for j in listed if j["submission_id"] == job_id)
        assert job["metadata"]["idemsweep_sweep_id"] == str(created["id"])
        assert job["status"] == "SUCCEEDED"
        assert (
            sweep["trials_by_status"].get("succeeded", 0)
            + sweep["trials_by_status"].get("diverged", 0)
            == 4
        )
        page = httpx.get(f"{url}/sweeps/{created['id']}/report", timeout=120)
        assert page.status_code == 200 and "null map is not a success" in page.text
        assert processes_mentioning(str(data_dir))  # the Ray head runs in the data dir
    finally:
        out = stop_up(up)
    assert "idem up: stopped" in out
    assert (data_dir / "idem.db").exists()
    time.sleep(1)
    assert processes_mentioning(str(data_dir)) == []
