"""Each sweep as a Ray Job on the session's real local Ray (dashboard included).

The worker submits over the dashboard's HTTP API; the job's driver
(``python -m workers.job_driver``) runs the Tune experiment and writes to the store. The
dashboard's own REST endpoint (``GET /api/jobs/``), which its Jobs page and ``ray job
list`` read, must show one job per sweep and attempt, with the sweep id in its metadata.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import Engine

from service.settings import Settings
from service.store.engine import session_scope
from service.store.records import ClaimedSweep
from service.store.sweeps import request_cancel
from tests.utils.factories import make_config
from tests.utils.processes import wait_for
from tests.workers.conftest import (
    LocalRay,
    add_sweep,
    epoch_count,
    epoch_numbers,
    spawn_worker,
    sweep,
    trials,
)
from workers.ray_jobs import (
    SWEEP_CREATED_KEY,
    SWEEP_ID_KEY,
    RayJobs,
    absolute_sqlite,
    submission_id,
)
from workers.worker import Worker

FINAL_OK = {"succeeded", "diverged"}


def job_worker(settings: Settings, engine: Engine, local_ray: LocalRay) -> Worker:
    """An in-process queue worker that runs every sweep as a Ray Job."""
    jobs = RayJobs(local_ray.dashboard_url, None, sys.executable)
    worker = Worker(settings, engine, poll_s=0.2, jobs=jobs)
    worker.register()
    return worker


def dashboard_jobs(local_ray: LocalRay, engine: Engine, sweep_id: int) -> dict[str, Any]:
    """This store's sweep's jobs as the dashboard lists them (``GET /api/jobs/``), by
    submission id (other tests' stores on the same Ray have sweeps of the same id)."""
    created = job_id_of(engine, sweep_id, 1).rsplit("-", 1)[1]
    listed = httpx.get(f"{local_ray.dashboard_url}/api/jobs/", timeout=30).json()
    return {
        job["submission_id"]: job
        for job in listed
        if (job.get("metadata") or {}).get(SWEEP_ID_KEY) == str(sweep_id)
        and job["metadata"].get(SWEEP_CREATED_KEY) == created
    }


def job_id_of(engine: Engine, sweep_id: int, attempt: int) -> str:
    """The submission id of the sweep's ``attempt``, derived as the worker derives it."""
    record = sweep(engine, sweep_id)
    return submission_id(ClaimedSweep(sweep_id, record.name, {}, attempt, record.created_at))


def in_background(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"once": True}, daemon=True)
    thread.start()
    return thread


def test_a_sweep_runs_as_one_ray_job_named_by_its_sweep(
    local_ray: LocalRay, settings: Settings, engine: Engine
) -> None:
    configs = [make_config(seed=s, epochs=12) for s in range(3)]
    sweep_id = add_sweep(engine, configs, name="as-a-job")
    worker = job_worker(settings, engine, local_ray)

    outcomes = worker.run(once=True)

    assert [o.status for o in outcomes] == ["succeeded"]
    job_id = job_id_of(engine, sweep_id, 1)
    record = sweep(engine, sweep_id)
    assert (record.status, record.attempt, record.ray_job_id) == ("succeeded", 1, job_id)
    assert record.ray_dashboard_url == f"{local_ray.dashboard_url}/#/jobs/{job_id}"
    jobs = dashboard_jobs(local_ray, engine, sweep_id)
    assert list(jobs) == [job_id]
    assert jobs[job_id]["status"] == "SUCCEEDED"
    assert jobs[job_id]["metadata"]["idemsweep_sweep_name"] == "as-a-job"
    rows = trials(engine, sweep_id)
    assert {t.status for t in rows} <= FINAL_OK
    for t in rows:
        assert epoch_numbers(engine, t.id) == list(range(1, 13))
    # The job's logs (the dashboard's job page) carry the driver's account of the run.
    logs = worker.jobs.client.get_job_logs(job_id)  # type: ignore[union-attr]
    assert f"sweep {sweep_id}: 1 Tune trials, 3 store trials finished" in logs  # one pack


def test_cancel_stops_the_sweeps_job(
    local_ray: LocalRay, settings: Settings, engine: Engine
) -> None:
    configs = [make_config(seed=s, epochs=3000, samples=200) for s in range(4)]
    sweep_id = add_sweep(engine, configs, pack=False, max_concurrent=1)
    worker = job_worker(settings, engine, local_ray)
    thread = in_background(worker)

    wait_for(lambda: epoch_count(engine, sweep_id) > 0, 120, "the job's first epoch rows")
    with session_scope(engine) as session:
        request_cancel(session, sweep_id)
    thread.join(90)

    assert not thread.is_alive()
    assert [o.status for o in worker.outcomes] == ["cancelled"]
    assert sweep(engine, sweep_id).status == "cancelled"
    assert "cancelled" in {t.status for t in trials(engine, sweep_id)}
    job_id = job_id_of(engine, sweep_id, 1)
    assert dashboard_jobs(local_ray, engine, sweep_id)[job_id]["status"] == "STOPPED"


