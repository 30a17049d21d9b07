"""Fault-test fixtures: the shared local Ray, a private PostgreSQL cluster to restart,
`idem api` / `idem worker` processes, and the store invariants checked after every fault.

Processes are started with ``IDEM_TEST_PAUSE_AT`` (service/faultpoints.py) when a test must
kill them at an exact point: they create a marker file there and wait to be killed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from service.store.engine import session_scope, upgrade_database
from service.store.status import SWEEP_FINAL, TRIAL_FINAL
from tests.utils.processes import free_port, wait_for, wait_healthy
from tests.workers.conftest import INLINE_ENV, RAY_ENV, REPO, local_ray, ray_address

__all__ = ["local_ray", "ray_address"]  # the session's one local Ray, shared with tests/workers

IDEM = [sys.executable, "-m", "idemsweep"]


def process_env(db_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an `idem` process on ``db_url`` (no inherited IDEM_* settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
    env.update(RAY_ENV)
    env.update(INLINE_ENV)  # the store faults injected here are the in-process runner's
    env.update(
        IDEM_DATABASE_URL=db_url,
        IDEM_DATA_DIR=str(data_dir),
        IDEM_HEARTBEAT_INTERVAL_S="0.3",
        IDEM_REPORT_EVERY="5",
    )
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """An `idem ARGS` process whose output goes to ``log`` (read it when a test fails)."""
    with open(log, "ab") as out:
        return subprocess.Popen([*IDEM, *args], cwd=REPO, env=env, stdout=out, stderr=out)


@dataclass
class Api:
    """A running `idem api` process."""

    proc: subprocess.Popen[bytes]
    url: str


def start_api(env: dict[str, str], log: Path, port: int | None = None) -> Api:
    """`idem api` on a free port; returns once /health answers."""
    port = port or free_port()
    proc = spawn(["api", "--port", str(port), "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"

    wait_healthy(url, proc, timeout=60, log=log)
    return Api(proc, url)


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until the process reached its pause point (it wrote ``path``)."""

    def reached() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited before its pause point: {log.read_text()}")
        return path.exists()

    wait_for(reached, timeout, f"pause point marker {path.name}", every=0.05)


def assert_store_consistent(engine: Engine, sweep_id: int) -> dict[str, int]:
    """The invariants every fault must leave intact; returns the trials by status.

    The sweep is final; each of its trials exists once (one row per config) and is final;
    every trial that ended with a result has exactly epochs 1..epochs_run stored, once each;
    no epoch row lies past a trial's epochs_run.
    """
    with session_scope(engine, readonly=True) as s:
        status = s.execute(
            text("SELECT status FROM sweep WHERE id = :id"), {"id": sweep_id}
        ).scalar_one()
        assert status in SWEEP_FINAL, f"sweep {sweep_id} is {status}"
        rows = s.execute(
            text("SELECT status, count(*) FROM trial WHERE sweep_id = :id GROUP BY status"),
            {"id": sweep_id},
        ).all()
        by_status = {str(r[0]): int(r[1]) for r in rows}
        assert set(by_status) <= set(TRIAL_FINAL), by_status
        total, distinct = s.execute(
            text("SELECT count(*), count(DISTINCT config_hash) FROM trial WHERE sweep_id = :id"),
            {"id": sweep_id},
        ).one()
        assert total == distinct  # one row per config: no trial stored twice
        bad = s.execute(
            text(
                "SELECT t.id, t.status, t.epochs_run, count(e.epoch), count(DISTINCT e.epoch),"
                " min(e.epoch), max(e.epoch)"
                " FROM trial t LEFT JOIN epoch_metric e ON e.trial_id = t.id"
                " WHERE t.sweep_id = :id"
                " GROUP BY t.id, t.status, t.epochs_run"
                " HAVING (t.status IN ('succeeded', 'diverged') AND ("
                "   count(e.epoch) != t.epochs_run OR count(DISTINCT e.epoch) != t.epochs_run"
                "   OR min(e.epoch) != 1 OR max(e.epoch) != t.epochs_run))"
                " OR count(e.epoch) != count(DISTINCT e.epoch)"
            ),
            {"id": sweep_id},
        ).all()
        assert not bad, f"(trial, status, epochs_run, rows, distinct, min, max): {bad}"
    return by_status


@dataclass
class PgCluster:
    """A private PostgreSQL cluster (scripts/pg.sh) that a test may restart."""

    url: str
    directory: Path
    bindir: Path
    as_postgres: list[str]

    def ctl(self, *args: str) -> None:
        # The server keeps whatever stdout pg_ctl had: give it the log file, never a pipe.
        subprocess.run(
            [
                *self.as_postgres,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-l",
                str(self.directory / "log"),
                *args,
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server comes back."""
        self.ctl("-w", "-m", "fast", "restart")


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL of its own (never the shared one: restarting that would cut
    every other test's connections), migrated to head; stopped afterwards."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        pytest.skip("PostgreSQL binaries are not installed (/usr/lib/postgresql/*/bin)")
    out = subprocess.run(
        [
            "bash",
            "-c",
            "source scripts/pg.sh && pg_start >/dev/null && "
            'echo "$PG_DIR $PG_BINDIR $IDEM_TEST_POSTGRES_URL"',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    directory, bindir, url = Path(out[0]), Path(out[1]), out[2]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    cluster = PgCluster(url, directory, bindir, as_postgres)
    try:
        upgrade_database(url)
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            cluster.ctl("-m", "immediate", "stop")
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def elapsed(since: float) -> float:
    return time.monotonic() - since
