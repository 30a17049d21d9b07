"""Encoders for streamed result tables: CSV, Parquet (pyarrow) and JSON, batch by batch.

Each encoder takes the store's batches of rows (``service.store.export``) and yields
bytes as each batch is encoded, so a response of a million rows never holds more than
one batch. Parquet goes through ``pyarrow.parquet.ParquetWriter`` into a sink that is
drained after every row group (one per batch).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from service.store.export import ExportColumn

TableFormat = Literal["json", "csv", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
Rows = Sequence[tuple[Any, ...]]


def _text(value: Any) -> Any:
    """A cell as CSV/JSON carry it: enums as their value, datetimes in ISO 8601, and
    non-finite floats as empty (the store keeps none, but a cell must never be NaN)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return str(value)  # a StrEnum (status) as its plain value
    return value


def encode_csv(columns: Sequence[ExportColumn], batches: Iterable[Rows]) -> Iterator[bytes]:
    """A header line, then the rows; empty cells for nulls."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    yield buffer.getvalue().encode()
    for rows in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_text(v) for v in row] for row in rows)
        yield buffer.getvalue().encode()


def encode_json(
    columns: Sequence[ExportColumn], batches: Iterable[Rows], head: dict[str, Any]
) -> Iterator[bytes]:
    """``{**head, "data": [row objects], "count": n}`` written as the rows arrive."""
    names = [c.name for c in columns]
    opening = json.dumps(head)[:-1]
    yield f'{opening}{", " if head else ""}"data": ['.encode()
    count = 0
    for rows in batches:
        items = [
            json.dumps(dict(zip(names, (_text(v) for v in row), strict=True)), allow_nan=False)
            for row in rows
        ]
        if items:
            yield ((", " if count else "") + ", ".join(items)).encode()
        count += len(items)
    yield f'], "count": {count}}}'.encode()


class _Drain:
    """A write-only file for pyarrow that keeps what was written until it is drained."""

    closed = False

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def arrow_schema(columns: Sequence[ExportColumn]) -> Any:
    """The Parquet schema of ``columns`` (timestamps in microseconds, UTC)."""
    import pyarrow as pa

    types: dict[str, Any] = {
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "bool": pa.bool_(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(c.name, types[c.kind]) for c in columns])


def encode_parquet(columns: Sequence[ExportColumn], batches: Iterable[Rows]) -> Iterator[bytes]:
    """One Parquet file, one row group per batch, bytes yielded after each row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    sink = _Drain()
    convert: list[Callable[[Any], Any]] = [
        (lambda v: None if v is None else str(v)) if c.kind == "str" else (lambda v: v)
        for c in columns
    ]
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for rows in batches:
            if not rows:
                continue
            arrays = [
                pa.array([convert[i](v) for v in values], type=schema.field(i).type)
                for i, values in enumerate(zip(*rows, strict=True))
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            yield sink.drain()
    yield sink.drain()


def encode(
    fmt: TableFormat,
    columns: Sequence[ExportColumn],
    batches: Iterable[Rows],
    head: dict[str, Any] | None = None,
) -> Iterator[bytes]:
    """The table in ``fmt``; ``head`` holds the extra top-level JSON fields."""
    if fmt == "csv":
        return encode_csv(columns, batches)
    if fmt == "parquet":
        return encode_parquet(columns, batches)
    return encode_json(columns, batches, head or {})
