"""Workers on a real local Ray (2 CPUs, shared per session) and both databases."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import Engine, select

from idemcore.train import train
from service.exceptions import SchemaNotCurrent
from service.settings import Settings
from service.store.engine import make_engine, session_scope
from service.store.models import Sweep
from service.store.models import Worker as WorkerRow
from service.store.queries import trial_epochs
from service.store.sweeps import create_sweep, request_cancel
from tests.utils.factories import make_config, make_grid
from tests.utils.processes import wait_for
from tests.utils.threads import one_torch_thread
from tests.workers.conftest import (
    add_sweep,
    epoch_count,
    epoch_numbers,
    spawn_worker,
    sweep,
    trials,
)
from workers.worker import Worker

pytestmark = [pytest.mark.ray, pytest.mark.slow]

METRICS = ("idempotent_error", "loss", "norm", "trace", "update_norm", "image_dim")


def run_worker(settings: Settings, engine: Engine) -> Worker:
    worker = Worker(settings, engine, poll_s=0.2)
    worker.run(once=True)
    return worker


def test_sweep_runs_to_succeeded_with_the_metrics_of_idem_train(
    ray_address: str, settings: Settings, engine: Engine
) -> None:
    configs = make_grid(
        algorithms=("modified", "ordinary"),
        learning_rates=(0.02, 0.05),
        seeds=(0, 1),
        samples=200,
        eval_samples=200,
        epochs=30,
    )
    sweep_id = add_sweep(engine, configs, pack=False)
    worker = run_worker(settings, engine)

    assert [o.status for o in worker.outcomes] == ["succeeded"]
    record = sweep(engine, sweep_id)
    assert record.status == "succeeded" and record.trial_count == 8
    assert record.ray_experiment and record.ray_experiment.startswith(f"sweep-{sweep_id}-")
    assert (settings.data_dir / "ray_results" / record.ray_experiment).is_dir()
    assert epoch_count(engine, sweep_id) == 8 * 30
    with one_torch_thread():  # as in the trial: bitwise equality needs the same threads
        for row in trials(engine, sweep_id):
            assert row.status == "succeeded" and row.attempts == 1
            config = next(c for c in configs if c.config_hash() == row.config_hash)
            expected_epochs: list = []
            expected = train(config, on_epoch=expected_epochs.append)
            with session_scope(engine, readonly=True) as session:
                stored = trial_epochs(session, row.id)
            assert [e.epoch for e in stored] == list(range(1, 31))
            for got, want in zip(stored, expected_epochs, strict=True):
                for name in METRICS:
                    assert getattr(got, name) == getattr(want, name), (row.id, got.epoch, name)
            for name in METRICS:
                assert getattr(row, name) == getattr(expected, name)
            assert row.epochs_to_threshold == expected.epochs_to_threshold


def test_failing_trial_is_retried_then_failed_and_the_sweep_still_ends(
    ray_address: str, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.npy"  # a real failure: the data file does not exist
    good = make_config(epochs=5)
    bad = make_config(epochs=5, data="file", data_path=str(missing), seed=3)
    sweep_id = add_sweep(engine, [good, bad], pack=False, max_failures=1)
    run_worker(settings, engine)

    assert sweep(engine, sweep_id).status == "succeeded"
    by_hash = {t.config_hash: t for t in trials(engine, sweep_id)}
    failed = by_hash[bad.config_hash()]
    assert failed.status == "failed"
    assert failed.attempts == 2  # the first run and one retry
    assert failed.error.startswith("ConfigError: data_path: no such file")
    assert by_hash[good.config_hash()].status == "succeeded"


def test_gpu_trial_on_a_cluster_without_gpus_fails_at_once(
    ray_address: str, settings: Settings, engine: Engine
) -> None:
    import ray

    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("the shared Ray has a GPU")
    sweep_id = add_sweep(engine, [make_config()], resources={"cpu": 1, "gpu": 1})
    started = time.monotonic()
    run_worker(settings, engine)
    assert time.monotonic() - started < 30
    (row,) = trials(engine, sweep_id)
    assert row.status == "failed" and row.error.startswith("CUDA not available")
    assert sweep(engine, sweep_id).status == "succeeded"


def test_a_stored_spec_that_does_not_validate_fails_the_sweep(
    ray_address: str, settings: Settings, engine: Engine
) -> None:
    """The worker reads the spec through SweepSpec: a spec written to the store by hand
    that does not validate fails its sweep, naming the field, before anything runs."""
    with session_scope(engine) as session:
        sweep_id = create_sweep(
            session, name="bad", spec={"pack": False}, trials=[make_config()]
        ).id
    worker = run_worker(settings, engine)
    assert [o.status for o in worker.outcomes] == ["failed"]
    record = sweep(engine, sweep_id)
    assert record.status == "failed"
    assert "not a valid SweepSpec: name: Field required" in (record.error or "")
    (row,) = trials(engine, sweep_id)
    assert row.status == "failed" and row.attempts == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_gpu_trial_trains_on_cuda(ray_address: str, settings: Settings, engine: Engine) -> None:
    config = make_config(epochs=5, device="cuda")
    sweep_id = add_sweep(engine, [config], resources={"cpu": 1, "gpu": 1})
    run_worker(settings, engine)
    (row,) = trials(engine, sweep_id)
    assert row.status == "succeeded", row.error
    assert row.device == f"cuda: {torch.cuda.get_device_name()}" and row.tf32 is False


def test_cancel_mid_run_ends_unfinished_trials_cancelled(
    ray_address: str, settings: Settings, engine: Engine
) -> None:
    configs = [make_config(seed=s, epochs=3000, samples=200) for s in range(6)]
    sweep_id = add_sweep(engine, configs, pack=False, max_concurrent=2)

    def cancel_when_running() -> None:
        wait_for(lambda: epoch_count(engine, sweep_id) > 0, 120, "first epoch rows")
        with session_scope(engine) as session:
            request_cancel(session, sweep_id)

    canceller = threading.Thread(target=cancel_when_running, daemon=True)
    canceller.start()
    started = time.monotonic()
    worker = run_worker(settings, engine)
    canceller.join(5)

    assert [o.status for o in worker.outcomes] == ["cancelled"]
    assert sweep(engine, sweep_id).status == "cancelled"
    statuses = [t.status for t in trials(engine, sweep_id)]
    assert "cancelled" in statuses
    assert set(statuses) <= {"succeeded", "cancelled"}
    assert time.monotonic() - started < 60


def test_worker_refuses_a_database_not_at_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    worker = Worker(Settings(data_dir=tmp_path), engine)
    with pytest.raises(SchemaNotCurrent, match="idem db upgrade"):
        worker.register()


def test_sigkilled_worker_is_resumed_without_lost_or_duplicate_rows(
    ray_address: str, settings: Settings, engine: Engine, db_url: str
) -> None:
    epochs = 400
    configs = [make_config(seed=s, epochs=epochs, samples=200) for s in range(4)]
    sweep_id = add_sweep(engine, configs, pack=False, max_concurrent=1)
    # Killed at an exact point, not a window caught by polling: the worker pauses after
    # its 130th committed batch (IDEM_REPORT_EVERY=4: the first trial's 400 epochs are
    # about 100 batches, so the second trial is about 120 epochs in) and waits there.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    marker = settings.data_dir / "paused"
    proc = spawn_worker(
        db_url,
        settings.data_dir,
        ray_address,
        "--once",
        IDEM_TEST_PAUSE_AT="epochs-after-commit@130",
        IDEM_TEST_PAUSE_FILE=str(marker),
    )
    try:

        def paused() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return marker.exists()

        wait_for(paused, 300, "the worker's pause after 130 committed batches", every=0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = {t.id: (t.status, len(epoch_numbers(engine, t.id))) for t in trials(engine, sweep_id)}
    assert sum(status == "succeeded" for status, _ in stored.values()) == 1, stored
    assert sum(0 < n < epochs for _, n in stored.values()) == 1, stored  # one half-written
    before = {t.id: (t.status, t.attempts) for t in trials(engine, sweep_id)}
    finished_before = {tid for tid, (status, _) in before.items() if status == "succeeded"}
    assert sweep(engine, sweep_id).status == "running"  # nobody released it

    time.sleep(1.2)  # let the dead worker's lease expire
    resumed = Settings(**{**settings.model_dump(), "lease_timeout_s": 1.0})
    worker = run_worker(resumed, engine)

    assert [o.status for o in worker.outcomes] == ["succeeded"]
    for row in trials(engine, sweep_id):
        assert row.status == "succeeded"
        assert epoch_numbers(engine, row.id) == list(range(1, epochs + 1))  # no dup, no gap
        if row.id in finished_before:
            assert row.attempts == before[row.id][1]  # finished trials are not rerun
    assert finished_before and len(finished_before) < len(configs)


def test_two_workers_two_sweeps_each_claims_one_and_sigterm_requeues(
    ray_address: str, settings: Settings, engine: Engine, db_url: str
) -> None:
    procs = [spawn_worker(db_url, settings.data_dir, ray_address) for _ in range(2)]
    try:

        def registered() -> bool:
            with session_scope(engine, readonly=True) as session:
                return len(list(session.scalars(select(WorkerRow.id)))) == 2

        wait_for(registered, 120, "two registered workers")
        ids = [
            add_sweep(
                engine,
                [make_config(seed=s, epochs=20000, samples=200)],
                name=f"s{s}",
                max_concurrent=1,
            )
            for s in range(2)
        ]

        def both_running() -> bool:
            return all(sweep(engine, i).status == "running" for i in ids)

        wait_for(both_running, 120, "both sweeps running")
        owners = {sweep(engine, i).claimed_by for i in ids}
        assert len(owners) == 2 and None not in owners
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("released" in out for out in outputs), outputs
    for i in ids:
        record = sweep(engine, i)
        assert record.status == "queued" and record.claimed_by is None
    with session_scope(engine, readonly=True) as session:
        assert not session.scalars(select(Sweep).where(Sweep.status == "running")).all()
    assert all(t.status == "pending" for i in ids for t in trials(engine, i))