def test_a_killed_job_driver_is_resumed_with_nothing_lost_or_doubled(
    local_ray: LocalRay, settings: Settings, engine: Engine
) -> None:
    epochs = 400
    configs = [make_config(seed=s, epochs=epochs, samples=200) for s in range(4)]
    sweep_id = add_sweep(engine, configs, pack=False, max_concurrent=1)
    worker = job_worker(settings, engine, local_ray)
    thread = in_background(worker)
    first = job_id_of(engine, sweep_id, 1)

    # Mid-sweep: the first trial done, the second running.
    wait_for(lambda: epoch_count(engine, sweep_id) > epochs + 40, 180, "the second trial")
    client = worker.jobs.client  # type: ignore[union-attr]
    pid = int(client.get_job_info(first).driver_info.pid)
    os.kill(pid, signal.SIGKILL)
    thread.join(240)

    assert not thread.is_alive()
    assert [o.status for o in worker.outcomes] == ["requeued", "succeeded"]
    record = sweep(engine, sweep_id)
    assert (record.status, record.attempt) == ("succeeded", 2)
    assert record.ray_job_id == job_id_of(engine, sweep_id, 2)
    jobs = dashboard_jobs(local_ray, engine, sweep_id)
    assert {k: v["status"] for k, v in jobs.items()} == {
        first: "FAILED",
        job_id_of(engine, sweep_id, 2): "SUCCEEDED",
    }
    rows = trials(engine, sweep_id)
    assert {t.status for t in rows} <= FINAL_OK
    for t in rows:
        numbers = epoch_numbers(engine, t.id)
        assert [n for n, c in Counter(numbers).items() if c > 1] == []  # nothing doubled
        assert numbers == list(range(1, epochs + 1))  # nothing lost
    assert max(t.attempts for t in rows) == 2  # the killed trial ran again


def test_a_driver_that_keeps_dying_fails_the_sweep_after_job_attempts(
    local_ray: LocalRay, settings: Settings, engine: Engine
) -> None:
    sweep_id = add_sweep(engine, [make_config(epochs=5)])
    settings = settings.model_copy(update={"job_attempts": 2})
    worker = job_worker(settings, engine, local_ray)
    worker.jobs.python = "/bin/false"  # type: ignore[union-attr]  # a driver that dies at once

    outcomes = worker.run(once=True)

    assert [o.status for o in outcomes] == ["requeued", "failed"]
    record = sweep(engine, sweep_id)
    assert record.status == "failed" and record.attempt == 2
    assert record.error is not None
    assert f"Ray Job {job_id_of(engine, sweep_id, 2)} ended FAILED" in record.error
    assert "attempt 2 of 2" in record.error
    assert {t.status for t in trials(engine, sweep_id)} == {"failed"}


def test_sqlite_urls_reach_the_driver_absolute(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///rel/idem.db") == f"sqlite:///{tmp_path}/rel/idem.db"
    url = "postgresql+psycopg://u:secret@db:5432/idem"
    assert absolute_sqlite(url) == url


def test_a_killed_queue_worker_hands_its_job_over_with_nothing_lost_or_doubled(
    local_ray: LocalRay, settings: Settings, engine: Engine, db_url: str
) -> None:
    epochs = 3000  # about 10 s a trial: the handover lands mid-trial
    configs = [make_config(seed=s, epochs=epochs, samples=200) for s in range(4)]
    sweep_id = add_sweep(engine, configs, pack=False, max_concurrent=1)
    first = spawn_worker(
        db_url,
        settings.data_dir,
        local_ray.address,
        IDEM_RAY_JOBS="true",
        IDEM_RAY_DASHBOARD_URL=local_ray.dashboard_url,
        IDEM_RAY_JOB_PYTHON=sys.executable,
    )
    try:
        wait_for(lambda: epoch_count(engine, sweep_id) > epochs + 40, 180, "the second trial")
    finally:
        first.kill()  # SIGKILL: no release, no stop_job; its job keeps running for now
        first.wait(30)
    settings = settings.model_copy(update={"lease_timeout_s": 2.0})
    time.sleep(3.0)  # the dead worker's last heartbeat is now older than the lease
    worker = job_worker(settings, engine, local_ray)

    outcomes = worker.run(once=True)

    assert [o.status for o in outcomes] == ["succeeded"]
    record = sweep(engine, sweep_id)
    assert (record.status, record.attempt) == ("succeeded", 2)
    statuses = {k: v["status"] for k, v in dashboard_jobs(local_ray, engine, sweep_id).items()}
    # The orphaned job ended (its driver saw the lease gone, or the new claim stopped it).
    assert statuses[job_id_of(engine, sweep_id, 1)] in {"STOPPED", "FAILED"}
    assert statuses[job_id_of(engine, sweep_id, 2)] == "SUCCEEDED"
    for t in trials(engine, sweep_id):
        assert t.status in FINAL_OK
        assert epoch_numbers(engine, t.id) == list(range(1, epochs + 1))
    assert max(t.attempts for t in trials(engine, sweep_id)) == 2  # one ran in both jobs
