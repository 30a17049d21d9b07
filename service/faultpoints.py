"""Fault points: a test-only pause at named places, inert unless ``IDEM_TEST_PAUSE_AT`` is set.

The fault tests (tests/faults/) SIGKILL a worker or the API at an exact moment, without
timing guesses: they start the process with ``IDEM_TEST_PAUSE_AT=SITE`` (or ``SITE@N`` for
the N-th time the site is reached, default 1) and ``IDEM_TEST_PAUSE_FILE=PATH``. When the
process reaches that site it creates PATH and sleeps until it is killed; the test waits
for PATH and kills it. The sites:

- ``submit-before-commit``: ``POST /sweeps`` stored the sweep but has not committed.
- ``epochs-before-commit``: the worker wrote a batch of epoch rows, not yet committed.
- ``epochs-after-commit``: the worker's batch is committed (the trial is mid-run).

Nothing here runs in production: with the variable unset, :func:`pause_point` returns at
once. It imports only the standard library, so the store, the workers and the API may call it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

PAUSE_AT_ENV = "IDEM_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "IDEM_TEST_PAUSE_FILE"

_reached: Counter[str] = Counter()
_lock = threading.Lock()


def pause_point(site: str) -> None:
    """Block forever at ``site`` if ``IDEM_TEST_PAUSE_AT`` names it (tests only)."""
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != site:
        return
    with _lock:
        _reached[site] += 1
        if _reached[site] != int(nth or 1):
            return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        with open(marker, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    while True:  # until the test kills this process
        time.sleep(3600)
