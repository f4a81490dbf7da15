"""The export's fast path (``api.adapters.eventlog``: ``RecordDecoder`` pages, columns straight to
Arrow) against the reference path (each Application's mapper, one ``LogEvent`` per event,
the writers as they were), in memory: every event type of both contexts, the upcast v1
``Book.Published``, contact details hidden or not, an event only the mapper can decode, and a
compressed log, give the same rows, byte for byte (``data`` keys in the same order)."""

from __future__ import annotations

import csv
import io
import itertools
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eventsourcing.persistence import Compressor

from api.adapters.eventlog import (
    COLUMNS,
    MAX_JOBS,
    PARALLEL_MIN_EVENTS,
    CsvWriter,
    LogEvent,
    LogPage,
    LogReader,
    NdjsonWriter,
    ParquetWriter,
    WriteBehind,
    export_jobs,
    export_tasks,
)
from projections.source import Source
from tests.unit.test_records import CHAT_TYPES, LIBRARY_TYPES, chat_log, library_log, rows_of

_json = msgspec.json.Encoder()


def reader_of(name: str, app: Any) -> LogReader:
    return LogReader(None, Source(name, app))  # type: ignore[arg-type] # no connection needed


def reference(reader: LogReader, rows: list[Any], include_contact: bool) -> list[LogEvent]:
    return [reader.decode_with_mapper(r, include_contact=include_contact) for r in rows]


def same(fast: LogEvent, slow: LogEvent) -> bool:
    """Equal values, and the same JSON for ``data`` (key order included)."""
    return fast == slow and _json.encode(fast.data) == _json.encode(slow.data)


def logs() -> list[tuple[LogReader, list[Any]]]:
    library, chat = library_log(), chat_log()
    return [
        (reader_of("library", library), rows_of(library)),
        (reader_of("chat", chat), rows_of(chat)),
    ]


@pytest.mark.parametrize("include_contact", [False, True])
def test_fast_pages_equal_the_mapper_for_every_event_type(include_contact: bool) -> None:
    seen = set()
    for reader, rows in logs():
        assert reader.decoder.fast
        page = reader.decode_page(rows, include_contact=include_contact)
        expected = reference(reader, rows, include_contact)
        events = list(page.events())
        assert len(events) == len(expected) == page.scanned == len(rows)
        for fast, slow in zip(events, expected, strict=True):
            assert same(fast, slow), (fast, slow)
        for row, slow in zip(rows, expected, strict=True):
            assert same(reader.decode(row, include_contact=include_contact), slow)
        assert page.last_position == rows[-1][0]
        seen |= set(page.event_types)
    assert seen == LIBRARY_TYPES | CHAT_TYPES


def test_the_v1_published_event_is_upcast_on_the_fast_path() -> None:
    library = library_log()
    reader = reader_of("library", library)
    (v1,) = [r for r in rows_of(library) if b"golden" in r[4]]
    (event,) = reader.decode_page([v1]).events()
    assert event == reader.decode_with_mapper(v1)
    assert event.event_type == "Book.Published" and event.data["language"] == "zh"
    assert "class_version" not in event.data and "originator_topic" not in event.data
    # added by the upcasters, after the stored keys
    assert list(event.data)[-2:] == ["language", "cover_media_id"]
    assert event.recorded_at.isoformat() == "2024-05-04T08:30:00.123456+00:00"


def test_contact_details_are_left_out_unless_asked_for() -> None:
    library = library_log()
    reader = reader_of("library", library)
    rows = [r for r in rows_of(library) if r[3].endswith("Loan.Requested")]
    hidden = reader.decode_page(rows)
    shown = reader.decode_page(rows, include_contact=True)
    assert all("contact" not in d for d in hidden.data)
    assert [d["contact"]["phone"] for d in shown.data] == ["138"] * 3


def test_an_event_only_the_mapper_decodes_is_exported_alike() -> None:
    library = library_log()
    reader = reader_of("library", library)
    row = rows_of(library)[0]
    nan = (*row[:4], row[4].replace(b'"nickname":"', b'"score":NaN,"nickname":"'))
    (fast,) = reader.decode_page([nan]).events()
    slow = reader.decode_with_mapper(nan)
    assert fast.data["score"] != fast.data["score"]  # NaN, as the mapper decodes it
    assert _json.encode(fast.data) == _json.encode(slow.data)
    assert fast.data["nickname"] == slow.data["nickname"] == "主人"


class _Zlib(Compressor):
    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data)

    def decompress(self, data: bytes) -> bytes:
        return zlib.decompress(data)


def test_a_compressed_log_is_exported_through_the_mapper() -> None:
    library = library_log()
    events = [library.mapper.to_domain_event(_stored(r)) for r in rows_of(library)]
    library.mapper.compressor = _Zlib()
    stored = [library.mapper.to_stored_event(e) for e in events]
    rows = [
        (i, s.originator_id, s.originator_version, s.topic, s.state)
        for i, s in enumerate(stored, 1)
    ]
    reader = reader_of("library", library)
    assert not reader.decoder.fast
    for fast, slow in zip(
        reader.decode_page(rows).events(), reference(reader, rows, False), strict=True
    ):
        assert same(fast, slow)


