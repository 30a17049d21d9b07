"""The worker: register, claim queued sweeps, run each as a Ray Tune experiment.

By default each claimed sweep runs as its own Ray Job (:mod:`workers.ray_jobs`, whose
driver is :mod:`workers.job_driver`): one job per sweep and attempt in the Ray
dashboard, with the Tune progress in its logs. With ``IDEM_RAY_JOBS=false`` the Tune
experiment runs inside this process instead. Either way the worker holds the lease.

While a sweep runs, a heartbeat thread extends the lease every
``settings.heartbeat_interval_s`` and reads the cancel flag; a cancel (or SIGTERM, or a
lost lease) sets one event that ends the Tune run (:class:`workers.tune_runner.StopFlag`
in process; ``stop_job`` for a job). Afterwards the sweep is finished (succeeded, or
cancelled with its unfinished trials), released back to the queue (SIGTERM), or left
alone (lease lost: another worker owns it now). A worker killed outright stops
heartbeating; the next worker's ``requeue_stalled`` puts its sweep back in the queue and
resumes it (a job of it still running ends when its driver sees the lease gone, or when
the next claim stops it). A job whose driver dies sends the sweep back to the queue, up
to ``job_attempts`` claims.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.exceptions import LeaseLost
from service.settings import Settings
from service.store.claim import claim_sweep, register_worker, worker_heartbeat
from service.store.engine import require_current_schema, session_scope
from service.store.leases import (
    fail_sweep,
    finish_sweep,
    release_sweep,
    requeue_stalled,
    set_ray_info,
    sweep_heartbeat,
)
from service.store.queries import get_sweep
from service.store.records import ClaimedSweep
from workers.ray_jobs import JobEnd, RayJobs, submission_id
from workers.store_retry import in_transaction, retrying
from workers.sweep_watch import SweepWatch

log = logging.getLogger(__name__)

AUTH_NOTE = (
    "Ray 2.60 dashboards ask for a token by default: paste the one in ~/.ray/auth_token "
    "on the Ray head node when the page asks (or start a throwaway local cluster with "
    "RAY_AUTH_MODE=disabled)."
)


def ensure_ray(address: str | None, dashboard_wait_s: float = 0.0) -> str | None:
    """Connect to Ray once per process; returns the dashboard URL (None without one).

    No address: a local Ray with every CPU of this machine. An address: join that
    cluster (``ray start --head`` elsewhere, or the compose cluster). If Ray is already
    initialised (tests share one), it is used as it is. A head that has just started
    publishes its dashboard's address a few seconds after its GCS answers: up to
    ``dashboard_wait_s`` is spent waiting for it.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
    from ray._private.worker import get_dashboard_url

    deadline = time.monotonic() + dashboard_wait_s
    url = get_dashboard_url() or ""
    while not url and time.monotonic() < deadline:
        time.sleep(0.5)
        url = get_dashboard_url() or ""
    if url and "://" not in url:
        url = "http://" + url
    return url or None


def dashboard_help(url: str | None) -> str:
    """How to open the Ray dashboard (printed by ``idem worker``; also in the README)."""
    if not url:
        return (
            "Ray dashboard: not running here (local Ray without the dashboard packages; "
            "install ray[default] or join a cluster whose head runs it). " + AUTH_NOTE
        )
    return f"Ray dashboard: {url}  (Tune experiments appear under Jobs/Actors). {AUTH_NOTE}"


@dataclass
class SweepOutcome:
    """How one claimed sweep ended for this worker."""

    sweep_id: int
    status: str  # succeeded | cancelled | failed | released | requeued | lease-lost
    experiment: str | None = None


