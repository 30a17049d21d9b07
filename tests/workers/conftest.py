"""Worker fixtures: ONE real local Ray (2 CPUs, with its dashboard) per pytest session,
settings, helpers.

Every worker test runs on both databases through the store's ``engine``/``db_url``
fixtures (tests/conftest.py). Ray starts once (~10 s) and is shared; subprocess workers
join it by address, and Ray Jobs are submitted to its dashboard, so no test starts a
second cluster. Subprocess workers run Tune in process (``IDEM_RAY_JOBS=false``, the
runner whose store faults tests/faults injects) unless a test asks for jobs;
tests/workers/test_ray_jobs.py runs the Ray Job path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from idemcore.config import TrialConfig
from service.settings import Settings
from service.spec import SweepSpec
from service.store.engine import session_scope
from service.store.models import EpochMetric, Trial
from service.store.queries import get_sweep
from service.store.records import SweepRecord
from service.store.sweeps import create_sweep

REPO = Path(__file__).resolve().parents[2]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


INLINE_ENV = {"IDEM_RAY_JOBS": "false"}


@dataclass(frozen=True)
class LocalRay:
    """The session's Ray: its GCS address and its dashboard's HTTP URL."""

    address: str
    dashboard_url: str


@pytest.fixture(scope="session")
def local_ray() -> Iterator[LocalRay]:
    """Start the shared local Ray once: a head with 2 CPUs and its dashboard, every port
    free-picked (`idem up`'s own ``ray start`` command line), in a process group of its
    own that teardown ends, so no other Ray on the machine is touched or collided with.
    This process joins it as a driver."""
    os.environ.update(RAY_ENV)
    import ray

    from idemsweep.commands.up import port_open, ray_head_argv
    from tests.utils.processes import free_port, wait_for

    if ray.is_initialized():  # another session fixture already joined one
        from ray._private.worker import get_dashboard_url

        yield LocalRay(ray.get_runtime_context().gcs_address, f"http://{get_dashboard_url()}")
        return
    gcs_port, dash_port = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="idem-t-ray-"))
    with (temp_dir / "head.log").open("wb") as log:
        head = subprocess.Popen(
            ray_head_argv(gcs_port, dash_port, 2, temp_dir),
            env={**os.environ, **RAY_ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: port_open(gcs_port) and port_open(dash_port), 180, "the Ray head")
        address = f"127.0.0.1:{gcs_port}"
        ray.init(address=address, log_to_driver=False)
        yield LocalRay(address, f"http://127.0.0.1:{dash_port}")
    finally:
        ray.shutdown()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the group is the head and its children
        head.wait(30)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address(local_ray: LocalRay) -> str:
    """The shared local Ray's GCS address (workers join it)."""
    return local_ray.address


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """Settings for an in-process worker: fast heartbeats, small report batches."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        heartbeat_interval_s=0.3,
        lease_timeout_s=30,
        report_every=4,
    )


def spec_for(configs: Sequence[TrialConfig], name: str = "t", **run: Any) -> dict[str, Any]:
    """The spec the API would store for ``configs`` (a validated SweepSpec as JSON): its
    grid lists their values; ``run`` sets the run fields (resources, pack,
    max_concurrent, max_failures)."""

    def unique(values: Iterable[Any]) -> list[Any]:
        out: list[Any] = []
        for v in values:
            if v not in out:
                out.append(v)
        return out

    spec = SweepSpec.model_validate(
        {
            "name": name,
            "architectures": unique(
                c.architecture
                if isinstance(c.architecture, str)
                else [dataclasses.asdict(layer) for layer in c.architecture]
                for c in configs
            ),
            "algorithms": unique(c.algorithm for c in configs),
            "learning_rates": unique(c.learning_rate for c in configs),
            "batches": unique({"samples": c.samples, "batch_size": c.batch_size} for c in configs),
            "seeds": unique(c.seed for c in configs),
            "epochs": max(c.epochs for c in configs),
            "optimizers": unique(c.optimizer for c in configs),
            **run,
        }
    )
    return spec.model_dump(mode="json")


def add_sweep(engine: Engine, configs: Sequence[TrialConfig], name: str = "t", **run: Any) -> int:
    """Create a queued sweep straight in the store (no API) with the spec the API would
    store (:func:`spec_for`), returning its id."""
    spec = spec_for(configs, name, **run)
    with session_scope(engine) as session:
        created = create_sweep(session, name=name, spec=spec, priority=0, trials=configs)
    return created.id


def sweep(engine: Engine, sweep_id: int) -> SweepRecord:
    with session_scope(engine, readonly=True) as session:
        return get_sweep(session, sweep_id)


def trials(engine: Engine, sweep_id: int) -> list[Trial]:
    """The sweep's trial rows (detached ORM objects: read their columns only)."""
    with session_scope(engine, readonly=True) as session:
        return list(
            session.scalars(select(Trial).where(Trial.sweep_id == sweep_id).order_by(Trial.id))
        )


def epoch_numbers(engine: Engine, trial_id: int) -> list[int]:
    """Every stored epoch number of a trial, duplicates included, sorted."""
    with session_scope(engine, readonly=True) as session:
        return sorted(
            session.scalars(select(EpochMetric.epoch).where(EpochMetric.trial_id == trial_id))
        )


def epoch_count(engine: Engine, sweep_id: int) -> int:
    with session_scope(engine, readonly=True) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(EpochMetric)
                .join(Trial, Trial.id == EpochMetric.trial_id)
                .where(Trial.sweep_id == sweep_id)
            )
            or 0
        )


def spawn_worker(
    db_url: str, data_dir: Path, ray_address: str, *args: str, **env: str
) -> subprocess.Popen[str]:
    """A real `idem worker` process joining the shared Ray."""
    full_env = {
        **os.environ,
        **RAY_ENV,
        **INLINE_ENV,
        "IDEM_DATABASE_URL": db_url,
        "IDEM_DATA_DIR": str(data_dir),
        "IDEM_HEARTBEAT_INTERVAL_S": "0.3",
        "IDEM_REPORT_EVERY": "4",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "idemsweep", "worker", "--ray-address", ray_address, *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
