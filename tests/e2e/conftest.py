"""End-to-end fixtures: a running `idem api` over a store with a small real sweep, `idem up`
helpers, and the browser: pytest-playwright's ``page`` in Debian's Chromium.

Playwright drives the system Chromium (``executable_path``) because its own browser
download cannot run here; scripts/setup.sh --test installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.service.report.conftest import run_sweep
from tests.utils.factories import make_grid
from tests.utils.processes import free_port, stop, wait_healthy


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


def stop_up(up: subprocess.Popen[str]) -> str:
    """Ctrl-C, as a user would; it must exit 0. Returns its output."""
    up.send_signal(signal.SIGINT)
    out, _ = up.communicate(timeout=120)
    assert up.returncode == 0, out
    return out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, pointed at the system Chromium."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@dataclass
class BrowserErrors:
    """Console errors, uncaught page exceptions and failed requests seen by one page."""

    messages: list[str] = field(default_factory=list)


@pytest.fixture
def browser_errors(page: Page) -> BrowserErrors:
    """Collects every error the test's ``page`` reports, from before its first load."""
    seen = BrowserErrors()
    page.on(
        "console",
        lambda msg: seen.messages.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: seen.messages.append(f"exception: {exc}"))
    page.on(
        "requestfailed",
        lambda req: seen.messages.append(f"failed: {req.url} {req.failure}"),
    )
    return seen


@dataclass(frozen=True)
class RunningApi:
    url: str
    sweep_id: int


@pytest.fixture(scope="session")
def running_api(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApi]:
    """`idem api` as a real process on a free port, serving one finished small sweep."""
    from service.store.engine import make_engine

    root = tmp_path_factory.mktemp("e2e-api")
    db = root / "idem.db"
    shutil.copyfile(sqlite_template, db)
    engine = make_engine(f"sqlite:///{db}")
    configs = make_grid(
        learning_rates=(0.1, 1.0), batch_sizes=(200,), seeds=(0, 1), samples=200, epochs=30
    )
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
        wait_healthy(url, proc)
        yield RunningApi(url, sweep_id)
    finally:
        stop(proc)
