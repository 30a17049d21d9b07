"""Report pages of finished sweeps, kept in memory by the API process.

A final sweep's report never changes: its trials are final and the store refuses to
reopen them. Building one costs seconds of CPU (the figures: ~15 s for the 360-run
paper-cpu sweep), so ``GET /sweeps/{id}/report`` builds it once per (sweep, status,
finish time) and serves that copy afterwards. A sweep still running is built afresh on
every request, so its page always shows the latest runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from service.store.records import SweepRecord
from service.store.status import SWEEP_FINAL

# Pages kept (least recently used first out). A page with its figures is a few MB.
MAX_PAGES = 8

CacheKey = tuple[int, str, datetime | None]


def cache_key(sweep: SweepRecord) -> CacheKey | None:
    """The key of a final sweep's page; None while the sweep may still change."""
    if sweep.status not in SWEEP_FINAL:
        return None
    return (sweep.id, sweep.status.value, sweep.finished_at)


class ReportCache:
    """A small thread-safe LRU of rendered pages (routes run in the thread pool)."""

    def __init__(self, max_pages: int = MAX_PAGES) -> None:
        self.max_pages = max_pages
        self._pages: OrderedDict[CacheKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> str | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: CacheKey, page: str) -> None:
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)
