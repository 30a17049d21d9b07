"""Workers and the claim: a worker registers, keeps its heartbeat and takes queued sweeps.

Claiming is one SQL statement on both backends (see :func:`claim_sweep`), in its own
transaction; what the worker does with a sweep it holds is in :mod:`service.store.leases`.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, Table, select, update
from sqlalchemy.orm import Session

from service.exceptions import NotFound
from service.store.models import Sweep, Worker, utcnow
from service.store.records import ClaimedSweep
from service.store.status import SweepStatus, sources


def register_worker(session: Session, host: str) -> str:
    """Record a new worker process; returns its id (used as ``claimed_by``)."""
    worker_id = uuid.uuid4().hex
    now = utcnow()
    session.add(Worker(id=worker_id, host=host, started_at=now, heartbeat_at=now))
    session.flush()
    return worker_id


def worker_heartbeat(session: Session, worker_id: str) -> None:
    """Refresh a worker's liveness timestamp."""
    result = session.execute(
        update(Worker).where(Worker.id == worker_id).values(heartbeat_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"worker {worker_id} not found")


# The states a claim takes a sweep from (queued), read from the transition table.
(_CLAIMABLE,) = sources(SweepStatus.running, among=[SweepStatus.queued])


def claim_sweep(engine: Engine, worker_id: str) -> ClaimedSweep | None:
    """Atomically take the best queued sweep (highest priority, then oldest) or None.

    One statement, in its own transaction. PostgreSQL: a CTE ``SELECT … FOR UPDATE SKIP
    LOCKED LIMIT 1`` feeding ``UPDATE … RETURNING``, so concurrent claimers skip each
    other's rows. SQLite: one conditional ``UPDATE … RETURNING`` inside ``BEGIN
    IMMEDIATE``, which serialises writers. ``status = 'queued'`` stays an equality so
    both backends use the partial index ``ix_sweep_queued``.
    """
    now = utcnow()
    sweep: Table = Sweep.__table__  # type: ignore[assignment]
    pick = (
        select(sweep.c.id)
        .where(sweep.c.status == _CLAIMABLE.value, sweep.c.cancel_requested.is_(False))
        .order_by(sweep.c.priority.desc(), sweep.c.created_at, sweep.c.id)
        .limit(1)
    )
    values: dict[str, Any] = {
        "status": SweepStatus.running.value,
        "claimed_by": worker_id,
        "heartbeat_at": now,
        "started_at": now,
        "attempt": sweep.c.attempt + 1,
    }
    if engine.dialect.name == "postgresql":
        nxt = pick.with_for_update(skip_locked=True).cte("next_sweep")
        stmt = sweep.update().where(sweep.c.id == nxt.c.id)
    else:
        stmt = sweep.update().where(
            sweep.c.id == pick.scalar_subquery(),
            sweep.c.status == _CLAIMABLE.value,
        )
    stmt = stmt.values(**values).returning(
        sweep.c.id, sweep.c.name, sweep.c.spec, sweep.c.attempt, sweep.c.created_at
    )
    with engine.begin() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return ClaimedSweep(
        id=row.id, name=row.name, spec=row.spec, attempt=row.attempt, created_at=row.created_at
    )
