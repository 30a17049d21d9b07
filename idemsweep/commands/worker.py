"""`idem worker`: claim queued sweeps and run each as a Ray Job on Ray Tune (local Ray or a
cluster; or in this process with IDEM_RAY_JOBS=false)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from idemsweep.errors import CliError, cli_settings

# How long a worker that joins a cluster whose head has just started waits for the
# dashboard to publish its address (Ray Jobs need it).
DASHBOARD_WAIT_S = 60.0

if TYPE_CHECKING:
    from service.settings import Settings
    from workers.ray_jobs import RayJobs


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker", help="run queued sweeps until stopped, each as a Ray Job (a Ray Tune experiment)"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (host:port or ray://...); default: IDEM_RAY_ADDRESS, "
        "else a local Ray with every CPU",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="Tune trials at once when the spec sets no max_concurrent (default: cluster size)",
    )
    p.add_argument("--once", action="store_true", help="process the queued sweeps, then exit")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from service.exceptions import SchemaNotCurrent
    from service.store.engine import make_engine

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise CliError("--max-concurrent: must be a positive integer")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = cli_settings()
    engine = make_engine(settings.db_url)
    from workers.worker import Worker, dashboard_help

    worker = Worker(settings, engine, max_concurrent=args.max_concurrent)
    try:
        worker.register()
    except SchemaNotCurrent as exc:
        raise CliError(str(exc)) from None
    worker.jobs, worker.dashboard_url = connect(settings, args.ray_address)
    # Ray Tune and torch take seconds to import: pay that once here, before the worker
    # says it is ready, not after the first claim (measured: 2.4 s between a sweep's
    # claim and its Tune experiment's start when imported lazily).
    import workers.tune_runner  # noqa: F401

    # After ray.init (which installs its own SIGTERM handler), and kept during
    # Tuner.fit(): SIGTERM and Ctrl+C stop the running experiment and give the sweep
    # back to the queue.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    print(f"idem worker {worker.worker_id}: store {engine.url.render_as_string()}", flush=True)
    print(dashboard_help(worker.dashboard_url), flush=True)
    if worker.jobs is not None:
        print(f"each sweep runs as a Ray Job on {worker.jobs.dashboard_url}", flush=True)
    outcomes = worker.run(once=args.once)
    for outcome in outcomes:
        print(f"sweep {outcome.sweep_id}: {outcome.status}", flush=True)
    return 0


def connect(settings: Settings, ray_address: str | None) -> tuple[RayJobs | None, str | None]:
    """The worker's way to Ray: (Ray Jobs client or None, dashboard URL).

    With ``IDEM_RAY_DASHBOARD_URL`` the worker needs nothing but that HTTP address (and
    Ray's token): no ``ray.init`` here. Otherwise it joins ``--ray-address`` (or starts a
    local Ray) and submits to that cluster's dashboard. ``IDEM_RAY_JOBS=false`` runs
    Tune in this process instead.
    """
    from workers.ray_jobs import RayJobs
    from workers.worker import ensure_ray

    token = settings.ray_token.get_secret_value() if settings.ray_token else None
    if settings.ray_jobs and settings.ray_dashboard_url:
        jobs = RayJobs(
            settings.ray_dashboard_url,
            token,
            settings.ray_job_python or "python",
            settings.ray_dashboard_public_url,
        )
        check_dashboard(jobs)
        return jobs, jobs.dashboard_url
    address = ray_address or settings.ray_address
    use_jobs = settings.ray_jobs
    if use_jobs and not address and agent_port_taken():
        # ray.init cannot move the job agent off its default port: its Jobs would never
        # start on the Ray this worker is about to start (idem up picks free ports).
        print(
            "idem worker: another Ray on this machine holds the Ray Jobs agent's port; "
            "running sweeps inside this worker (join a cluster, or use "
            "idem up, for one Ray Job per sweep)",
            flush=True,
        )
        use_jobs = False
    dashboard = ensure_ray(address, DASHBOARD_WAIT_S if use_jobs else 0.0)
    if not use_jobs:
        return None, dashboard
    if not dashboard:
        raise CliError(
            "Ray Jobs need the Ray dashboard, and this Ray runs none: set "
            "IDEM_RAY_DASHBOARD_URL, install ray[default], or set IDEM_RAY_JOBS=false to "
            "run sweeps inside the worker"
        )
    jobs = RayJobs(
        dashboard,
        token,
        settings.ray_job_python or sys.executable,
        settings.ray_dashboard_public_url,
    )
    check_dashboard(jobs)
    return jobs, dashboard


def check_dashboard(jobs: RayJobs) -> None:
    """Reach the dashboard's job API once at start, waiting while it is not up yet (a
    wrong address or token is a one-line error now, not a failed sweep later)."""
    from workers.ray_jobs import patiently

    try:
        patiently(lambda: jobs.client.list_jobs(), "the Ray dashboard")
    except Exception as exc:
        raise CliError(
            f"IDEM_RAY_DASHBOARD_URL: cannot list Ray Jobs at {jobs.dashboard_url}: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        ) from None


def agent_port_taken() -> bool:
    """Whether the default port of Ray's dashboard agent (which runs the jobs of a Ray
    that ``ray.init`` starts) is already bound on this machine."""
    import socket

    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT

    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", DEFAULT_DASHBOARD_AGENT_LISTEN_PORT))
        except OSError:
            return True
    return False