class Heartbeat(SweepWatch):
    """Extends the sweep's lease and watches its cancel flag until ``done`` is set.

    A reason to stop the Tune run (cancel, lost lease) sets ``stop``; ``reason`` says
    which came first. The worker's own stop (SIGTERM) sets ``stop`` itself.
    """

    role = "heartbeat"
    reason: str | None = None

    def beat(self) -> None:
        """One heartbeat: lease + cancel flag; stops the run when there is a reason."""
        try:
            with session_scope(self.engine) as session:
                cancel = sweep_heartbeat(session, self.sweep_id, self.worker_id)
                worker_heartbeat(session, self.worker_id)
        except LeaseLost:
            self._stop_for("lease-lost")
            return
        except Exception:  # a database hiccup: try again next beat, the lease is long
            log.exception("sweep %s: heartbeat failed", self.sweep_id)
            return
        if cancel:
            self._stop_for("cancel")

    def _stop_for(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()

    def tick(self) -> bool:
        self.beat()
        return True


class Worker:
    """One worker process's queue loop (``idem worker``)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        max_concurrent: int | None = None,
        poll_s: float = 1.0,
        dashboard_url: str | None = None,
        jobs: RayJobs | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.max_concurrent = max_concurrent
        self.poll_s = poll_s
        self.dashboard_url = dashboard_url
        self.jobs = jobs  # None: run each sweep's Tune experiment in this process
        self.terminate = threading.Event()  # SIGTERM/SIGINT: finish cleanly, then exit
        self._stop_run: threading.Event | None = None
        self.worker_id: str | None = None
        self.outcomes: list[SweepOutcome] = []

    def register(self) -> str:
        """Refuse a database not at the current schema, then register in ``worker``."""
        require_current_schema(self.engine)
        with session_scope(self.engine) as session:
            self.worker_id = register_worker(session, socket.gethostname())
        return self.worker_id

    def request_stop(self, *_: Any) -> None:
        """Signal handler: stop the running Tune experiment and leave the loop."""
        self.terminate.set()
        if self._stop_run is not None:
            self._stop_run.set()

    def run(self, *, once: bool = False) -> list[SweepOutcome]:
        """Claim and run sweeps until stopped (``once``: until the queue is empty)."""
        if self.worker_id is None:
            self.register()
        while not self.terminate.is_set():
            claimed = self.claim()
            if claimed is None:
                if once:
                    break
                self.terminate.wait(self.poll_s)
                continue
            self.outcomes.append(self.process(claimed))
        return self.outcomes

    def claim(self) -> ClaimedSweep | None:
        """Requeue stalled sweeps (dead workers), then claim the best queued one."""
        worker_id = self.worker_id
        assert worker_id is not None

        def requeue(session: Session) -> list[int]:
            ids = requeue_stalled(session, self.settings.lease_timeout_s)
            worker_heartbeat(session, worker_id)
            return ids

        requeued = in_transaction(self.engine, requeue, what="requeue")
        if requeued:
            log.info("requeued stalled sweeps %s", requeued)
        return retrying(lambda: claim_sweep(self.engine, worker_id), what="claim")

    def process(self, claimed: ClaimedSweep) -> SweepOutcome:
        """Run one claimed sweep to its end (or until stopped) and settle its state."""
        from workers.tune_runner import experiment_name

        assert self.worker_id is not None
        stop = threading.Event()
        self._stop_run = stop
        if self.terminate.is_set():
            stop.set()
        heartbeat = Heartbeat(
            self.engine,
            claimed.id,
            self.worker_id,
            self.settings.heartbeat_interval_s,
            stop,
        )
        experiment = experiment_name(claimed.id)
        log.info(
            "sweep %s (%s): claimed (attempt %d), Tune experiment %s",
            claimed.id,
            claimed.name,
            claimed.attempt,
            experiment,
        )
        heartbeat.start()
        try:
            if self.jobs is None:
                self._run_inline(claimed, experiment, stop)
                end = None
            else:
                end = self._run_job(self.jobs, claimed, experiment, stop)
        except Exception as exc:
            heartbeat.done.set()
            heartbeat.join()
            log.exception("sweep %s: the Tune run failed", claimed.id)
            if heartbeat.reason == "lease-lost":
                return SweepOutcome(claimed.id, "lease-lost", experiment)
            return self._settle_failure(claimed.id, experiment, exc)
        finally:
            self._stop_run = None
        heartbeat.done.set()
        heartbeat.join()
        if end is not None and not end.succeeded and not stop.is_set():
            return self._settle_job_end(claimed, experiment, end)
        return self._settle(claimed.id, experiment, heartbeat)

    def _run_inline(self, claimed: ClaimedSweep, experiment: str, stop: threading.Event) -> None:
        """The Tune experiment inside this process (``IDEM_RAY_JOBS=false``)."""
        from workers.tune_runner import run_sweep

        in_transaction(
            self.engine,
            lambda s: set_ray_info(s, claimed.id, experiment, self.dashboard_url),
            what="sweep start",
        )
        run_sweep(
            self.engine,
            self.settings,
            claimed.id,
            claimed.spec,
            experiment=experiment,
            stop=stop,
            max_concurrent=self.max_concurrent,
        )

    def _run_job(
        self, jobs: RayJobs, claimed: ClaimedSweep, experiment: str, stop: threading.Event
    ) -> JobEnd:
        """The sweep as a Ray Job: stop any earlier attempt's job still running, record
        the job's link, submit, watch it to its end (stopping it when ``stop`` is set)."""
        assert self.worker_id is not None
        job_id = submission_id(claimed)
        jobs.stop_earlier(claimed)
        in_transaction(
            self.engine,
            lambda s: set_ray_info(s, claimed.id, experiment, jobs.job_url(job_id), job_id),
            what="sweep start",
        )
        jobs.submit(claimed, self.worker_id, experiment, self.settings, self.max_concurrent)
        end = jobs.wait(job_id, stop, self.poll_s)
        log.info("sweep %s: Ray Job %s ended %s (%s)", claimed.id, job_id, end.status, end.message)
        return end

    def _settle_job_end(self, claimed: ClaimedSweep, experiment: str, end: JobEnd) -> SweepOutcome:
        """A job that ended without success while nobody stopped it: its driver failed the
        sweep itself (then the lease is gone and its status says so), or it died (killed,
        out of memory, node lost): the sweep goes back to the queue to resume, or fails
        once it has been claimed ``job_attempts`` times."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        job_id = submission_id(claimed)
        died = f"Ray Job {job_id} ended {end.status} (exit code {end.exit_code}): {end.message}"

        def settle(session: Session) -> str:
            if claimed.attempt >= self.settings.job_attempts:
                error = f"{died}; attempt {claimed.attempt} of {self.settings.job_attempts}"
                fail_sweep(session, claimed.id, error, worker_id=worker_id)
                return "failed"
            release_sweep(session, claimed.id, worker_id)
            return "requeued"

        try:
            status = in_transaction(self.engine, settle, what="sweep end")
        except LeaseLost:
            with session_scope(self.engine, readonly=True) as session:
                status = get_sweep(session, claimed.id).status.value
        log.info("sweep %s: %s; %s", claimed.id, died, status)
        return SweepOutcome(claimed.id, status, experiment)

    def _settle(self, sweep_id: int, experiment: str, heartbeat: Heartbeat) -> SweepOutcome:
        assert self.worker_id is not None
        reason = heartbeat.reason
        if reason is None and self.terminate.is_set():
            reason = "terminate"
        worker_id = self.worker_id

        def settle(session: Session) -> str:
            if reason == "terminate":
                # A cancel that arrived meanwhile wins over giving the sweep back.
                if sweep_heartbeat(session, sweep_id, worker_id):
                    return finish_sweep(session, sweep_id, worker_id).value
                release_sweep(session, sweep_id, worker_id)
                return "released"
            return finish_sweep(session, sweep_id, worker_id).value

        try:
            status = in_transaction(self.engine, settle, what="sweep end")
        except LeaseLost:
            status = "lease-lost"
        log.info("sweep %s: %s", sweep_id, status)
        return SweepOutcome(sweep_id, status, experiment)

    def _settle_failure(self, sweep_id: int, experiment: str, exc: Exception) -> SweepOutcome:
        try:
            with session_scope(self.engine) as session:
                fail_sweep(session, sweep_id, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("sweep %s: could not mark it failed", sweep_id)
        return SweepOutcome(sweep_id, "failed", experiment)
