"""Encoding pages of exported events as NDJSON, CSV and Parquet, and writing them behind
the reader (``WriteBehind``)."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Protocol

import msgspec

from api.adapters.eventlog.reader import COLUMNS, LogPage

_json = msgspec.json.Encoder()


def ndjson_bytes(page: LogPage) -> bytes:
    """One JSON object per line; ``data`` nested as an object."""
    encode = _json.encode
    return b"".join(encode(e.as_json_dict()) + b"\n" for e in page.events())


def csv_bytes(page: LogPage) -> bytes:
    """RFC 4180 CSV rows (no header), UTF-8; ``data`` is a JSON string."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(
        (
            e.context,
            e.position,
            e.recorded_at.isoformat(),
            str(e.aggregate_id),
            e.aggregate_version,
            e.event_type,
            e.data_json(),
        )
        for e in page.events()
    )
    return text.getvalue().encode()


@functools.cache
def parquet_schema() -> Any:
    """The Arrow schema of the Parquet export (``pyarrow.Schema``; the columns of
    ``COLUMNS``): ``recorded_at`` a UTC timestamp in µs, ``data`` a JSON string."""
    import pyarrow as pa

    return pa.schema(
        [
            ("context", pa.string()),
            ("position", pa.int64()),
            ("recorded_at", pa.timestamp("us", tz="UTC")),
            ("aggregate_id", pa.string()),
            ("aggregate_version", pa.int64()),
            ("event_type", pa.string()),
            ("data", pa.string()),
        ]
    )


def arrow_batch(page: LogPage) -> Any:
    """The page as a ``pyarrow.RecordBatch`` of ``parquet_schema()``, built straight from its
    columns (the ``data`` column from one buffer every event's JSON is encoded into)."""
    import pyarrow as pa

    schema = parquet_schema()
    n = len(page)
    return pa.RecordBatch.from_arrays(
        [
            pa.repeat(pa.scalar(page.context, pa.string()), n),
            pa.array(page.positions, pa.int64()),
            pa.array(page.recorded_at, schema.field("recorded_at").type),
            pa.array(msgspec.to_builtins(page.aggregate_ids), pa.string()),  # str(), in C
            pa.array(page.aggregate_versions, pa.int64()),
            pa.array(page.event_types, pa.string()),
            _json_column(page.data),
        ],
        schema=schema,
    )


def _json_column(values: list[dict[str, Any]]) -> Any:
    """``[_json.encode(v).decode() for v in values]`` as an Arrow string array."""
    import pyarrow as pa

    buffer = bytearray()
    offsets = [0]
    encode_into, end = _json.encode_into, offsets.append
    for value in values:
        encode_into(value, buffer, -1)
        end(len(buffer))
    if len(buffer) > 2**31 - 1:  # beyond 32-bit offsets: let Arrow chunk it
        return pa.array([_json.encode(v).decode() for v in values], pa.string())
    return pa.StringArray.from_buffers(
        len(values), pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(buffer)
    )


def arrow_bytes(page: LogPage) -> bytes:
    """``arrow_batch(page)`` as an Arrow IPC message (``ParquetWriter.write_encoded``)."""
    return arrow_batch(page).serialize().to_pybytes()  # type: ignore[no-any-return]


ENCODERS: dict[str, Callable[[LogPage], bytes]] = {
    "ndjson": ndjson_bytes,
    "csv": csv_bytes,
    "parquet": arrow_bytes,
}
"""Format name → the function encoding a page for that format's ``write_encoded``."""


class Writer(Protocol):
    def write(self, page: LogPage) -> None: ...

    def write_encoded(self, payload: bytes) -> None:
        """Append a page encoded by this format's ``ENCODERS`` function."""

    def close(self) -> None: ...


class NdjsonWriter:
    """One JSON object per line; ``data`` nested as an object."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, page: LogPage) -> None:
        self.out.write(ndjson_bytes(page))

    def write_encoded(self, payload: bytes) -> None:
        self.out.write(payload)

    def close(self) -> None:
        self.out.flush()


class CsvWriter:
    """RFC 4180 CSV with a header row, UTF-8; ``data`` is a JSON string."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        header = io.StringIO(newline="")
        csv.writer(header).writerow(COLUMNS)
        out.write(header.getvalue().encode())

    def write(self, page: LogPage) -> None:
        self.out.write(csv_bytes(page))

    def write_encoded(self, payload: bytes) -> None:
        self.out.write(payload)

    def close(self) -> None:
        self.out.flush()


class ParquetWriter:
    """Parquet (zstd) of ``parquet_schema()``, one row group per page written."""

    def __init__(self, path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = parquet_schema()
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def write(self, page: LogPage) -> None:
        if len(page):
            self.writer.write_batch(arrow_batch(page))

    def write_encoded(self, payload: bytes) -> None:
        batch = self.pa.ipc.read_record_batch(self.pa.py_buffer(payload), self.schema)
        if batch.num_rows:
            self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()


class WriteBehind:
    """A ``Writer`` whose pages are written by a background thread, one at a time and in
    order, while the caller decodes the next one (at most one page waits). An error of the
    writer is raised by the next write or by ``close``."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="export-write")
        self._pending: Future[None] | None = None

    def write(self, page: LogPage) -> None:
        self._submit(self.writer.write, page)

    def write_encoded(self, payload: bytes) -> None:
        self._submit(self.writer.write_encoded, payload)

    def _submit(self, write: Callable[[Any], None], what: Any) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._thread.submit(write, what)

    def close(self) -> None:
        try:
            if self._pending is not None:
                self._pending.result()
        finally:
            self._thread.shutdown()
            self.writer.close()


# -- exporting in parallel -------------------------------------------------------------------
