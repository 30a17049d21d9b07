"""Store transactions that survive a database restart: retried on connection errors.

A worker must not lose a sweep because PostgreSQL restarted (or SQLite stayed locked past
its busy timeout) for a moment. :func:`in_transaction` runs one unit of work in its own
``session_scope`` and, when the database connection fails, rolls back and runs it again
after an exponential backoff (tenacity), for up to ``timeout_s``. The engine's
``pool_pre_ping`` replaces the dead pooled connections. Every unit retried this way is
safe to run twice once it was rolled back: epoch batches are ``ON CONFLICT DO NOTHING``
and status changes are guarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential,
)

from service.store.engine import session_scope

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_TIMEOUT_S = 120.0
# Backoff between tries: 0.2 s, doubling, at most 5 s.
FIRST_DELAY_S, MAX_DELAY_S = 0.2, 5.0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost or refused database connection (worth retrying)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    timeout_s: float = RETRY_TIMEOUT_S,
    transient: Callable[[BaseException], bool] = is_transient,
    service: str = "database",
) -> T:
    """``fn()``, called again after a backoff while it fails with a ``transient`` error
    (by default a lost database connection; the Ray Jobs client passes its own test for
    an unreachable dashboard, and names that ``service`` in the warning).

    Gives up (re-raising the last error) rather than start a try after ``timeout_s``;
    any other error is raised at once.
    """

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s unavailable (%s); retrying in %.1f s", what, service, exc, delay)

    retry = Retrying(
        retry=retry_if_exception(transient),
        wait=wait_exponential(multiplier=FIRST_DELAY_S, max=MAX_DELAY_S),
        stop=stop_before_delay(timeout_s),
        before_sleep=warn,
        reraise=True,
    )
    return retry(fn)


def in_transaction(
    engine: Engine,
    work: Callable[[Session], T],
    *,
    what: str = "store write",
    timeout_s: float = RETRY_TIMEOUT_S,
) -> T:
    """``work(session)`` in one committed transaction, retried while the database is away
    (each try is a fresh ``session_scope``: a failed try was rolled back)."""

    def once() -> T:
        with session_scope(engine) as session:
            return work(session)

    return retrying(once, what=what, timeout_s=timeout_s)
