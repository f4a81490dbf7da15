"""Reading the event logs in pages and decoding them into exported events.

Both contexts' logs (``library_events``, ``chat_events``) are read in keyset pages on
``notification_id`` (``WHERE notification_id > last ORDER BY notification_id LIMIT n``: an
index range scan per page, memory bounded by the page whatever the log's size) and decoded
with ``projections.records.RecordDecoder`` (msgspec), the decoder the projections use: the
same values as each Application's own mapper, upcasters included, so old event shapes come
out in the current one; it falls back to the mapper for a cipher, a compressor or any event
the fast path does not know (``LogReader.decode_with_mapper`` is that reference path).

One exported event (``LogEvent``; a ``LogPage`` holds a page of them as columns)::

    context            "library" | "chat"
    position           its notification id in that context's log
    recorded_at        the event's timestamp (UTC)
    aggregate_id       UUID (string)
    aggregate_version  the aggregate's version after the event
    event_type         "<Aggregate>.<Event>", e.g. "Loan.Requested" (docs/EVENTS.md)
    data               the event's own fields (not the columns above) as JSON

Export pipeline, in this process (``LogReader.pages`` → ``WriteBehind``): the next page's
rows are read in a background thread while this page is decoded, and the previous page is
written in another (the Parquet writer builds each page's Arrow columns directly, one row
group per page); at most three pages are in memory. On a large log (``export_jobs``), worker
processes do the reading, decoding and encoding instead, a chunk of a few pages each
(``export_tasks``, ``export_parallel``: at most two chunks per worker in memory), and this
process writes their encoded pages in log order (the same rows; a page then ends at a chunk's
end too, so Parquet row groups can be smaller where the log has gaps).
Decoding is Python-bound (about 5 µs an event, the GIL held), so threads cannot share it.

Personal data: ``Loan.Requested.contact`` (phone / WeChat id) is left out unless asked for
(``include_contact``); it is for the lender of that loan only (DESIGN §1).

Time ranges: ``seek`` finds where ``since`` starts by binary search on the log, assuming
timestamps follow log order to within ``SEEK_MARGIN`` (they are taken just before the insert,
and inserts commit in log order); the exact filter is then applied to every event read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql
from psycopg.rows import tuple_row

from projections.records import RawRow
from projections.source import Source, gc_paused

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
# What a decoded ``Record``'s data can still hold of ENVELOPE ("timestamp" is its own slot).
_RECORD_ENVELOPE = tuple(sorted(ENVELOPE - {"timestamp"}))
_NO_FIELDS: dict[str, tuple[str, ...]] = {}


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


@dataclass(slots=True)
class LogPage:
    """Decoded events of one page of one context's log, as columns: event ``i`` is
    ``positions[i]``, ``recorded_at[i]`` … ``data[i]`` (the fields of ``LogEvent``).

    ``last_position`` is the position of the page's last row read, kept when a filter
    (``between``) leaves fewer or no events; ``scanned`` is how many rows were read."""

    context: str
    positions: list[int]
    recorded_at: list[datetime]
    aggregate_ids: list[UUID]
    aggregate_versions: list[int]
    event_types: list[str]
    data: list[dict[str, Any]]
    last_position: int
    scanned: int

    def __len__(self) -> int:
        return len(self.positions)

    def events(self) -> Iterator[LogEvent]:
        """The page as ``LogEvent``s, in log order."""
        context = self.context
        for position, at, aggregate_id, version, kind, data in zip(
            self.positions,
            self.recorded_at,
            self.aggregate_ids,
            self.aggregate_versions,
            self.event_types,
            self.data,
            strict=True,
        ):
            yield LogEvent(context, position, at, aggregate_id, version, kind, data)

    def between(self, since: datetime | None, until: datetime | None) -> LogPage:
        """The events recorded at or after ``since`` and before ``until`` (either ``None``:
        unbounded); ``self`` when that is all of them."""
        if since is None and until is None:
            return self
        keep = [
            i
            for i, at in enumerate(self.recorded_at)
            if (since is None or at >= since) and (until is None or at < until)
        ]
        if len(keep) == len(self.positions):
            return self
        return LogPage(
            self.context,
            [self.positions[i] for i in keep],
            [self.recorded_at[i] for i in keep],
            [self.aggregate_ids[i] for i in keep],
            [self.aggregate_versions[i] for i in keep],
            [self.event_types[i] for i in keep],
            [self.data[i] for i in keep],
            self.last_position,
            self.scanned,
        )


class LogReader:
    """Keyset pages of one context's log, decoded with ``source.decoder`` (module docstring)."""

    def __init__(self, conn: psycopg.Connection[Any], source: Source) -> None:
        self.conn = conn
        self.source = source
        self.context = source.name
        self.table = sql.Identifier(source.channel)
        self.decoder = source.decoder
        self._kinds: dict[str, str] = {}

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
    ) -> Iterator[list[RawRow]]:
        """Pages of raw rows ``(notification_id, originator_id, originator_version, topic,
        state)`` (``state`` as ``bytes``) with ``after`` < id (≤ ``stop``), optionally of the
        given event types."""
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
            # binary: the UUID from its 16 bytes and the state as bytes, no hex to parse
            with self.conn.cursor(binary=True, row_factory=tuple_row) as cur:
                page: list[RawRow] = cur.execute(query, (last, *extra, page_size)).fetchall()
            if not page:
                return
            yield page
            last = page[-1][0]
            if len(page) < page_size:
                return

    def pages(  # noqa: PLR0913
        self,
        *,
        after: int = 0,
        types: Sequence[str] = (),
        page_size: int = 5000,
        stop: int | None = None,
        include_contact: bool = False,
    ) -> Iterator[LogPage]:
        """``rows`` decoded into ``LogPage``s; the next page is read by a background thread
        while the caller has this one (the connection is not to be used meanwhile: it is
        free again once the iterator is exhausted or closed). Raises what the read or the
        decoder raises (a poison event: the mapper's error)."""
        pages = self.rows(after=after, types=types, page_size=page_size, stop=stop)
        with ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.context}") as reader:
            pending: Future[list[RawRow] | None] = reader.submit(next, pages, None)
            try:
                while (rows := pending.result()) is not None:
                    pending = reader.submit(next, pages, None)
                    # nothing a page builds is cyclic: no collections in the middle of one
                    with gc_paused():
                        page = self.decode_page(rows, include_contact=include_contact)
                    yield page
            finally:
                wait_for([pending])  # the read in flight, before anyone uses the connection
                pages.close()

    def decode_page(self, rows: Sequence[RawRow], *, include_contact: bool = False) -> LogPage:
        """Raw rows (``rows``) → one ``LogPage``: the values ``decode`` gives for each row."""
        decode = self.decoder.decode
        kinds = self._kinds
        hidden = _NO_FIELDS if include_contact else PERSONAL_FIELDS
        envelope = _RECORD_ENVELOPE
        positions: list[int] = []
        recorded_at: list[datetime] = []
        aggregate_ids: list[UUID] = []
        versions: list[int] = []
        event_types: list[str] = []
        datas: list[dict[str, Any]] = []
        for row in rows:
            record = decode(row)
            data = record.data
            for name in envelope:
                if name in data:
                    del data[name]
            topic = row[3]
            kind = kinds.get(topic)
            if kind is None:
                kind = kinds[topic] = event_type_of(topic)
            if kind in hidden:
                for name in hidden[kind]:
                    data.pop(name, None)
            positions.append(row[0])
            recorded_at.append(record.timestamp)  # type: ignore[arg-type]
            aggregate_ids.append(record.originator_id)
            versions.append(row[2])
            event_types.append(kind)
            datas.append(data)
        return LogPage(
            self.context,
            positions,
            recorded_at,
            aggregate_ids,
            versions,
            event_types,
            datas,
            rows[-1][0] if rows else 0,
            len(rows),
        )

    def decode(self, row: Sequence[Any], *, include_contact: bool = False) -> LogEvent:
        """One raw row → ``LogEvent`` (the fast decoder; same values as the mapper's)."""
        (event,) = self.decode_page([_raw(row)], include_contact=include_contact).events()
        return event

    def decode_with_mapper(self, row: Sequence[Any], *, include_contact: bool = False) -> LogEvent:
        """One raw row → ``LogEvent`` through the Application's mapper and a domain event
        object: the reference ``decode`` is compared with (slower)."""
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


def _raw(row: Sequence[Any]) -> RawRow:
    """A row as read in text mode (``state`` a ``memoryview`` or ``bytes``) as a ``RawRow``."""
    notification_id, originator_id, version, topic, state = row
    return (int(notification_id), originator_id, int(version), topic, bytes(state))


# -- writers ------------------------------------------------------------------------------------
#
# Each format encodes a page to bytes with a plain function (``ENCODERS``: it can run in a
# worker process) and its writer appends such bytes (``write_encoded``) to the output.


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
