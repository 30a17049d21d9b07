"""The CLI client against a real `idem api` subprocess on a free port (SQLite)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store import queue
from service.store.engine import make_engine, session_scope, upgrade_database
from service.store.status import TrialStatus
from tests.service.conftest import SMALL_SPEC
from tests.utils.factories import fake_epochs, fake_result

IDEM = [sys.executable, "-m", "idemsweep"]
SPEC_YAML = """\
name: cli-test
architectures: [N1]
algorithms: [modified, ordinary]
learning_rates: [0.05]
batches:
  - {samples: 100, batch_size: 100}
seeds: 2
epochs: 5
threshold: 1.0e-3
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(data_dir: Path, url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
    env["IDEM_DATA_DIR"] = str(data_dir)
    if url:
        env["IDEM_URL"] = url
    return env


def idem_here(
    *args: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> subprocess.CompletedProcess[str]:
    """Run `idem ARGS` in this process (real HTTP, no interpreter start-up), with ``env``
    as the IDEM_* environment and fresh settings."""
    from idemsweep.cli import main
    from service.settings import get_settings

    for key in [k for k in os.environ if k.startswith("IDEM_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("IDEM_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    capsys.readouterr()
    try:
        code = main(list(args))
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def idem(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IDEM, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`idem api` on a free port over a migrated SQLite store; yields (url, data_dir)."""
    data_dir = tmp_path_factory.mktemp("cli-data")
    upgrade_database(f"sqlite:///{data_dir / 'idem.db'}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*IDEM, "api", "--port", str(port), "--log-level", "warning"],
        env=env_for(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"idem api did not start: {out}")
            time.sleep(0.2)
        yield url, data_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finish_all(data_dir: Path, sweep_id: int) -> None:
    """Play a worker on the server's store: every trial of the sweep succeeds."""
    engine = make_engine(f"sqlite:///{data_dir / 'idem.db'}")
    try:
        with session_scope(engine) as s:
            todo = queue.unfinished_trials(s, sweep_id)
        for i, t in enumerate(todo):
            result = fake_result(idempotent_error=1e-4 * (i + 1), epochs_run=5)
            with session_scope(engine) as s:
                queue.finish_trial(s, t.id, TrialStatus.succeeded, result, None, fake_epochs(5))
    finally:
        engine.dispose()


def test_submit_status_summary_compare_cancel(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`idem submit` and `idem status` as real processes; the other commands in process
    (the same code path after start-up, without paying an interpreter start each)."""
    url, data_dir = server
    env = env_for(data_dir, url)

    def here(*args: str) -> subprocess.CompletedProcess[str]:
        return idem_here(*args, env=env, monkeypatch=monkeypatch, capsys=capsys)

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_YAML)

    r = idem("submit", str(spec), env=env)
    assert r.returncode == 0, r.stderr
    first_line = r.stdout.splitlines()[0]
    assert first_line.startswith("sweep ") and "queued: 4 trials (0 reused)" in first_line
    sweep_id = int(first_line.split()[1])

    r = idem("status", str(sweep_id), env=env)
    assert r.returncode == 0, r.stderr
    assert f"sweep {sweep_id} (cli-test): queued" in r.stdout
    assert "pending 4" in r.stdout

    # Its trials finish; the same spec again (as JSON) reuses all of them, so --wait
    # returns at once and prints the summary table.
    finish_all(data_dir, sweep_id)
    as_json = tmp_path / "spec.json"
    as_json.write_text(json.dumps({**_yaml(SPEC_YAML), "name": "again"}))
    r = here("submit", str(as_json), "--wait", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    assert "4 trials (4 reused)" in r.stdout
    assert "succeeded" in r.stdout
    table = r.stdout.splitlines()
    header = next(line for line in table if "median" in line)
    assert header.split()[:4] == ["architecture", "algorithm", "learning_rate", "batch_size"]

    r = here("summary", str(sweep_id), "--by", "algorithm", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["data"]
    assert sorted(row["algorithm"] for row in rows) == ["modified", "ordinary"]
    assert all(row["n"] == 2 for row in rows)

    r = here("compare", str(sweep_id))
    assert r.returncode == 0, r.stderr
    assert "modified vs ordinary" in r.stdout and "a_wins" in r.stdout

    r = here("sweeps")
    assert r.returncode == 0 and "cli-test" in r.stdout and "again" in r.stdout

    spec.write_text(SPEC_YAML.replace("seeds: 2", "seeds: 3"))  # 2 new trials: queued
    third = here("submit", str(spec))
    assert "queued: 6 trials (4 reused)" in third.stdout
    third_id = third.stdout.split()[1]
    r = here("cancel", third_id)
    assert r.returncode == 0 and "cancelled" in r.stdout
    r = here("cancel", third_id)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "409" in r.stderr and "Traceback" not in r.stderr


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_invalid_spec_gets_the_servers_field_path(server: tuple[str, Path], tmp_path: Path) -> None:
    url, data_dir = server
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({**_yaml(SPEC_YAML), "epochs": 0}))
    r = idem("submit", str(spec), env=env_for(data_dir, url))
    assert r.returncode == 2
    assert "422" in r.stderr and "epochs" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.yaml", "name: [unclosed\narchitectures: N1\n"),
        ("bad.json", '{"name": "x",'),
        ("list.yaml", "- 1\n- 2\n"),
        ("spec.txt", "name: x\n"),
    ],
)
def test_malformed_spec_is_one_line_exit_2(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    r = idem("submit", str(path), env=env_for(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert name in r.stderr


def test_unreachable_server_is_one_line_exit_2(tmp_path: Path) -> None:
    r = idem("status", "1", env=env_for(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert r.returncode == 2
    assert "cannot reach" in r.stderr and r.stderr.count("\n") == 1


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
        deadline = time.monotonic() + 90
        children: list[int] = []
        while True:
            children = child_pids(proc.pid)
            try:
                ok = httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and len(children) >= 2:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"idem api --workers 2 did not start: {children} {out}")
            time.sleep(0.3)
        created = httpx.post(f"{url}/sweeps", json=SMALL_SPEC, timeout=30).json()
        for _ in range(6):  # whichever process answers sees the same store
            got = httpx.get(f"{url}/sweeps/{created['id']}", timeout=10).json()
            assert got["trial_count"] == created["trial_count"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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
