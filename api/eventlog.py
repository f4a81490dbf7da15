"""Reading the event logs for people: export (NDJSON / CSV / Parquet), history, live tail.

Both contexts' logs (``library_events``, ``chat_events``) are read in keyset pages on
``notification_id`` (``WHERE notification_id > last ORDER BY notification_id LIMIT n``: an
index range scan per page, memory bounded by the page whatever the log's size) and decoded
with each Application's own mapper, so upcasters apply and old event shapes come out in the
current one.

One exported event (``LogEvent``)::

    context            "library" | "chat"
    position           its notification id in that context's log
    recorded_at        the event's timestamp (UTC)
    aggregate_id       UUID (string)
    aggregate_version  the aggregate's version after the event
    event_type         "<Aggregate>.<Event>", e.g. "Loan.Requested" (docs/EVENTS.md)
    data               the event's own fields (not the columns above) as JSON

Personal data: ``Loan.Requested.contact`` (phone / WeChat id) is left out unless asked for
(``include_contact``); it is for the lender of that loan only (DESIGN §1).

Time ranges: ``seek`` finds where ``since`` starts by binary search on the log, assuming
timestamps follow log order to within ``SEEK_MARGIN`` (they are taken just before the insert,
and inserts commit in log order); the exact filter is then applied to every event read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, Protocol
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from projections.framework import Source

ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {"Loan.Requested": ("contact",)}
"""Fields left out of exports unless contact details are asked for, by event type."""
SEEK_MARGIN = timedelta(minutes=5)
COLUMNS = (
    "context",
    "position",
    "recorded_at",
    "aggregate_id",
    "aggregate_version",
    "event_type",
    "data",
)

_json = msgspec.json.Encoder()


def event_type_of(topic: str) -> str:
    """``"domain.loan:Loan.Requested"`` → ``"Loan.Requested"``."""
    return topic.split(":", 1)[-1]


@dataclass(frozen=True)
class LogEvent:
    context: str
    position: int
    recorded_at: datetime
    aggregate_id: UUID
    aggregate_version: int
    event_type: str
    data: dict[str, Any]

    def data_json(self) -> str:
        return _json.encode(self.data).decode()

    def as_json_dict(self) -> dict[str, Any]:
        """The NDJSON shape: ``data`` nested as an object."""
        return {
            "context": self.context,
            "position": self.position,
            "recorded_at": self.recorded_at.isoformat(),
            "aggregate_id": str(self.aggregate_id),
            "aggregate_version": self.aggregate_version,
            "event_type": self.event_type,
            "data": self.data,
        }


class LogReader:
    """Keyset pages of one context's log, decoded with its Application's mapper."""

    def __init__(self, conn: psycopg.Connection[Any], source: Source) -> None:
        self.conn = conn
        self.source = source
        self.context = source.name
        self.table = sql.Identifier(source.channel)

    def head(self) -> int:
        row = self.conn.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(self.table)
        ).fetchone()
        return int(row[0]) if row else 0

    def rows(
        self,
        *,
        after: int = 0,
        types: Sequence[str] = (),
        page_size: int = 5000,
        stop: int | None = None,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Pages of raw rows ``(notification_id, originator_id, originator_version, topic,
        state)`` with ``after`` < id (≤ ``stop``), optionally of the given event types."""
        where = [sql.SQL("notification_id > %s")]
        extra: list[Any] = []
        if types:
            where.append(sql.SQL("split_part(topic, ':', 2) = ANY(%s)"))
            extra.append(list(types))
        if stop is not None:
            where.append(sql.SQL("notification_id <= %s"))
            extra.append(stop)
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {} WHERE {} ORDER BY notification_id LIMIT %s"
        ).format(self.table, sql.SQL(" AND ").join(where))
        last = after
        while True:
            page = self.conn.execute(query, (last, *extra, page_size)).fetchall()
            if not page:
                return
            yield page
            last = page[-1][0]
            if len(page) < page_size:
                return

    def decode(self, row: Sequence[Any], *, include_contact: bool = False) -> LogEvent:
        notification_id, originator_id, version, topic, state = row
        event = self.source.app.mapper.to_domain_event(
            StoredEvent(
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state),
            )
        )
        kind = event_type_of(topic)
        data = {k: v for k, v in vars(event).items() if k not in ENVELOPE}
        if not include_contact:
            for name in PERSONAL_FIELDS.get(kind, ()):
                data.pop(name, None)
        return LogEvent(
            context=self.context,
            position=int(notification_id),
            recorded_at=event.timestamp,
            aggregate_id=event.originator_id,
            aggregate_version=int(version),
            event_type=kind,
            data=data,
        )

    def history(self, aggregate_id: UUID) -> list[tuple[Any, ...]]:
        """Raw rows of one aggregate, oldest first."""
        return self.conn.execute(
            sql.SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {} WHERE originator_id = %s ORDER BY originator_version"
            ).format(self.table),
            (aggregate_id,),
        ).fetchall()

    def _first_at_or_after(self, position: int) -> tuple[int, datetime] | None:
        row = self.conn.execute(
            sql.SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {} WHERE notification_id >= %s ORDER BY notification_id LIMIT 1"
            ).format(self.table),
            (position,),
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), self.decode(row).recorded_at

    def seek(self, since: datetime, margin: timedelta = SEEK_MARGIN) -> int:
        """A position after which every event recorded at or after ``since`` lies (binary
        search; about log2(head) single-row reads)."""
        target = since - margin
        low, high = 0, self.head()  # invariant: the answer is in [low, high]
        while low < high:
            mid = (low + high + 1) // 2
            found = self._first_at_or_after(mid)
            if found is None or found[1] >= target:
                high = mid - 1
            else:
                low = found[0]
        return low


