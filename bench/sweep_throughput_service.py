"""End-to-end service runs for bench/sweep_throughput.py (modes 3 and 4).

Starts ``idem api`` and ``idem worker`` as subprocesses on a fresh SQLite store under a
temporary data directory (so no result can be reused from another mode), waits until
both are up, then times POST /sweeps -> every trial in a final state. Both processes are
stopped by pid (SIGTERM, then SIGKILL) whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from idemsweep.commands.up import free_port

REPO = Path(__file__).resolve().parents[1]
FINAL = {"succeeded", "failed", "cancelled"}


def _idem(*args: str) -> list[str]:
    return [sys.executable, "-m", "idemsweep", *args]


def _stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print(f"    {name} did not stop on SIGTERM; killing pid {proc.pid}", flush=True)
        proc.kill()
        proc.wait(timeout=30)


def start_api(
    data_dir: Path, database_url: str | None = None
) -> tuple[int, dict[str, str], subprocess.Popen[bytes], IO[bytes]]:
    """A fresh SQLite store under ``data_dir`` (or the empty database at ``database_url``),
    migrated to head, and the API on a free port.

    Returns the port, the environment the API runs with (the worker must get the same
    one), the API process and its open log (``data_dir/api.log``); the caller stops the
    process and closes the log.
    """
    port = free_port()
    env = dict(os.environ)
    env.update(
        IDEM_DATA_DIR=str(data_dir),
        IDEM_PORT=str(port),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        PYTHONPATH=str(REPO),
    )
    env.pop("IDEM_DATABASE_URL", None)
    if database_url is not None:
        env["IDEM_DATABASE_URL"] = database_url
    subprocess.run(_idem("db", "upgrade"), env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    api_log = open(data_dir / "api.log", "wb")  # noqa: SIM115 (the caller closes it)
    api = subprocess.Popen(
        _idem("api", "--port", str(port), "--log-level", "warning"),
        env=env,
        cwd=REPO,
        stdout=api_log,
        stderr=subprocess.STDOUT,
    )
    return port, env, api, api_log


@dataclass(frozen=True)
class ServiceRun:
    """One end-to-end run: epoch rows stored, POST -> every trial final (the issue's
    measure), and the same plus starting the service (db upgrade, api, worker, Ray)."""

    rows: int
    sweep_seconds: float
    with_startup_seconds: float


def run_service_sweep(
    spec: dict[str, Any], expected_trials: int, timeout_s: float = 7200
) -> ServiceRun:
    """Start a fresh service, POST ``spec``, wait for the sweep to end, stop the service."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="idem-bench-") as tmp:
        data_dir = Path(tmp)
        port, env, api, api_log = start_api(data_dir)
        worker_log = open(data_dir / "worker.log", "wb")  # noqa: SIM115 (closed below)
        worker = subprocess.Popen(
            _idem("worker"), env=env, cwd=REPO, stdout=worker_log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                _wait_up(client, api, worker, data_dir)
                t0 = time.perf_counter()
                r = client.post("/sweeps", json=spec)
                r.raise_for_status()
                created = r.json()
                assert created["trial_count"] == expected_trials, created
                sweep = _wait_done(client, created["id"], worker, data_dir, timeout_s)
                elapsed = time.perf_counter() - t0
            rows = _epoch_rows(data_dir / "idem.db")
            print(
                f"    sweep {sweep['status']} in {elapsed:.1f} s after POST; trials "
                f"{sweep['trials_by_status']}",
                flush=True,
            )
            if sweep["status"] != "succeeded":
                raise RuntimeError(f"sweep ended {sweep['status']}: {sweep.get('error')}")
            return ServiceRun(rows, elapsed, time.perf_counter() - started)
        finally:
            _stop(worker, "worker")
            _stop(api, "api")
            api_log.close()
            worker_log.close()


def _wait_up(
    client: httpx.Client,
    api: subprocess.Popen[bytes],
    worker: subprocess.Popen[bytes],
    data_dir: Path,
) -> None:
    """Until the API answers /health and the worker has started Ray (its log says so)."""
    deadline = time.monotonic() + 180
    api_ok = False
    while time.monotonic() < deadline:
        for proc, name in ((api, "api"), (worker, "worker")):
            if proc.poll() is not None:
                log = (data_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
        if not api_ok:
            with contextlib.suppress(httpx.TransportError):
                api_ok = client.get("/health").status_code == 200
        worker_log = (data_dir / "worker.log").read_text(errors="replace")
        if api_ok and "store" in worker_log:
            return
        time.sleep(0.5)
    raise RuntimeError("api/worker did not come up within 180 s")


def _wait_done(
    client: httpx.Client,
    sweep_id: int,
    worker: subprocess.Popen[bytes],
    data_dir: Path,
    timeout_s: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sweep = client.get(f"/sweeps/{sweep_id}").json()
        if sweep["status"] in FINAL:
            return dict(sweep)
        if worker.poll() is not None:
            log = (data_dir / "worker.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited with {worker.returncode}:\n{log}")
        time.sleep(0.5)
    raise RuntimeError(f"sweep {sweep_id} not finished within {timeout_s} s")


def _epoch_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM epoch_metric").fetchone()[0])