def _stored(row: Any) -> Any:
    from eventsourcing.persistence import StoredEvent

    return StoredEvent(originator_id=row[1], originator_version=row[2], topic=row[3], state=row[4])


def test_between_keeps_the_events_in_a_time_range() -> None:
    reader, rows = logs()[0]
    page = reader.decode_page(rows)
    assert page.between(None, None) is page
    times = sorted(page.recorded_at)
    since, until = times[3], times[-3]
    chosen = page.between(since, until)
    assert list(chosen.events()) == [e for e in page.events() if since <= e.recorded_at < until]
    assert (chosen.last_position, chosen.scanned) == (page.last_position, page.scanned)
    assert not page.between(times[-1], times[0])


# -- the writers, against the row-by-row writers the export had before -----------------------


def reference_parquet(events: list[LogEvent]) -> pa.Table:
    schema = pa.schema(
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
    columns = {
        "context": [e.context for e in events],
        "position": [e.position for e in events],
        "recorded_at": [e.recorded_at for e in events],
        "aggregate_id": [str(e.aggregate_id) for e in events],
        "aggregate_version": [e.aggregate_version for e in events],
        "event_type": [e.event_type for e in events],
        "data": [e.data_json() for e in events],
    }
    return pa.Table.from_pydict(columns, schema=schema)


def reference_ndjson(events: list[LogEvent]) -> bytes:
    return b"".join(_json.encode(e.as_json_dict()) + b"\n" for e in events)


def reference_csv(events: list[LogEvent]) -> bytes:
    text = io.StringIO(newline="")
    out = csv.writer(text)
    out.writerow(COLUMNS)
    out.writerows(
        (
            e.context,
            e.position,
            e.recorded_at.isoformat(),
            str(e.aggregate_id),
            e.aggregate_version,
            e.event_type,
            e.data_json(),
        )
        for e in events
    )
    return text.getvalue().encode()


def pages_of(reader: LogReader, rows: list[Any], size: int) -> list[LogPage]:
    return [reader.decode_page(rows[i : i + size]) for i in range(0, len(rows), size)]


def test_every_format_writes_what_the_row_by_row_writers_wrote(tmp_path: Path) -> None:
    expected: list[LogEvent] = []
    pages: list[LogPage] = []
    for reader, rows in logs():
        expected += reference(reader, rows, False)
        pages += pages_of(reader, rows, 7)

    path = tmp_path / "events.parquet"
    parquet = WriteBehind(ParquetWriter(str(path)))
    for page in pages:
        parquet.write(page)
    parquet.close()
    table = pq.read_table(path)
    assert table.equals(reference_parquet(expected))
    assert pq.ParquetFile(path).metadata.num_row_groups == len(pages)  # one per page

    for writer_class, make_reference in (
        (NdjsonWriter, reference_ndjson),
        (CsvWriter, reference_csv),
    ):
        out = io.BytesIO()
        writer = WriteBehind(writer_class(out))
        for page in pages:
            writer.write(page)
        writer.close()
        assert out.getvalue() == make_reference(expected), writer_class


# -- cutting the logs into chunks for worker processes ----------------------------------------


def test_chunks_cover_each_log_in_order_in_whole_pages() -> None:
    plans = [("library", 0, 1_000_003), ("chat", 10, 300_000)]
    tasks = export_tasks(
        "postgresql:///x",
        plans,
        "parquet",
        jobs=2,
        page_size=5000,
        types=("Loan.Requested",),
        include_contact=True,
    )
    for context, after, stop in plans:
        mine = [t for t in tasks if t.context == context]
        assert mine[0].after == after and mine[-1].stop == stop
        assert all(a.stop == b.after for a, b in itertools.pairwise(mine))
        assert all((t.stop - t.after) % 5000 == 0 for t in mine[:-1])
        assert max(t.stop - t.after for t in mine) == 4 * 5000  # at most four pages
    assert [t.context for t in tasks] == sorted(
        (t.context for t in tasks), key="library chat".index
    )
    assert all(t.types == ("Loan.Requested",) and t.include_contact for t in tasks)
    small = export_tasks("postgresql:///x", [("library", 0, 30)], "csv", jobs=4, page_size=7)
    assert [(t.after, t.stop) for t in small] == [(0, 7), (7, 14), (14, 21), (21, 28), (28, 30)]
    assert export_tasks("postgresql:///x", [("chat", 5, 5)], "csv", jobs=2) == []


def test_worker_processes_only_for_large_logs_unless_asked() -> None:
    assert export_jobs(None, PARALLEL_MIN_EVENTS - 1) == 1
    assert 1 <= export_jobs(None, PARALLEL_MIN_EVENTS) <= MAX_JOBS
    assert export_jobs(3, 10) == 3 and export_jobs(1, 10**7) == 1
