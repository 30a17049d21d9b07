"""Faults with real processes and real databases: nothing is lost, nothing is doubled.

Each test injects one fault (SIGKILL of `idem worker` mid-trial or while a batch is being
written, SIGKILL of `idem api` mid-submit, a PostgreSQL restart while a sweep runs, a
trial whose training raises), lets the system recover, and checks the same invariants:
the sweep is final, every trial is final exactly once, each finished trial has exactly
epochs 1..epochs_run stored once (SQL GROUP BY against ``trial.epochs_run``), and the API
answers. Kill points are the test-only pause points of service/faultpoints.py, so no
test depends on timing.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from service.settings import Settings
from service.store.claim import claim_sweep, register_worker
from service.store.engine import make_engine, session_scope
from tests.faults.conftest import (
    PgCluster,
    assert_store_consistent,
    process_env,
    spawn,
    start_api,
    wait_for_file,
)
from tests.service.conftest import SMALL_SPEC
from tests.utils.factories import make_config, run_sweep_to_end
from tests.utils.processes import stop, wait_for, wait_sweep_final
from tests.workers.conftest import add_sweep, epoch_count, sweep, trials
from workers.worker import Worker

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPOCHS = 60  # 12 batches of 5 epochs per trial
ONLY_PG = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def resume(db_url: str, data_dir: Path) -> Worker:
    """A fresh in-process worker (on the shared Ray) after the dead one's lease expired."""
    settings = Settings(
        database_url=db_url,
        data_dir=data_dir,
        heartbeat_interval_s=0.3,
        lease_timeout_s=1.0,
        report_every=5,
    )
    engine = make_engine(db_url)
    try:
        time.sleep(1.2)  # the killed worker's last heartbeat is now older than the lease
        worker = Worker(settings, engine, poll_s=0.2)
        worker.run(once=True)
        return worker
    finally:
        engine.dispose()


