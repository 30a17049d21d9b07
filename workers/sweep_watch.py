"""A thread that looks after one running sweep every interval, until told it is done.

Two processes watch a running sweep: the queue worker's heartbeat
(:class:`workers.worker.Heartbeat`: extends the lease, reads the cancel flag) and a Ray
Job driver's lease guard (:class:`workers.job_driver.LeaseGuard`: only reads who holds the
lease). Both set ``stop`` when the sweep's Tune run must end; the loop lives here once.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine


class SweepWatch(threading.Thread):
    """Calls :meth:`tick` every ``interval_s`` until ``done`` is set or a tick returns
    False. ``stop`` is the event that ends the sweep's Tune run."""

    role = "watch"  # names the thread: ROLE-sweep-ID

    def __init__(
        self,
        engine: Engine,
        sweep_id: int,
        worker_id: str,
        interval_s: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"{self.role}-sweep-{sweep_id}", daemon=True)
        self.engine = engine
        self.sweep_id = sweep_id
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.stop = stop
        self.done = threading.Event()

    def tick(self) -> bool:
        """One look at the sweep; False ends the watch."""
        raise NotImplementedError

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            if not self.tick():
                return
