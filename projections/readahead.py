"""Reading ahead: the runner reads and decodes the next page while it writes this one.

``Prefetcher`` is how the runner (``projections.runner``, its only user) overlaps the
Python work of a page (reading its rows, decoding them) with the server's work on the page
before, while it is behind: in catch-ups and rebuilds.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg

from projections.read_model import ReadModelProjection
from projections.records import RawRow
from projections.source import Source, gc_paused


class Prefetcher:
    """Reads (and decodes) the page after the current one on its own connection, in a
    thread, while the current page is applied: a catch-up or a rebuild then overlaps
    reading and decoding (Python) with the server's work on the page before (psycopg
    releases the GIL while it waits).

    A page read ahead is a prefix of the events after its start position, as any page
    (commit order equals log order, ``projections.source``); it is used only for a page
    starting at that same position, cut to the page's ``stop``."""

    def __init__(self, database_url: str, name: str) -> None:
        self.database_url = database_url
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"prefetch-{name}")
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: dict[
            str, tuple[int, int, Future[tuple[list[RawRow], list[Any] | None]]]
        ] = {}

    def start(
        self,
        source: Source,
        after: int,
        limit: int,
        stop: int | None,
        projection: ReadModelProjection,
    ) -> None:
        self._pending[source.name] = (
            after,
            limit,
            self._executor.submit(self._read, source, after, limit, stop, projection),
        )

    def take(
        self, source: Source, after: int, limit: int, stop: int | None
    ) -> tuple[list[RawRow], list[Any] | None] | None:
        """The page read ahead from ``after`` (cut at ``stop``), or None."""
        pending = self._pending.pop(source.name, None)
        if pending is None or pending[0] != after or pending[1] != limit:
            return None
        try:
            rows, events = pending[2].result()
        except Exception:  # noqa: BLE001 - read it again, in the page's transaction
            return None
        if stop is not None and rows and rows[-1][0] > stop:
            rows = [row for row in rows if row[0] <= stop]
            events = None  # decoded again, for the page's last event
        return (rows, events) if rows else None

    def _read(
        self,
        source: Source,
        after: int,
        limit: int,
        stop: int | None,
        projection: ReadModelProjection,
    ) -> tuple[list[RawRow], list[Any] | None]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        with gc_paused():
            rows = source.read_rows(self._conn, after, limit, stop)
            events: list[Any] | None = None
            if projection.records:
                try:
                    events = source.decoder.decode_all(rows, projection.decode_types)
                except Exception:  # noqa: BLE001 - decoded (and reported) in the page
                    events = None
        return rows, events

    def close(self) -> None:
        self._pending.clear()
        self._executor.submit(self._close_conn)
        self._executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
