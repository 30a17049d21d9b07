"""Epoch rows: one bulk insert per batch on each backend; a replayed epoch is skipped.

Three paths, one result: PostgreSQL takes a binary COPY (the fast path), and for a batch
that replays stored epochs an ``INSERT … SELECT unnest(arrays) ON CONFLICT DO NOTHING``;
SQLite takes a multi-row ``VALUES … ON CONFLICT DO NOTHING``. The same tests run on both
backends (tests/service/store/test_epochs.py: a batch, its replay, a partial replay);
bench/store.py measures the throughput.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from service.store.models import EPOCH_COLUMNS, EpochMetric

if TYPE_CHECKING:  # idemcore.train imports torch; the claim path must not.
    from idemcore.train import EpochRecord

# Rows per INSERT statement: 9 parameters a row stays under SQLite's 32,766 and
# PostgreSQL's 65,535 bound-parameter limits.
EPOCH_ROWS_PER_STATEMENT = 3000

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
    f"INSERT INTO {EpochMetric.__tablename__} ({', '.join(_EPOCH_INSERT_COLUMNS)}) "
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
