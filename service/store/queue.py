"""The task queue the workers use: claim, leases, trial progress, sweep completion.

Claiming is one SQL statement on both backends (see :func:`claim_sweep`); everything
else runs inside the caller's ``session_scope`` so a trial's epoch rows and its final
state commit together.
"""

from __future__ import annotations

import struct
import uuid
import weakref
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Table, and_, delete, select, update
from sqlalchemy.orm import Session

from idemcore.config import TrialConfig
from service.exceptions import InvalidTransition, LeaseLost, NotFound
from service.store.models import EPOCH_COLUMNS, EpochMetric, Sweep, Trial, Worker, utcnow
from service.store.records import ClaimedSweep, TrialTodo
from service.store.status import (
    TRIAL_ALLOWED,
    TRIAL_FINAL,
    SweepStatus,
    TrialStatus,
    check_transition,
)
from service.store.sweeps import cancel_unfinished_trials

if TYPE_CHECKING:  # idemcore.train imports torch; the claim path must not.
    from idemcore.train import EpochRecord, TrialResult

# Rows per INSERT statement: 9 parameters a row stays under SQLite's 32,766 and
# PostgreSQL's 65,535 bound-parameter limits.
EPOCH_ROWS_PER_STATEMENT = 3000


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


def claim_sweep(engine: Engine, worker_id: str) -> ClaimedSweep | None:
    """Atomically take the best queued sweep (highest priority, then oldest) or None.

    One statement, in its own transaction. PostgreSQL: a CTE ``SELECT … FOR UPDATE SKIP
    LOCKED LIMIT 1`` feeding ``UPDATE … RETURNING``, so concurrent claimers skip each
    other's rows. SQLite: one conditional ``UPDATE … RETURNING`` inside ``BEGIN
    IMMEDIATE``, which serialises writers.
    """
    now = utcnow()
    sweep: Table = Sweep.__table__  # type: ignore[assignment]
    pick = (
        select(sweep.c.id)
        .where(sweep.c.status == SweepStatus.queued.value, sweep.c.cancel_requested.is_(False))
        .order_by(sweep.c.priority.desc(), sweep.c.created_at, sweep.c.id)
        .limit(1)
    )
    values: dict[str, Any] = {
        "status": SweepStatus.running.value,
        "claimed_by": worker_id,
        "heartbeat_at": now,
        "started_at": now,
    }
    if engine.dialect.name == "postgresql":
        nxt = pick.with_for_update(skip_locked=True).cte("next_sweep")
        stmt = sweep.update().where(sweep.c.id == nxt.c.id)
    else:
        stmt = sweep.update().where(
            sweep.c.id == pick.scalar_subquery(),
            sweep.c.status == SweepStatus.queued.value,
        )
    stmt = stmt.values(**values).returning(sweep.c.id, sweep.c.name, sweep.c.spec)
    with engine.begin() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return ClaimedSweep(id=row.id, name=row.name, spec=row.spec)


def _held_sweep(session: Session, sweep_id: int, worker_id: str) -> Sweep:
    """The sweep row, locked, if ``worker_id`` still holds its lease; else LeaseLost."""
    sweep = session.scalars(
        select(Sweep).where(Sweep.id == sweep_id).with_for_update()
    ).one_or_none()
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    if sweep.status != SweepStatus.running or sweep.claimed_by != worker_id:
        raise LeaseLost(
            f"worker {worker_id} no longer holds sweep {sweep_id} "
            f"(status {SweepStatus(sweep.status).value}, claimed by {sweep.claimed_by})"
        )
    return sweep


