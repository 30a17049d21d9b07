"""End-to-end fixtures: a running `idem api` over a store with a small real sweep."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service.report.conftest import run_sweep


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (the test's own data dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def start_up(data_dir: Path, port: int) -> subprocess.Popen[str]:
    """`idem up` on one CPU with ``data_dir`` and the API on ``port``, output captured."""
    env = {
        **os.environ,
        "IDEM_DATA_DIR": str(data_dir),
        "IDEM_PORT": str(port),
        "RAY_AUTH_MODE": "disabled",  # throwaway local cluster
    }
    env.pop("IDEM_DATABASE_URL", None)
    env.pop("IDEM_RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "idemsweep", "up", "--num-cpus", "1", "--dashboard-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(up: subprocess.Popen[str], url: str) -> None:
    """Until the API answers /health (the process must stay up; 150 s at most)."""
    deadline = time.monotonic() + 150
    while True:
        assert up.poll() is None, up.stdout.read() if up.stdout else ""
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the API did not come up"
        time.sleep(0.5)


def stop_up(up: subprocess.Popen[str]) -> str:
    """Ctrl-C, as a user would; it must exit 0. Returns its output."""
    up.send_signal(signal.SIGINT)
    out, _ = up.communicate(timeout=120)
    assert up.returncode == 0, out
    return out


@dataclass(frozen=True)
class RunningApi:
    url: str
    sweep_id: int


@pytest.fixture(scope="session")
def running_api(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApi]:
    """`idem api` as a real process on a free port, serving one finished small sweep."""
    from idemcore.config import TrialConfig
    from service.store.engine import make_engine

    root = tmp_path_factory.mktemp("e2e-api")
    db = root / "idem.db"
    shutil.copyfile(sqlite_template, db)
    engine = make_engine(f"sqlite:///{db}")
    configs = [
        TrialConfig(
            architecture="N1",
            algorithm=alg,
            learning_rate=lr,
            samples=200,
            batch_size=200,
            epochs=30,
            seed=seed,
        )
        for alg in ("modified", "ordinary")
        for lr in (0.1, 1.0)
        for seed in range(2)
    ]
    spec = {"name": "e2e", "epochs": 30, "threshold": 1e-3}
    sweep_id = run_sweep(engine, "e2e", spec, configs)
    engine.dispose()
    port = free_port()
    env = {**os.environ, "IDEM_DATA_DIR": str(root), "IDEM_PORT": str(port)}
    env.pop("IDEM_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "idemsweep", "api", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "idem api exited"
            assert time.monotonic() < deadline, "idem api did not come up"
            time.sleep(0.3)
        yield RunningApi(url, sweep_id)
    finally:
        proc.terminate()
        proc.wait(20)
