"""Each claimed sweep as a Ray Job: submit, watch, stop, over the dashboard's HTTP API.

The queue worker needs only the dashboard's address (and Ray's token where the cluster
asks for one): what a KubeRay or cloud Ray cluster exposes. The job's entrypoint,
``python -m workers.job_driver``, runs the sweep's Tune experiment and writes to the
store exactly as the in-process runner does; the queue worker keeps the lease
(heartbeat, cancel flag) and settles the sweep when the job ends.

Names are derived here once: submission id ``idemsweep-sweep-<id>-<attempt>-<created>``
(stable: the same sweep and attempt always give the same id; the sweep's creation time
keeps sweeps of two stores on one cluster apart, since a cluster keeps every job id for
its lifetime), metadata ``idemsweep_sweep_id``, ``idemsweep_sweep_name`` and
``idemsweep_sweep_created``, and the dashboard link ``<dashboard>/#/jobs/<submission id>``.
"""

from __future__ import annotations

import functools
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.engine import make_url

from service.settings import Settings
from service.store.records import ClaimedSweep
from workers.store_retry import retrying

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)
T = TypeVar("T")

SWEEP_ID_KEY = "idemsweep_sweep_id"
SWEEP_NAME_KEY = "idemsweep_sweep_name"
SWEEP_CREATED_KEY = "idemsweep_sweep_created"  # with the id, names one store's sweep
DRIVER_MODULE = "workers.job_driver"
MAX_METADATA_NAME = 200
# How long a dashboard that does not answer (restarting, or its job agent not up yet:
# "No available agent to submit job, please try again later") is retried before the
# call's error counts.
DASHBOARD_PATIENCE_S = 60.0


def is_transient(exc: BaseException) -> bool:
    """A dashboard error worth retrying: no connection, or Ray asking to try again."""
    import requests

    if isinstance(exc, (ConnectionError, requests.exceptions.ConnectionError)):
        return True
    return isinstance(exc, RuntimeError) and "try again" in str(exc)


def patiently(fn: Callable[[], T], what: str) -> T:
    """``fn()``, retried with the store's backoff while the dashboard's error is transient."""
    return retrying(
        fn,
        what=what,
        timeout_s=DASHBOARD_PATIENCE_S,
        transient=is_transient,
        service="Ray dashboard",
    )


def created_tag(claimed: ClaimedSweep) -> str:
    """The sweep's creation time, compact (UTC, microseconds)."""
    return claimed.created_at.strftime("%Y%m%d%H%M%S%f")


def submission_id(claimed: ClaimedSweep) -> str:
    """The Ray Job submission id of a claimed sweep's attempt (1 on its first claim)."""
    return f"idemsweep-sweep-{claimed.id}-{claimed.attempt}-{created_tag(claimed)}"


def job_metadata(claimed: ClaimedSweep) -> dict[str, str]:
    """The job's metadata: the sweep's id, name and creation time."""
    return {
        SWEEP_ID_KEY: str(claimed.id),
        SWEEP_NAME_KEY: claimed.name[:MAX_METADATA_NAME],
        SWEEP_CREATED_KEY: created_tag(claimed),
    }


@dataclass(frozen=True)
class JobEnd:
    """How a sweep's Ray Job ended: its status (a ``ray.job_submission.JobStatus`` value),
    Ray's message and the driver's exit code (None when Ray has none)."""

    status: str
    message: str | None
    exit_code: int | None

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