def sweep_heartbeat(session: Session, sweep_id: int, worker_id: str) -> bool:
    """Extend the worker's lease on the sweep; returns ``cancel_requested``.

    Raises LeaseLost if the sweep was requeued or claimed by someone else meanwhile.
    """
    stmt = (
        update(Sweep)
        .where(
            Sweep.id == sweep_id,
            Sweep.claimed_by == worker_id,
            Sweep.status == SweepStatus.running,
        )
        .values(heartbeat_at=utcnow())
        .returning(Sweep.cancel_requested)
    )
    row = session.execute(stmt).first()
    if row is None:
        _held_sweep(session, sweep_id, worker_id)  # raises the precise error
        raise LeaseLost(f"worker {worker_id} no longer holds sweep {sweep_id}")
    return bool(row[0])


def requeue_stalled(session: Session, lease_timeout_s: float) -> list[int]:
    """Sweeps running with a heartbeat older than the lease go back to queued.

    Their finished trials stay finished; their running trials become pending again.
    A stalled sweep whose cancel was requested ends cancelled instead.
    """
    cutoff = utcnow() - timedelta(seconds=lease_timeout_s)
    stalled = (Sweep.status == SweepStatus.running) & (Sweep.heartbeat_at < cutoff)
    cancelled = session.execute(
        update(Sweep)
        .where(stalled, Sweep.cancel_requested.is_(True))
        .values(status=SweepStatus.cancelled, claimed_by=None, finished_at=utcnow())
        .returning(Sweep.id)
    ).scalars()
    for sweep_id in list(cancelled):
        cancel_unfinished_trials(session, sweep_id)
    ids = list(
        session.execute(
            update(Sweep)
            .where(stalled)
            .values(status=SweepStatus.queued, claimed_by=None, heartbeat_at=None)
            .returning(Sweep.id)
        ).scalars()
    )
    if ids:
        session.execute(
            update(Trial)
            .where(Trial.sweep_id.in_(ids), Trial.status == TrialStatus.running)
            .values(status=TrialStatus.pending)
        )
    return sorted(ids)


def unfinished_trials(session: Session, sweep_id: int) -> list[TrialTodo]:
    """The sweep's pending or running trials, oldest first; finished ones never appear."""
    rows = session.execute(
        select(Trial.id, Trial.config, Trial.attempts)
        .where(Trial.sweep_id == sweep_id, Trial.status.not_in(list(TRIAL_FINAL)))
        .order_by(Trial.id)
    )
    return [
        TrialTodo(id=r.id, config=TrialConfig.from_dict(r.config), attempts=r.attempts)
        for r in rows
    ]


