"""Sources: the notification logs projections follow, read a page at a time.

A ``Source`` is the events table of one Application (``library``, ``chat``). Logs are read
in their notification order; eventsourcing's default insert mode (table lock) makes commit
order equal insert order, so reading "after my position" never skips an event: a page is
always a prefix of the events after its start position.

Reading fast enough for a rebuild of millions of events: pages are read as raw rows on the
caller's connection (``Source.read_rows``, inside its transaction) and decoded into light
``Record``s by msgspec (``Source.decoder``, ``projections.records``; the Application's
mapper remains the reference and the fallback, ``Source.decode``), skipping the event types
a projection ignores. Large pages are decoded with the cyclic garbage collector paused
(``gc_paused``); the event export (``api.eventlog``) reads its pages the same way.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from psycopg import sql
from psycopg.rows import tuple_row

from projections.records import RawRow, RecordDecoder


@dataclass(frozen=True)
class Source:
    """A notification log a projection follows: the events table of one Application."""

    name: str  # 'library' | 'chat'
    app: Application[Any]

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel eventsourcing notifies on insert (the table name)."""
        return f"{self.app.name.lower()}_events"

    def read(self, after: int, limit: int, stop: int | None = None) -> Sequence[Any]:
        """Up to ``limit`` notifications with ``after`` < id (≤ ``stop``), in order."""
        return self.app.recorder.select_notifications(  # type: ignore[attr-defined,no-any-return]
            start=after, limit=limit, stop=stop, inclusive_of_start=False
        )

    @cached_property
    def _rows_query(self) -> sql.Composed | None:
        recorder = self.app.recorder
        table = getattr(recorder, "events_table_name", None)
        schema = getattr(getattr(recorder, "datastore", None), "schema", None)
        if not table or not schema:
            return None  # not a PostgreSQL recorder: read through it
        return sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
            "WHERE notification_id > %s AND notification_id <= %s "
            "ORDER BY notification_id LIMIT %s"
        ).format(sql.Identifier(schema, table))

    @cached_property
    def rows_after_tracked_query(self) -> sql.Composed | None:
        """``read_rows``'s page after the tracked position of the active version of a
        projection (parameters: projection, source, stop, limit), as
        ``(schema_name, *RawRow)`` rows; one row of ``None``s after the schema when no event
        follows, none without an active version. ``None``: not a PostgreSQL recorder."""
        recorder = self.app.recorder
        table = getattr(recorder, "events_table_name", None)
        schema = getattr(getattr(recorder, "datastore", None), "schema", None)
        if not table or not schema:
            return None
        return sql.SQL(
            "SELECT p.schema_name, e.notification_id, e.originator_id, e.originator_version, "
            "e.topic, e.state FROM (SELECT t.schema_name, t.position FROM projection_tracking t "
            "JOIN projection_versions v ON v.schema_name = t.schema_name "
            "WHERE v.projection = %s AND v.active AND t.source = %s) p "
            "LEFT JOIN LATERAL (SELECT notification_id, originator_id, originator_version, "
            "topic, state FROM {} WHERE notification_id > p.position AND notification_id <= %s "
            "ORDER BY notification_id LIMIT %s) e ON true"
        ).format(sql.Identifier(schema, table))

    def read_rows(
        self, conn: psycopg.Connection[Any], after: int, limit: int, stop: int | None = None
    ) -> list[RawRow]:
        """Like ``read``, as raw ``(id, originator_id, originator_version, topic, state)``
        tuples, on ``conn`` (inside its transaction): about five times faster than the
        recorder's ``select_notifications``, which builds a dict and a dataclass a row."""
        query = self._rows_query
        if query is None:
            return [
                (n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in self.read(after, limit, stop)
            ]
        with conn.cursor(binary=True, row_factory=tuple_row) as cur:
            cur.execute(query, (after, stop if stop is not None else 2**63 - 1, limit))
            return cur.fetchall()

    def decode(self, notification: Any) -> DomainEventProtocol[Any]:
        """A notification → the domain event (the Application's mapper, upcasters included)."""
        return self.app.mapper.to_domain_event(notification)

    @cached_property
    def decoder(self) -> RecordDecoder:
        """Fast decoding into ``Record``s (``projections.records``)."""
        return RecordDecoder(self.app.mapper)

    def decode_row(self, row: RawRow) -> DomainEventProtocol[Any]:
        position, originator_id, version, topic, state = row
        return self.decode(
            Notification(
                id=position,
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state),
            )
        )

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)  # type: ignore[attr-defined]


# -- the cyclic garbage collector ----------------------------------------------------------------

_gc_lock = threading.Lock()
_gc_depth = 0
_gc_reenable = False
GC_PAUSE_PAGE_SIZE = 1000
"""Pages of at least this size (and every page of a catch-up) run with the cyclic garbage
collector paused: a page allocates tens of thousands of dicts and lists, which would trigger
collections that scan every live object again and again (it halves the cost of decoding);
nothing a page builds is cyclic, so reference counting frees it all."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector in this block (process-wide; nested and
    concurrent blocks resume it when the last one ends, if it was enabled before)."""
    global _gc_depth, _gc_reenable  # noqa: PLW0603
    with _gc_lock:
        if _gc_depth == 0:
            _gc_reenable = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_reenable:
                gc.enable()