class RayJobs:
    """Submits, watches and stops the sweeps' Ray Jobs on one Ray dashboard."""

    def __init__(
        self, dashboard_url: str, token: str | None, python: str, public_url: str | None = None
    ) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        self.public_url = (public_url or dashboard_url).rstrip("/")
        self.token = token
        self.python = python
        self._client: JobSubmissionClient | None = None

    @property
    def client(self) -> JobSubmissionClient:
        """One JobSubmissionClient (it checks the dashboard is reachable when made)."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self._client = JobSubmissionClient(self.dashboard_url, headers=headers)
        return self._client

    def job_url(self, job_id: str) -> str:
        """The job's page in the Ray dashboard (status, driver logs, Tune progress)."""
        return f"{self.public_url}/#/jobs/{job_id}"

    def entrypoint(self, claimed: ClaimedSweep, worker_id: str, experiment: str) -> str:
        args = [
            self.python,
            "-m",
            DRIVER_MODULE,
            "--sweep-id",
            str(claimed.id),
            "--worker-id",
            worker_id,
            "--experiment",
            experiment,
        ]
        return shlex.join(args)

    def submit(
        self,
        claimed: ClaimedSweep,
        worker_id: str,
        experiment: str,
        settings: Settings,
        max_concurrent: int | None = None,
    ) -> str:
        """Submit the sweep's job for this attempt; returns its submission id."""
        job_id = submission_id(claimed)
        entrypoint = self.entrypoint(claimed, worker_id, experiment)
        if max_concurrent is not None:
            entrypoint += f" --max-concurrent {max_concurrent}"

        def submit() -> None:
            try:
                self.client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=job_id,
                    runtime_env={"env_vars": driver_env(settings)},
                    metadata=job_metadata(claimed),
                )
            except RuntimeError as exc:
                # A retry after a submission whose reply was lost: the job is this one.
                if "already exists" not in str(exc):
                    raise

        patiently(submit, f"sweep {claimed.id}: submit")
        log.info("sweep %s: submitted Ray Job %s", claimed.id, job_id)
        return job_id

    def running_jobs(self, claimed: ClaimedSweep) -> Iterator[str]:
        """Submission ids of the sweep's jobs that have not ended (an earlier attempt
        whose queue worker died keeps running until its lease check stops it)."""
        wanted = job_metadata(claimed)
        keys = (SWEEP_ID_KEY, SWEEP_CREATED_KEY)
        for job in patiently(self.client.list_jobs, "list jobs"):
            meta = job.metadata or {}
            mine = all(meta.get(k) == wanted[k] for k in keys)
            if mine and job.submission_id and not job.status.is_terminal():
                yield job.submission_id

    def stop_earlier(self, claimed: ClaimedSweep) -> list[str]:
        """Stop every running job of the sweep but this attempt's: one job per sweep."""
        job_id = submission_id(claimed)
        stopped = [j for j in self.running_jobs(claimed) if j != job_id]
        for other in stopped:
            log.info("sweep %s: stopping the earlier Ray Job %s", claimed.id, other)
            patiently(functools.partial(self.client.stop_job, other), f"stop {other}")
        return stopped

    def wait(self, job_id: str, stop: threading.Event, poll_s: float) -> JobEnd:
        """Watch the job until it ends. When ``stop`` is set (cancel, SIGTERM, lease
        lost) the job is stopped (``stop_job``: SIGTERM to the driver, which ends its
        Tune run, then SIGKILL after Ray's grace period) and watched to its end."""
        stopping = False
        while True:
            if stop.is_set() and not stopping:
                log.info("stopping Ray Job %s", job_id)
                patiently(lambda: self.client.stop_job(job_id), f"stop {job_id}")
                stopping = True
            info = patiently(lambda: self.client.get_job_info(job_id), f"watch {job_id}")
            if info.status.is_terminal():
                return JobEnd(str(info.status.value), info.message, info.driver_exit_code)
            if stopping:
                time.sleep(poll_s)
            else:
                stop.wait(poll_s)


def driver_env(settings: Settings) -> dict[str, str]:
    """The IDEM_* variables the job's driver reads its Settings from (the worker's own
    values: the store URL, the data dir resolved, the report batching)."""
    from service.settings import ENV_PREFIX

    values = {
        "database_url": absolute_sqlite(settings.db_url),
        "data_dir": str(settings.data_dir.resolve()),
        "report_every": str(settings.report_every),
        "heartbeat_interval_s": str(settings.heartbeat_interval_s),
    }
    return {ENV_PREFIX + key.upper(): value for key, value in values.items()}


def absolute_sqlite(db_url: str) -> str:
    """A SQLite URL with its file made absolute (the job's driver runs in another
    directory); any other URL unchanged."""
    url = make_url(db_url)
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return db_url
    return url.set(database=str(Path(path).resolve())).render_as_string(hide_password=False)
