"""`idem api`: several uvicorn worker processes behind one port, and its one-line refusals."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store.engine import upgrade_database
from tests.service.conftest import SMALL_SPEC
from tests.utils.cli import IDEM, env_for, idem_here
from tests.utils.processes import answers_health, free_port, stop, wait_for


@pytest.mark.slow
def test_api_with_two_workers_serves_from_two_processes(tmp_path: Path) -> None:
    """`idem api --workers 2`: two uvicorn worker processes under one parent answer the
    same API on one port; SIGTERM stops them all."""
    upgrade_database(f"sqlite:///{tmp_path / 'idem.db'}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*IDEM, "api", "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def two_workers_up() -> list[int]:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            children = child_pids(proc.pid)
            return children if len(children) >= 2 and answers_health(url) else []

        children: list[int] = wait_for(two_workers_up, 90, "idem api --workers 2", every=0.3)
        created = httpx.post(f"{url}/sweeps", json=SMALL_SPEC, timeout=30).json()
        for _ in range(6):  # whichever process answers sees the same store
            got = httpx.get(f"{url}/sweeps/{created['id']}", timeout=10).json()
            assert got["trial_count"] == created["trial_count"]
    finally:
        stop(proc, timeout=30)
    assert proc.returncode == 0
    time.sleep(0.5)
    assert [pid for pid in children if running(pid)] == []  # exited (a zombie has)


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited child not yet reaped by init does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` that run Python (uvicorn's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"python" in cmdline:
            out.append(int(entry.name))
    return out


@pytest.mark.parametrize(
    "args,says",
    [
        (("--workers", "0"), "--workers"),
        (("--host", "0.0.0.0"), "IDEM_API_TOKENS"),  # a public address without tokens
        ((), "idem db upgrade"),  # an empty data dir: the SQLite file has no tables
    ],
)
def test_api_refuses_in_one_line(
    args: tuple[str, ...],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    r = idem_here(
        "api", *args, "--port", str(free_port()),
        env=env_for(tmp_path), monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert r.returncode == 2
    assert says in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
