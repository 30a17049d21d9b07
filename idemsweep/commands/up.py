"""`idem up`: the whole service on this machine, as one process tree.

Applies the migrations to the store (SQLite under ``IDEM_DATA_DIR`` unless
``IDEM_DATABASE_URL`` names another), then starts three children, each in its own
process group so a terminal's Ctrl-C reaches only this parent:

1. a local Ray head with its dashboard (``ray start --head --block``, loopback only, its
   temp dir under the data dir, free ports, token authentication with a token file in the
   data dir unless ``RAY_AUTH_MODE`` is set);
2. the API (``idem api``) on 127.0.0.1:``IDEM_PORT``;
3. one queue worker (``idem worker``) that submits each sweep as a Ray Job to the head's
   dashboard (with the head's token when there is one).

Ctrl-C or SIGTERM stops them in that order's reverse (the worker first, so it gives its
sweep back to the queue), each by its own pid, and exits 0. Nothing else is touched: no
``ray stop``. A second ``idem up`` on the same data dir resumes unfinished sweeps (the
worker requeues and claims them). Children's output goes to ``DATA_DIR/logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from idemsweep.errors import CliError, cli_settings

RAY_START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = {"worker": 90.0, "api": 15.0, "ray": 45.0}
MAX_SOCKET_DIR = 60  # Ray's unix socket paths must stay under 108 bytes


def register(sub: Any) -> None:
    p = sub.add_parser(
        "up", help="run everything locally: store, Ray + dashboard, API and a worker"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for Ray (default: all)")
    p.add_argument("--port", type=int, default=None, help="API port (default IDEM_PORT, 8000)")
    p.add_argument(
        "--dashboard-port", type=int, default=8265, help="Ray dashboard port (next free if taken)"
    )
    p.set_defaults(handler=run)


@dataclass
class Child:
    """A process ``idem up`` started (in its own process group), with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound on 127.0.0.1, else a free port from the OS."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise CliError("no free TCP port on 127.0.0.1")


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on DATA_DIR/up.lock (one `idem up` per data dir)."""
    handle = (data_dir / "up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        raise CliError(
            f"another idem up is running on {data_dir} (pid {handle.read().strip() or '?'})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def ray_temp_dir(data_dir: Path) -> Path:
    """DATA_DIR/ray, or a short directory under /tmp when that path is too long for
    Ray's unix sockets."""
    path = data_dir / "ray"
    if len(str(path)) > MAX_SOCKET_DIR:
        import tempfile

        return Path(tempfile.mkdtemp(prefix="idem-ray-"))
    path.mkdir(exist_ok=True)
    return path


def ray_auth_env(data_dir: Path) -> dict[str, str]:
    """Token authentication for the local Ray, unless RAY_AUTH_MODE is already chosen.

    The token lives in DATA_DIR/ray_auth_token (mode 0600); the dashboard asks for it.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return {}
    token = data_dir / "ray_auth_token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    """Start ``argv`` in a new session (its own process group), output to logs/NAME.log."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, proc, log)


def stop(child: Child, timeout: float) -> None:
    """SIGTERM the child, wait, then SIGKILL its process group (only what we started)."""
    if child.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"idem up: {child.name} did not stop in {timeout:.0f} s; killing it", flush=True)
    # The group id is the child's pid (start_new_session): its own helpers, nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.proc.wait(5)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (for a child that died)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ray_head_argv(gcs_port: int, dash_port: int, num_cpus: int, temp_dir: Path) -> list[str]:
    """`ray start --head --block` on loopback only, with the dashboard, on free ports."""
    bin_dir = Path(sys.executable).parent
    ray_bin = str(bin_dir / "ray") if (bin_dir / "ray").exists() else "ray"
    options = {
        "--node-ip-address": "127.0.0.1",
        "--port": gcs_port,
        "--dashboard-host": "127.0.0.1",
        "--dashboard-port": dash_port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--num-cpus": num_cpus,
        "--temp-dir": temp_dir,
    }
    argv = [ray_bin, "start", "--head", "--block", "--disable-usage-stats"]
    for key, value in options.items():
        argv += [key, str(value)]
    return argv


def wait_for_ray(ray: Child, gcs_port: int) -> None:
    """Block until the head's GCS accepts connections; CliError if it exits first."""
    deadline = time.monotonic() + RAY_START_TIMEOUT_S
    while not port_open(gcs_port):
        if ray.proc.poll() is not None:
            raise CliError(f"ray start exited ({ray.proc.returncode}):\n{tail(ray.log)}")
        if time.monotonic() > deadline:
            raise CliError(f"Ray did not start within {RAY_START_TIMEOUT_S:.0f} s; see {ray.log}")
        time.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    from service.store.engine import upgrade_database

    settings = cli_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    lock = lock_data_dir(data_dir)
    api_port = settings.port if args.port is None else args.port
    if port_open(api_port):
        raise CliError(f"port {api_port} is in use: set IDEM_PORT or pass --port")
    num_cpus = args.num_cpus or os.cpu_count() or 1
    env = {
        **os.environ,
        "IDEM_DATA_DIR": str(data_dir),
        "IDEM_PORT": str(api_port),
        "RAY_USAGE_STATS_ENABLED": "0",
        **ray_auth_env(data_dir),
    }
    db_url = settings.db_url if settings.database_url else f"sqlite:///{data_dir / 'idem.db'}"
    upgrade_database(db_url)
    print(f"idem up: store {db_url} (migrated)", flush=True)

    gcs_port = free_port()
    dash_port = free_port(args.dashboard_port)
    idem = [sys.executable, "-m", "idemsweep"]
    children: list[Child] = []
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        temp_dir = ray_temp_dir(data_dir)
        ray = start("ray", ray_head_argv(gcs_port, dash_port, num_cpus, temp_dir), env, logs)
        children.append(ray)
        print(f"idem up: starting Ray (gcs 127.0.0.1:{gcs_port}, {num_cpus} CPUs)", flush=True)
        wait_for_ray(ray, gcs_port)
        children.append(start("api", [*idem, "api", "--port", str(api_port)], env, logs))
        address = f"127.0.0.1:{gcs_port}"
        # Each sweep runs as a Ray Job on this head's dashboard, with this interpreter.
        worker_env = {
            **env,
            "IDEM_RAY_DASHBOARD_URL": f"http://127.0.0.1:{dash_port}",
            "IDEM_RAY_JOB_PYTHON": sys.executable,
        }
        if "RAY_AUTH_TOKEN_PATH" in env:
            worker_env["IDEM_RAY_TOKEN"] = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        children.append(
            start("worker", [*idem, "worker", "--ray-address", address], worker_env, logs)
        )
        auth = env.get("RAY_AUTH_TOKEN_PATH")
        print(
            f"idem up: API http://127.0.0.1:{api_port} (docs /docs) · Ray dashboard "
            f"http://127.0.0.1:{dash_port}"
            + (f" (token: {auth})" if auth else "")
            + f" · logs {logs} · Ctrl-C stops everything",
            flush=True,
        )
        while not stopping.wait(1.0):
            dead = [c for c in children if c.proc.poll() is not None]
            if dead:
                for c in dead:
                    print(
                        f"idem up: {c.name} exited ({c.proc.returncode}); stopping the rest\n"
                        f"{tail(c.log)}",
                        file=sys.stderr,
                        flush=True,
                    )
                code = 1
                break
    except CliError:
        code = 2
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        for child in reversed(children):
            stop(child, STOP_TIMEOUT_S[child.name])
        if code == 0:
            print("idem up: stopped", flush=True)
        lock.close()
    return code