def count(engine: Engine, table: str) -> int:
    with session_scope(engine, readonly=True) as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.mark.parametrize(
    ("backend", "site"),
    [
        # killed with the 3rd batch inserted but not committed (SQLite: while it holds the
        # write lock): that batch must vanish, the lock must go with the process
        ("sqlite", "epochs-before-commit@3"),
        # killed right after the 2nd batch committed: mid-trial, nothing in flight
        pytest.param("postgresql", "epochs-after-commit@2", marks=pytest.mark.postgres),
    ],
    indirect=["backend"],
)
def test_worker_sigkilled_mid_trial_loses_and_doubles_nothing(
    ray_address: str,
    engine: Engine,
    db_url: str,
    backend: str,
    tmp_path: Path,
    site: str,
) -> None:
    configs = [make_config(seed=s, epochs=EPOCHS, samples=200) for s in range(2)]
    sweep_id = add_sweep(engine, configs, pack=False, max_concurrent=1)
    marker = tmp_path / "paused"
    log = tmp_path / "worker.log"
    env = process_env(
        db_url, tmp_path / "data", IDEM_TEST_PAUSE_AT=site, IDEM_TEST_PAUSE_FILE=str(marker)
    )
    proc = spawn(["worker", "--once", "--ray-address", ray_address], env, log)
    try:
        wait_for_file(marker, proc, log, timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        stop(proc)

    # At the kill: exactly the committed batches are stored, one trial is mid-run.
    assert epoch_count(engine, sweep_id) == 2 * 5  # two committed batches
    assert sweep(engine, sweep_id).status == "running"
    assert [str(t.status) for t in trials(engine, sweep_id)].count("running") == 1

    worker = resume(db_url, tmp_path / "data")

    assert [o.status for o in worker.outcomes] == ["succeeded"]
    assert assert_store_consistent(engine, sweep_id) == {"succeeded": 2}
    rows = trials(engine, sweep_id)
    assert all(t.epochs_run == EPOCHS for t in rows)
    assert sorted(t.attempts for t in rows) == [1, 2]  # only the killed trial reran
    assert epoch_count(engine, sweep_id) == 2 * EPOCHS


def test_api_sigkilled_mid_submit_then_retry_with_the_same_key(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    key = "retry-after-kill"
    marker = tmp_path / "paused"
    log = tmp_path / "api.log"
    data_dir = tmp_path / "data"
    api = start_api(
        process_env(
            db_url,
            data_dir,
            IDEM_TEST_PAUSE_AT="submit-before-commit",
            IDEM_TEST_PAUSE_FILE=str(marker),
        ),
        log,
    )
    headers = {"Idempotency-Key": key}
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            outcome["response"] = httpx.post(
                f"{api.url}/sweeps", json=SMALL_SPEC, headers=headers, timeout=60
            )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    client = threading.Thread(target=submit, daemon=True)
    try:
        client.start()
        wait_for_file(marker, api.proc, log, timeout=60)
        api.proc.send_signal(signal.SIGKILL)
        api.proc.wait(30)
        client.join(30)
    finally:
        stop(api.proc)
    assert "error" in outcome, outcome  # the client never got an answer
    # The uncommitted submit left nothing behind: no sweep, no trials, no key.
    assert [count(engine, t) for t in ("sweep", "trial", "idempotency_key")] == [0, 0, 0]

    api = start_api(process_env(db_url, data_dir), log)
    try:
        first = httpx.post(f"{api.url}/sweeps", json=SMALL_SPEC, headers=headers, timeout=30)
        again = httpx.post(f"{api.url}/sweeps", json=SMALL_SPEC, headers=headers, timeout=30)
        assert first.status_code == again.status_code == 201, (first.text, again.text)
        assert again.json() == first.json()
        assert again.headers.get("idempotent-replayed") == "true"
        sweep_id = first.json()["id"]
        assert count(engine, "sweep") == 1
        assert count(engine, "trial") == first.json()["trial_count"] == 4

        with session_scope(engine) as s:  # the worker's part, played through the store
            worker_id = register_worker(s, "test")
        assert claim_sweep(engine, worker_id) is not None
        run_sweep_to_end(engine, sweep_id, worker_id, epochs=5)
        body = wait_sweep_final(api.url, sweep_id, timeout=30)
        assert body["status"] == "succeeded"
        assert assert_store_consistent(engine, sweep_id) == {"succeeded": 4}
    finally:
        stop(api.proc)


def test_postgres_restart_while_a_sweep_runs(
    ray_address: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = process_env(pg_cluster.url, data_dir)
    api = start_api(env, tmp_path / "api.log")
    worker_log = tmp_path / "worker.log"
    worker = spawn(["worker", "--ray-address", ray_address], env, worker_log)
    engine = make_engine(pg_cluster.url)
    try:
        spec = {**SMALL_SPEC, "epochs": 1500, "seeds": 1, "pack": False, "max_concurrent": 2}
        r = httpx.post(f"{api.url}/sweeps", json=spec, timeout=30)
        assert r.status_code == 201, r.text
        sweep_id = r.json()["id"]

        def mid_sweep() -> bool:
            if worker.poll() is not None:
                raise AssertionError(worker_log.read_text())
            return sweep(engine, sweep_id).status == "running" and (
                epoch_count(engine, sweep_id) > 0
            )

        wait_for(mid_sweep, 120, "epoch rows of the running sweep", every=0.1)
        pg_cluster.restart()
        during = sweep(engine, sweep_id).status  # pre-ping: the test's own pool reconnects

        body = wait_sweep_final(api.url, sweep_id, timeout=240)
        assert body["status"] == "succeeded", (body, worker_log.read_text())
        assert worker.poll() is None, worker_log.read_text()  # it went on, it did not die
        assert assert_store_consistent(engine, sweep_id) == {"succeeded": 2}
        assert during in ("running", "succeeded")
        # The API answers reads and writes again on the restarted database.
        assert httpx.get(f"{api.url}/sweeps", timeout=10).json()["count"] == 1
        assert httpx.post(f"{api.url}/sweeps", json=SMALL_SPEC, timeout=30).status_code == 201
    finally:
        stop(worker)
        stop(api.proc)
        engine.dispose()


@ONLY_PG
def test_a_trial_whose_training_raises_fails_alone(
    ray_address: str, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    corrupt = data_dir / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY this is not an array")  # np.load raises in the trial
    good = [make_config(seed=s, epochs=EPOCHS, samples=200) for s in range(2)]
    bad = make_config(seed=9, epochs=EPOCHS, samples=200, data="file", data_path=str(corrupt))
    sweep_id = add_sweep(engine, [*good, bad], pack=False, max_failures=0)

    worker = resume(db_url, data_dir)

    assert [o.status for o in worker.outcomes] == ["succeeded"]
    assert assert_store_consistent(engine, sweep_id) == {"succeeded": 2, "failed": 1}
    (failed,) = [t for t in trials(engine, sweep_id) if t.status == "failed"]
    assert failed.config_hash == bad.config_hash()
    assert failed.error and "Traceback" not in failed.error
    assert failed.attempts == 1
    with session_scope(engine, readonly=True) as s:
        rows = s.execute(
            text("SELECT count(*) FROM epoch_metric WHERE trial_id = :t"), {"t": failed.id}
        ).scalar_one()
    assert rows == 0
