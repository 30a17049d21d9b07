"""Report pages built once, in the background when they take long, kept in memory.

A final sweep's report never changes: its trials are final and the store refuses to
reopen them. Building one costs seconds (a 10,000-run sweep: a few seconds of queries,
analysis and figures), so ``GET /sweeps/{id}/report`` must neither build it on every
request nor hold the request while it is built:

- a page is kept in a ``cachetools.LRUCache`` under its :func:`cache_key` (sweep, status,
  finish time and trial counts: a running sweep's key changes as its trials finish);
- a sweep of at most ``inline_trials`` runs is built in the request (well under a second);
- a larger one is built by a background thread (:meth:`ReportCache.start`), once per key:
  requests meanwhile get ``202`` with ``Retry-After``, and a running sweep's last page is
  served (marked stale) while its newer one is built.

The cache lives in the API process. With ``idem api --workers N`` each process builds
its own copy on its first request (at most N builds of a page); the store is not used
for pages because a page is cheap to rebuild and large (the figures are embedded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from cachetools import LRUCache

from service.store.records import SweepRecord
from service.store.status import SWEEP_FINAL

log = logging.getLogger(__name__)

# Pages kept (least recently used first out). A page with its figures is a few MB.
MAX_PAGES = 8
# Sweeps up to this many trials are built inside the request (fast enough to wait for).
INLINE_TRIALS = 2000
# Concurrent background builds per API process (each takes one CPU while it draws).
BUILDERS = 1

CacheKey = tuple[int, str, datetime | None, tuple[tuple[str, int], ...]]


def cache_key(sweep: SweepRecord) -> CacheKey:
    """What a page depends on: the sweep's status, finish time and trials per status."""
    counts = tuple(sorted((str(k), int(v)) for k, v in sweep.trials_by_status.items()))
    return (sweep.id, sweep.status.value, sweep.finished_at, counts)


def is_final(key: CacheKey) -> bool:
    """Whether the page of ``key`` can never change (the sweep has finished)."""
    return key[1] in {s.value for s in SWEEP_FINAL}


@dataclass
class Build:
    """A page being built in the background."""

    key: CacheKey
    trials: int
    started: float = field(default_factory=time.monotonic)
    future: Future[str] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class ReportCache:
    """Built pages (an LRU of ``max_pages``), the latest page per sweep, and the builds
    in flight. Thread-safe: routes run in the thread pool, builds in their own threads."""

    def __init__(
        self,
        max_pages: int = MAX_PAGES,
        *,
        inline_trials: int = INLINE_TRIALS,
        builders: int = BUILDERS,
    ) -> None:
        self.max_pages = max_pages
        self.inline_trials = inline_trials
        self._pages: LRUCache[CacheKey, str] = LRUCache(maxsize=max_pages)
        self._latest: LRUCache[int, CacheKey] = LRUCache(maxsize=max_pages)
        self._building: dict[int, Build] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=builders, thread_name_prefix="report")
        self.built: list[CacheKey] = []  # every key built, in order (logs and tests)

    def get(self, key: CacheKey) -> str | None:
        """The page of exactly ``key``, or None."""
        with self._lock:
            return self._pages.get(key)

    def latest(self, sweep_id: int) -> tuple[CacheKey, str] | None:
        """The most recently built page of a sweep (any key), or None."""
        with self._lock:
            key = self._latest.get(sweep_id)
            page = self._pages.get(key) if key is not None else None
            return (key, page) if key is not None and page is not None else None

    def put(self, key: CacheKey, page: str) -> None:
        with self._lock:
            self._pages[key] = page
            self._latest[key[0]] = key
            self.built.append(key)

    def building(self, sweep_id: int) -> Build | None:
        """The build of ``sweep_id`` in flight, if any."""
        with self._lock:
            return self._building.get(sweep_id)

    def start(self, key: CacheKey, trials: int, build: Callable[[], str]) -> Build:
        """Build the page of ``key`` in the background unless the sweep has a build in
        flight already (that one is returned: one build per sweep at a time)."""
        with self._lock:
            current = self._building.get(key[0])
            if current is not None:
                return current
            job = Build(key, trials)
            self._building[key[0]] = job
        job.future = self._pool.submit(self._run, job, build)
        return job

    def _run(self, job: Build, build: Callable[[], str]) -> str:
        try:
            page = build()
            self.put(job.key, page)
            log.info("report of sweep %s built in %.1f s", job.key[0], job.elapsed())
            return page
        except Exception:
            log.exception("report of sweep %s: the build failed", job.key[0])
            raise
        finally:
            with self._lock:
                self._building.pop(job.key[0], None)

    def close(self) -> None:
        """Stop taking builds; a build in flight finishes in its thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)
