"""`idem worker`: claim queued sweeps and run them on Ray Tune (local Ray or a cluster)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

from idemsweep.errors import CliError, cli_settings


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run queued sweeps on Ray Tune until stopped")
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
    from workers.worker import Worker, dashboard_help, ensure_ray

    worker = Worker(settings, engine, max_concurrent=args.max_concurrent)
    try:
        worker.register()
    except SchemaNotCurrent as exc:
        raise CliError(str(exc)) from None
    worker.dashboard_url = ensure_ray(args.ray_address or settings.ray_address)
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
    outcomes = worker.run(once=args.once)
    for outcome in outcomes:
        print(f"sweep {outcome.sweep_id}: {outcome.status}", flush=True)
    return 0
