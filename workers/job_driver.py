"""``python -m workers.job_driver``: the entrypoint of a sweep's Ray Job.

The queue worker (:mod:`workers.worker`) claims a sweep and submits this module as a Ray
Job (:mod:`workers.ray_jobs`). It runs the sweep's unfinished trials as one Ray Tune
experiment on the job's cluster and writes to the store exactly as the in-process runner
does (:func:`workers.tune_runner.run_sweep`); the job's logs in the dashboard show the
Tune progress. The queue worker keeps the lease; this driver only reads it: every
heartbeat interval it checks that the worker that submitted it still holds the sweep, and
ends the Tune run when it does not (the worker died and another one took the sweep over,
or the sweep was released), so two drivers never run one sweep for long.

SIGTERM (``ray job stop``, the worker's cancel) ends the Tune run the same way. A Tune
run that raises fails the sweep here, with the error, while the worker still holds it;
exit code 1 then tells the worker the sweep is settled. A driver that dies outright
(killed, node lost) leaves the sweep running for the worker to requeue.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from service.exceptions import LeaseLost
from service.settings import get_settings
from service.store.engine import make_engine, session_scope
from service.store.leases import fail_sweep, lease_holder
from service.store.queries import get_sweep
from workers.store_retry import in_transaction
from workers.sweep_watch import SweepWatch

log = logging.getLogger("workers.job_driver")
# Exit code of a driver that ended its run because its worker lost the lease (the job
# shows FAILED in the dashboard, and its log says why).
LEASE_LOST = 3


class LeaseGuard(SweepWatch):
    """Sets ``stop`` once ``worker_id`` no longer holds the sweep (read only)."""

    role = "lease-guard"
    fired = False  # the lease was gone: the run was ended for that

    def check(self) -> bool:
        """True while the worker still holds the sweep; a database hiccup counts as held
        (the next check decides)."""
        try:
            with session_scope(self.engine, readonly=True) as session:
                holder = lease_holder(session, self.sweep_id)
        except Exception:
            log.exception("sweep %s: lease check failed", self.sweep_id)
            return True
        return holder == self.worker_id

    def tick(self) -> bool:
        if self.check():
            return True
        log.warning(
            "sweep %s: worker %s no longer holds it; ending this job's Tune run",
            self.sweep_id,
            self.worker_id,
        )
        self.fired = True
        self.stop.set()
        return False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers.job_driver", description=__doc__)
    p.add_argument("--sweep-id", type=int, required=True)
    p.add_argument("--worker-id", required=True, help="the queue worker holding the lease")
    p.add_argument("--experiment", required=True, help="the Tune experiment's name")
    p.add_argument("--max-concurrent", type=int, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    settings = get_settings()
    engine = make_engine(settings.db_url)
    import ray

    from workers.tune_runner import run_sweep

    ray.init(log_to_driver=False)  # the job's cluster (RAY_ADDRESS, set by Ray Jobs)
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        log.info("sweep %s: stop requested (signal); ending the Tune run", args.sweep_id)
        stop.set()

    # After ray.init, which installs its own handlers: SIGTERM ends the Tune run.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    guard = LeaseGuard(engine, args.sweep_id, args.worker_id, settings.heartbeat_interval_s, stop)
    guard.start()
    log.info("sweep %s: driver pid %d, experiment %s", args.sweep_id, os.getpid(), args.experiment)
    try:
        with session_scope(engine, readonly=True) as session:
            spec = get_sweep(session, args.sweep_id).spec
        outcome = run_sweep(
            engine,
            settings,
            args.sweep_id,
            spec,
            experiment=args.experiment,
            stop=stop,
            max_concurrent=args.max_concurrent,
            verbose=1,
        )
    except Exception as exc:
        log.exception("sweep %s: the Tune run failed", args.sweep_id)
        if not stop.is_set():
            error = f"{type(exc).__name__}: {exc}"
            try:
                in_transaction(
                    engine,
                    lambda s: fail_sweep(s, args.sweep_id, error, worker_id=args.worker_id),
                    what="sweep failed",
                )
            except LeaseLost as lost:
                log.warning("sweep %s: not failed here: %s", args.sweep_id, lost)
        return 1
    finally:
        guard.done.set()
    if guard.fired:
        log.warning("sweep %s: ended without its lease (exit code %d)", args.sweep_id, LEASE_LOST)
        return LEASE_LOST
    log.info(
        "sweep %s: %d Tune trials, %d store trials finished%s, %.1f s",
        args.sweep_id,
        outcome.tune_trials,
        len(outcome.finished),
        " (stopped)" if outcome.stopped else "",
        outcome.seconds,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
