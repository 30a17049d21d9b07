"""A second `idem up` on the same data directory finishes the sweep the first one was
stopped in the middle of: trials finished before the stop are kept as they were (not
rerun), the others run, and every finished trial holds its epoch rows 1..epochs_run once."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store.status import TRIAL_FINAL
from tests.e2e.conftest import start_up, stop_up
from tests.utils.processes import (
    free_port,
    processes_mentioning,
    wait_for,
    wait_healthy,
    wait_sweep_final,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = {
    "name": "up-resume",
    "architectures": ["N1"],
    "algorithms": ["modified", "ordinary"],
    "learning_rates": [0.01, 0.02, 0.05],
    "batches": [{"samples": 10000, "batch_size": 10000}],
    "seeds": 2,
    "epochs": 600,
    "pack": False,  # one trial at a time on one CPU: the stop lands between trials
}
TRIALS = 12


def trials(url: str, sweep_id: int) -> dict[int, dict[str, Any]]:
    body = httpx.get(f"{url}/sweeps/{sweep_id}/trials?limit=100", timeout=10).json()
    return {t["id"]: t for t in body["data"]}


def test_second_up_finishes_the_interrupted_sweep() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="idem-resume-", dir="/tmp"))
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        first = start_up(data_dir, port)
        try:
            wait_healthy(url, first, timeout=150)
            created = httpx.post(f"{url}/sweeps", json=SPEC, timeout=30).json()
            assert created["trial_count"] == TRIALS

            def two_final() -> bool:  # stop once some, not all, trials are final
                sweep = httpx.get(f"{url}/sweeps/{created['id']}", timeout=10).json()
                return sum(sweep["trials_by_status"].get(s, 0) for s in TRIAL_FINAL) >= 2

            wait_for(two_final, 240, "two final trials")
            before = trials(url, created["id"])
        finally:
            out = stop_up(first)
        assert "idem up: stopped" in out
        kept = {i: t for i, t in before.items() if t["status"] in TRIAL_FINAL}
        assert 2 <= len(kept) < TRIALS, "the stop came too late to test a resume"

        second = start_up(data_dir, port)
        try:
            wait_healthy(url, second, timeout=150)
            sweep = wait_sweep_final(url, created["id"], timeout=300, every=1)
            after = trials(url, created["id"])
        finally:
            stop_up(second)

        assert sweep["status"] == "succeeded", sweep
        assert all(t["status"] in ("succeeded", "diverged") for t in after.values())
        for tid, t in kept.items():  # finished before the stop: untouched, not rerun
            assert after[tid]["finished_at"] == t["finished_at"]
            assert after[tid]["attempts"] == t["attempts"] == 1
        with sqlite3.connect(data_dir / "idem.db") as db:
            rows = db.execute(
                "SELECT t.id, t.epochs_run, count(e.epoch), count(DISTINCT e.epoch), "
                "min(e.epoch), max(e.epoch) FROM trial t JOIN epoch_metric e "
                "ON e.trial_id = t.id WHERE t.sweep_id = ? GROUP BY t.id",
                (created["id"],),
            ).fetchall()
        assert len(rows) == TRIALS
        for tid, epochs_run, n, distinct, lo, hi in rows:
            assert (n, distinct, lo, hi) == (epochs_run, epochs_run, 1, epochs_run), tid
        time.sleep(1)
        assert processes_mentioning(str(data_dir)) == []
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