# -- writers ------------------------------------------------------------------------------------


class Writer(Protocol):
    def write(self, events: Sequence[LogEvent]) -> None: ...

    def close(self) -> None: ...


class NdjsonWriter:
    """One JSON object per line; ``data`` nested as an object."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, events: Sequence[LogEvent]) -> None:
        self.out.write(b"".join(_json.encode(e.as_json_dict()) + b"\n" for e in events))

    def close(self) -> None:
        self.out.flush()


class CsvWriter:
    """RFC 4180 CSV with a header row; ``data`` is a JSON string."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self.csv = csv.writer(self.text)
        self.csv.writerow(COLUMNS)

    def write(self, events: Sequence[LogEvent]) -> None:
        self.csv.writerows(
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

    def close(self) -> None:
        self.text.flush()
        self.text.detach()


class ParquetWriter:
    """Parquet (zstd), one row group per page written; ``data`` is a JSON string column."""

    def __init__(self, path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
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
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def write(self, events: Sequence[LogEvent]) -> None:
        if not events:
            return
        columns = {
            "context": [e.context for e in events],
            "position": [e.position for e in events],
            "recorded_at": [e.recorded_at for e in events],
            "aggregate_id": [str(e.aggregate_id) for e in events],
            "aggregate_version": [e.aggregate_version for e in events],
            "event_type": [e.event_type for e in events],
            "data": [e.data_json() for e in events],
        }
        self.writer.write_table(self.pa.Table.from_pydict(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def format_event(event: LogEvent) -> str:
    """One human-readable line: where, when, what, and its fields."""
    fields = ", ".join(f"{k}={_short(v)}" for k, v in event.data.items())
    at = event.recorded_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return (
        f"{event.context}#{event.position:<8} {at}Z  {event.event_type:<26} "
        f"{event.aggregate_id} v{event.aggregate_version}  {fields}"
    )


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else _json.encode(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "…"


__all__ = [
    "COLUMNS",
    "CsvWriter",
    "LogEvent",
    "LogReader",
    "NdjsonWriter",
    "ParquetWriter",
    "event_type_of",
    "format_event",
]