def mark_trials_running(
    session: Session, trial_ids: Iterable[int], node_ip: str | None = None
) -> int:
    """Pending/running trials become running with ``attempts + 1``; returns how many.

    Finished trials among ``trial_ids`` are left alone (a late duplicate never reopens
    them).
    """
    ids = list(trial_ids)
    if not ids:
        return 0
    result = session.execute(
        update(Trial)
        .where(Trial.id.in_(ids), Trial.status.not_in(list(TRIAL_FINAL)))
        .values(
            status=TrialStatus.running,
            attempts=Trial.attempts + 1,
            started_at=utcnow(),
            node_ip=node_ip,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


_EPOCH_INSERT_COLUMNS: tuple[str, ...] = ("trial_id", "epoch", *EPOCH_COLUMNS)


@lru_cache(maxsize=128)
def _epoch_insert_sql(paramstyle: str, rows: int) -> str:
    """``INSERT … VALUES (…), (…) ON CONFLICT (trial_id, epoch) DO NOTHING`` for ``rows``.

    Written out rather than built with the dialect's ``insert().values([...])``: compiling
    a multi-row VALUES construct costs SQLAlchemy about a millisecond per row, far more
    than the insert itself. Only fixed column names from the model are interpolated.
    """
    mark = "?" if paramstyle in ("qmark", "numeric") else "%s"
    row = "(" + ", ".join([mark] * len(_EPOCH_INSERT_COLUMNS)) + ")"
    return (
        f"INSERT INTO {EpochMetric.__tablename__} ({', '.join(_EPOCH_INSERT_COLUMNS)}) "
        f"VALUES {', '.join([row] * rows)} ON CONFLICT (trial_id, epoch) DO NOTHING"
    )


# The arrays travel in PostgreSQL's binary format, already encoded (see _pg_array): with
# psycopg's own ``%s`` every float was printed as text and parsed back on the server,
# and its binary list dumper packs element by element in Python; both cost more per
# row than the insert itself (bench/store.py prints the CPU per row).
_PG_EPOCH_INSERT = (
    f"INSERT INTO epoch_metric ({', '.join(_EPOCH_INSERT_COLUMNS)}) "
    "SELECT * FROM unnest(%b::integer[], %b::integer[], "
    + ", ".join(["%b::double precision[]"] * len(EPOCH_COLUMNS))
    + ") ON CONFLICT (trial_id, epoch) DO NOTHING"
)
_INT4, _INT4_ARRAY, _FLOAT8, _FLOAT8_ARRAY = 23, 1007, 701, 1022  # PostgreSQL type OIDs


class _PgArray:
    """A one-dimensional array encoded in PostgreSQL's binary wire format."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Int4Array(_PgArray):
    __slots__ = ()


class _Float8Array(_PgArray):
    __slots__ = ()


def _pg_array(values: Sequence[Any], cls: type[_PgArray]) -> _PgArray:
    """Encode ``values`` (None allowed) as int4[] or float8[] with one struct.pack call.

    Layout: ndim, has-nulls flag, element type, length, lower bound 1; then per element
    its byte length (-1 for NULL) and its big-endian value.
    """
    is_int = cls is _Int4Array
    code, size, oid = ("i", 4, _INT4) if is_int else ("d", 8, _FLOAT8)
    has_null = any(v is None for v in values)
    head = struct.pack(">iiiii", 1, int(has_null), oid, len(values), 1)
    if not has_null:
        args = [x for v in values for x in (size, v)]
        return cls(head + struct.pack(">" + ("i" + code) * len(values), *args))
    fmt = ">" + "".join("i" if v is None else "i" + code for v in values)
    args = [x for v in values for x in ((-1,) if v is None else (size, v))]
    return cls(head + struct.pack(fmt, *args))


_registered: weakref.WeakSet[Any] = weakref.WeakSet()


def _register_array_dumpers(driver_connection: Any) -> None:
    """Teach a psycopg connection to send _PgArray values as they are (once each)."""
    if driver_connection in _registered:
        return
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class Int4ArrayDumper(Dumper):
        format = Format.BINARY
        oid = _INT4_ARRAY

        def dump(self, obj: Any) -> bytes:
            return bytes(obj.data)

    class Float8ArrayDumper(Int4ArrayDumper):
        oid = _FLOAT8_ARRAY

    driver_connection.adapters.register_dumper(_Int4Array, Int4ArrayDumper)
    driver_connection.adapters.register_dumper(_Float8Array, Float8ArrayDumper)
    _registered.add(driver_connection)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


_PG_EPOCH_COPY = (
    f"COPY {EpochMetric.__tablename__} ({', '.join(_EPOCH_INSERT_COLUMNS)}) "
    "FROM STDIN (FORMAT BINARY)"
)
_PG_COPY_TYPES = ["int4", "int4"] + ["float8"] * len(EPOCH_COLUMNS)


def _pg_copy_epochs(session: Session, trial_id: int, records: Sequence[EpochRecord]) -> bool:
    """The PostgreSQL fast path: binary COPY inside a savepoint.

    COPY skips the speculative insertion that ``ON CONFLICT`` costs every row (measured
    ~1.55x the rows/s of the unnest INSERT). It cannot skip duplicates, so a batch that
    replays a stored epoch raises a unique violation: the savepoint (psycopg's nested
    ``transaction()`` inside the session's open transaction) is rolled back and
    False tells the caller to take the ``ON CONFLICT DO NOTHING`` path. Other driver
    errors are re-raised as SQLAlchemy's (so connection losses stay recognisable).
    """
    import psycopg
    from sqlalchemy.exc import DBAPIError

    raw = session.connection().connection.driver_connection
    assert raw is not None  # a live psycopg connection inside the session's transaction
    try:
        with raw.transaction(), raw.cursor() as cur, cur.copy(_PG_EPOCH_COPY) as copy:
            copy.set_types(_PG_COPY_TYPES)
            for r in records:
                values = [_float_or_none(getattr(r, c, None)) for c in EPOCH_COLUMNS]
                copy.write_row((trial_id, int(r.epoch), *values))
    except psycopg.errors.UniqueViolation:
        return False
    except psycopg.Error as exc:
        raise DBAPIError.instance(_PG_EPOCH_COPY, None, exc, psycopg.Error) from exc
    return True


def append_epochs(session: Session, trial_id: int, records: Sequence[EpochRecord]) -> int:
    """Insert a batch of epoch rows in one statement; replayed epochs are skipped.

    Returns the number of rows actually inserted; a retried batch can never duplicate
    rows. PostgreSQL: a binary COPY (``_pg_copy_epochs``), and for a batch that replays
    stored epochs ``INSERT … SELECT unnest(arrays) ON CONFLICT (trial_id, epoch) DO
    NOTHING``. SQLite: a multi-row VALUES with ``ON CONFLICT DO NOTHING``, split above
    EPOCH_ROWS_PER_STATEMENT rows (its bound-parameter limit).
    """
    if not records:
        return 0
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        if _pg_copy_epochs(session, trial_id, records):
            return len(records)
        # A replayed batch (some epochs already stored): one INSERT … ON CONFLICT DO
        # NOTHING however large the batch, each column travelling as one array.
        _register_array_dumpers(conn.connection.driver_connection)
        columns: list[_PgArray] = [
            _pg_array([trial_id] * len(records), _Int4Array),
            _pg_array([int(r.epoch) for r in records], _Int4Array),
        ]
        columns += [
            _pg_array([_float_or_none(getattr(r, c, None)) for r in records], _Float8Array)
            for c in EPOCH_COLUMNS
        ]
        result = conn.exec_driver_sql(_PG_EPOCH_INSERT, tuple(columns))
        return max(int(result.rowcount), 0)
    paramstyle = conn.dialect.paramstyle
    inserted = 0
    for i in range(0, len(records), EPOCH_ROWS_PER_STATEMENT):
        chunk = records[i : i + EPOCH_ROWS_PER_STATEMENT]
        params: list[Any] = []
        for r in chunk:
            params.append(trial_id)
            params.append(int(r.epoch))
            params.extend(_float_or_none(getattr(r, c, None)) for c in EPOCH_COLUMNS)
        result = conn.exec_driver_sql(_epoch_insert_sql(paramstyle, len(chunk)), tuple(params))
        inserted += max(int(result.rowcount), 0)
    return inserted


def finish_trial(
    session: Session,
    trial_id: int,
    status: TrialStatus,
    result: TrialResult | None,
    error: str | None,
    records: Sequence[EpochRecord] = (),
    *,
    repeat_ok: bool = False,
) -> bool:
    """Write the trial's last epoch rows and its final state in the caller's transaction.

    ``status`` must be final; a trial that is already final raises InvalidTransition,
    except that with ``repeat_ok`` a trial already in exactly ``status`` is left as it is
    and False is returned: the retry of a transaction whose commit went through but whose
    reply was lost (the worker retries store writes on connection errors). Returns True
    when it wrote.
    """
    status = TrialStatus(status)
    if status not in TRIAL_FINAL:
        raise InvalidTransition(f"finish_trial needs a final status, got {status.value}")
    current = session.scalars(
        select(Trial.status).where(Trial.id == trial_id).with_for_update()
    ).one_or_none()
    if current is None:
        raise NotFound(f"trial {trial_id} not found")
    if repeat_ok and TrialStatus(current) == status:
        return False
    check_transition(TrialStatus(current), status)
    append_epochs(session, trial_id, records)
    if result is not None:
        # A rerun that stopped earlier than an earlier attempt (a GPU run that diverged
        # sooner: only deterministic CPU runs are guaranteed to repeat) leaves that
        # attempt's later rows behind; the final state keeps exactly 1..epochs_run.
        session.execute(
            delete(EpochMetric).where(
                EpochMetric.trial_id == trial_id, EpochMetric.epoch > result.epochs_run
            )
        )
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if result is not None:
        values.update(
            idempotent_error=result.idempotent_error,
            train_idempotent_error=result.train_idempotent_error,
            loss=result.loss,
            norm=result.norm,
            trace=result.trace,
            update_norm=result.update_norm,
            image_dim=result.image_dim,
            epochs_to_threshold=result.epochs_to_threshold,
            epochs_run=result.epochs_run,
            wall_seconds=result.wall_seconds,
            result=result.to_dict(),
        )
    allowed_from = [s for s, targets in TRIAL_ALLOWED.items() if status in targets]
    session.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.status.in_(allowed_from))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return True


def finish_sweep(session: Session, sweep_id: int, worker_id: str) -> SweepStatus:
    """End the worker's sweep: cancelled if cancel was requested, else succeeded.

    On cancel the unfinished trials end cancelled. Without a cancel, trials that are
    still unfinished mean the sweep failed (its error says how many).
    """
    sweep = _held_sweep(session, sweep_id, worker_id)
    if sweep.cancel_requested:
        cancel_unfinished_trials(session, sweep_id)
        new = SweepStatus.cancelled
    else:
        left = len(unfinished_trials(session, sweep_id))
        new = SweepStatus.succeeded
        if left:
            new = SweepStatus.failed
            sweep.error = f"{left} trials did not finish"
            _end_unfinished(session, sweep_id, TrialStatus.failed, sweep.error)
    check_transition(SweepStatus(sweep.status), new)
    sweep.status = new
    sweep.finished_at = utcnow()
    session.flush()
    return new


def _end_unfinished(session: Session, sweep_id: int, status: TrialStatus, error: str) -> None:
    session.execute(
        update(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.status.not_in(list(TRIAL_FINAL)))
        .values(status=status, finished_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    )


def fail_sweep(session: Session, sweep_id: int, error: str) -> None:
    """Mark a sweep failed with ``error``; its unfinished trials end failed too."""
    sweep = session.scalars(
        select(Sweep).where(Sweep.id == sweep_id).with_for_update()
    ).one_or_none()
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    check_transition(SweepStatus(sweep.status), SweepStatus.failed)
    sweep.status = SweepStatus.failed
    sweep.error = error
    sweep.finished_at = utcnow()
    _end_unfinished(session, sweep_id, TrialStatus.failed, f"sweep failed: {error}")
    session.flush()


def release_sweep(session: Session, sweep_id: int, worker_id: str) -> None:
    """Give the sweep back to the queue (graceful shutdown); running trials → pending."""
    sweep = _held_sweep(session, sweep_id, worker_id)
    sweep.status = SweepStatus.queued
    sweep.claimed_by = None
    sweep.heartbeat_at = None
    session.execute(
        update(Trial)
        .where(and_(Trial.sweep_id == sweep_id, Trial.status == TrialStatus.running))
        .values(status=TrialStatus.pending)
        .execution_options(synchronize_session=False)
    )
    session.flush()


def set_ray_info(
    session: Session, sweep_id: int, experiment: str, dashboard_url: str | None
) -> None:
    """Record the Ray Tune experiment name and dashboard URL of a running sweep."""
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(ray_experiment=experiment, ray_dashboard_url=dashboard_url)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"sweep {sweep_id} not found")
