"""Projection runner: follows notification logs and writes read models exactly once.

A projection (``Projection`` subclass) owns a set of tables. Each *version* of them lives in
its own PostgreSQL schema (``shelf_v1``, ``shelf_v2`` …); the registry table
``projection_versions`` names the active one, and views in a schema named after the
projection (``shelf.books`` → ``shelf_v1.books``) are what queries read, so a rebuild can
fill a new version while the old keeps serving, then switch atomically.

Processing: one transaction per *page* of notifications (``page_size``, default 500) that
writes the read-model rows **and** the tracking position (``projection_tracking``) together:
the effect of each event is applied exactly once. Logs are followed in their notification
order; eventsourcing's default insert mode (table lock) makes commit order equal insert
order, so reading "after my position" never skips an event.

The page path, fast enough for a rebuild of millions of events:

- pages are read as raw rows on the runner's connection (``Source.read_rows``) and decoded
  into light ``Record``s by msgspec (``projections.records``; the Application's mapper
  remains the reference and the fallback), skipping the event types a projection ignores;
- a projection that implements ``fold_page`` gets a page folded in memory over the rows it
  touches and written back with a few statements (``projections.batch``: a binary ``COPY``
  for new rows, one ``UPDATE`` a table for changed ones); small pages go event by event
  (``apply``, pipelined), which leaves the same rows;
- while behind (a full page), ``catch_up`` overlaps pages: a thread writes one page (its
  transaction, as above) while the next is read ahead, decoded, loaded and folded, carrying
  the rows the page being written touched; the cyclic garbage collector is paused meanwhile.

Failure policy (poison events): when a page fails (folded or not, whether its fold or its
write failed), it is replayed one event per transaction with ``apply`` up to the failing
event, which is recorded in ``projection_failures``; the runner then
stops that projection (state ``failed``) and says so in status, logs and metrics. It never
skips an event unless an operator asks for that position to be skipped
(``liudong projections skip``); a failed runner keeps its lock and checks every
``retry_interval`` (5 s) whether the failure still blocks the active version, and resumes
once it was skipped, cleared for a retry, or a rebuilt version was switched in.

Rebuilds (``projections.ops``) write pages into a new version through the same
``catch_up`` / ``process_page(schema=...)``, without side effects, then switch under the live
version's tracking-row locks (see ``_lock_tracking``).

Several processes may run projections: one is active per projection (a session-level
PostgreSQL advisory lock), the others stand by and take over when it dies.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from projections.batch import CARRY_LIMIT, CARRY_PAGES, Page, execute_all
from projections.records import RawRow, RecordDecoder

log = logging.getLogger(__name__)

Cursor = psycopg.Cursor[dict[str, Any]]


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


class Projection(ABC):
    """A read model built from one or more notification logs.

    Subclasses set ``name``, ``sources`` (names of the logs followed), ``ddl`` (SQL creating
    the tables inside ``{schema}``) and ``tables`` (the names exposed as views), and
    implement ``apply``.

    ``records = True``: events arrive as ``projections.records.Record`` (fast decoding,
    ``record.type`` is ``"Book.Published"``, fields in ``record.data`` and as attributes)
    instead of domain events decoded by the Application's mapper.

    Set-wise pages: a projection may also implement ``fold_page``, which returns a
    ``projections.batch.Page``: the page's events folded in memory over the rows they touch,
    written back with a few statements. The runner uses it for pages of at least
    ``batch_min`` events (``apply`` otherwise, and to find the failing event when a page
    fails); both must leave the same rows. A subclass that overrides ``apply`` but not
    ``fold_page`` gets ``apply`` for every event (``folds_pages``), so refining one event's
    handling never goes unnoticed.
    """

    name: ClassVar[str]
    sources: ClassVar[tuple[str, ...]]
    ddl: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    records: ClassVar[bool] = False
    batch_min: ClassVar[int] = 2
    durable_pages: ClassVar[bool] = True
    """Whether the live runner's pages commit durably. ``False``: the runner's page
    connection runs with ``synchronous_commit = off`` (no wait for a page's WAL flush; a
    database crash may lose the last pages committed, ≤ 3 × ``wal_writer_delay``; WAL is
    flushed in order, so what is lost is a suffix of the pages). Safe only for a
    read model that is a function of the (durable) log and has no side effect outside its
    tables: rows and tracking position are lost together, and the runner projects the
    same events again to the same rows. Not for a projection whose ``after_commit``
    publishes what a page wrote (the inbox: its items' ``seq`` depend on how the logs'
    pages interleave, and a re-projected item could get another item's published id)."""
    deferred_indexes: ClassVar[tuple[str, ...]] = ()
    """Names of indexes in ``ddl`` (each ``CREATE INDEX IF NOT EXISTS <name> …;``) that
    nothing reads while the projection writes: a rebuild creates them after filling the
    version (``create_version(defer_indexes=True)``, ``create_deferred_indexes``), which is
    faster than maintaining them row by row."""

    @abstractmethod
    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        """Apply one event to the tables in ``schema`` (inside the page's transaction).
        Raise to signal a poison event."""

    def fold_page(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> Page | None:
        """A ``Page`` folding ``events`` (``Record``s of ``source``) into the tables in
        ``schema``, or ``None`` to apply them one by one. ``carry``: the ``Page`` before,
        when the runner overlaps pages (``projections.batch``)."""
        return None

    event_types: frozenset[str] | None = None
    """The event types (``"Loan.Requested"``…) ``apply`` and ``fold_page`` act on, when
    they ignore the others: those are then not decoded (``records`` only). ``None``: all."""

    @property
    def decode_types(self) -> frozenset[str] | None:
        """What to decode (``event_types``), unless a subclass refines ``apply`` (it may
        look at any event)."""
        return self.event_types if self.records and self.folds_pages else None

    @property
    def folds_pages(self) -> bool:
        """Whether pages go through ``fold_page``: it is overridden, and ``apply`` is not
        overridden below the class that defines it."""
        mro = type(self).__mro__
        page_cls = next(k for k in mro if "fold_page" in k.__dict__)
        apply_cls = next(k for k in mro if "apply" in k.__dict__)
        return page_cls is not Projection and issubclass(page_cls, apply_cls)

    def after_commit(self, source: str, first: int, last: int) -> None:  # noqa: B027
        """Called after a page [first, last] of ``source`` committed (e.g. to relay it)."""


class ProjectionFailed(RuntimeError):
    """A projection stopped on an event it could not apply."""


_KEYED_PLANS = (
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)
"""A folded page's writes join its rows to the table by key: one index probe a row, never
a scan of the table, whatever its statistics say (a version being rebuilt has none)."""


class _Stale(Exception):
    """The version or its position changed under an overlapped page: not written."""


class _Sequential(Exception):
    """The projection declined to fold this page (``fold_page`` returned None)."""


def lock_key(projection: str) -> int:
    """The advisory-lock key of a projection (stable across processes)."""
    return zlib.crc32(f"liudong.projection.{projection}".encode()) - 2**31


# -- registry --------------------------------------------------------------------------------


def schema_for(projection: str, version: int) -> str:
    return f"{projection}_v{version}"


def active_schema(conn: psycopg.Connection[Any], projection: str) -> str | None:
    row = conn.execute(
        "SELECT schema_name FROM projection_versions WHERE projection = %s AND active",
        (projection,),
    ).fetchone()
    if row is None:
        return None
    return str(row["schema_name"] if isinstance(row, dict) else row[0])


def _ddl_statements(projection: Projection) -> list[tuple[str | None, str]]:
    """``ddl`` split into statements: ``(index name or None, statement)``."""
    statements = []
    for statement in projection.ddl.split(";"):
        if not statement.strip():
            continue
        words = statement.split()
        name = None
        if [w.upper() for w in words[:5]] == ["CREATE", "INDEX", "IF", "NOT", "EXISTS"]:
            name = words[5]
        statements.append((name, statement))
    return statements


def _execute_ddl(conn: psycopg.Connection[Any], statement: str, schema: str) -> None:
    conn.execute(sql.SQL(statement.replace("{schema}", "{0}")).format(sql.Identifier(schema)))


def create_version(
    conn: psycopg.Connection[Any],
    projection: Projection,
    *,
    activate: bool,
    defer_indexes: bool = False,
) -> str:
    """Create the next version's schema and tables (in the caller's transaction).

    ``defer_indexes``: leave out the projection's ``deferred_indexes`` (a rebuild creates
    them with ``create_deferred_indexes`` once the version is filled). Returns the new
    schema name."""
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 AS v FROM projection_versions WHERE projection=%s",
        (projection.name,),
    ).fetchone()
    version = int(row["v"] if isinstance(row, dict) else row[0])  # type: ignore[index]
    schema = schema_for(projection.name, version)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    if defer_indexes and projection.deferred_indexes:
        deferred = set(projection.deferred_indexes)
        for name, statement in _ddl_statements(projection):
            if name not in deferred:
                _execute_ddl(conn, statement, schema)
    else:
        _execute_ddl(conn, projection.ddl, schema)
    conn.execute(
        "INSERT INTO projection_versions (projection, version, schema_name, active) "
        "VALUES (%s, %s, %s, false)",
        (projection.name, version, schema),
    )
    for source in projection.sources:
        conn.execute(
            "INSERT INTO projection_tracking (schema_name, source, position) VALUES (%s, %s, 0)",
            (schema, source),
        )
    if activate:
        switch_to(conn, projection, schema)
    return schema


def create_deferred_indexes(
    conn: psycopg.Connection[Any], projection: Projection, schema: str
) -> None:
    """Create the ``deferred_indexes`` of ``schema`` that do not exist yet."""
    deferred = set(projection.deferred_indexes)
    for name, statement in _ddl_statements(projection):
        if name is not None and name in deferred:
            _execute_ddl(conn, statement, schema)


def switch_to(conn: psycopg.Connection[Any], projection: Projection, schema: str) -> None:
    """Make ``schema`` the active version: registry and views change in the caller's
    transaction, so readers see either the old or the new version, never a mix."""
    conn.execute(
        "UPDATE projection_versions SET active = (schema_name = %s) WHERE projection = %s",
        (schema, projection.name),
    )
    view_schema = sql.Identifier(projection.name)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(view_schema))
    for table in projection.tables:
        conn.execute(
            sql.SQL("DROP VIEW IF EXISTS {}.{}").format(view_schema, sql.Identifier(table))
        )
        conn.execute(
            sql.SQL("CREATE VIEW {}.{} AS SELECT * FROM {}.{}").format(
                view_schema, sql.Identifier(table), sql.Identifier(schema), sql.Identifier(table)
            )
        )


def ensure_active_version(database_url: str, projection: Projection) -> str:
    """The active schema of ``projection``, creating version 1 on first use."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(projection.name) + 1,))
        schema = active_schema(conn, projection.name)
        if schema is None:
            schema = create_version(conn, projection, activate=True)
        return schema


# -- waiting for a position (read-your-writes) ------------------------------------------------


class PositionBoard:
    """In-process notice board of projection positions, so a command can wait until the
    read models include its own events.

    The runners of this process ``publish`` each committed page and ``hold`` the projections
    they run (from taking the projection's lock to losing it); a waiter is woken only when
    its own position is reached. While no runner of this process holds the projection
    (another process runs it, or the local one lost its lock), waiters poll the database
    every ``POLL_INTERVAL`` seconds instead; while one does, every ``SAFETY_POLL_INTERVAL``
    seconds at most (a page the board never heard of cannot strand a waiter)."""

    POLL_INTERVAL = 0.05
    SAFETY_POLL_INTERVAL = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._positions: dict[tuple[str, str], int] = {}
        self._holders: dict[str, int] = {}
        self._waiters: dict[tuple[str, str], dict[threading.Event, int]] = {}

    def publish(self, projection: str, source: str, position: int) -> None:
        """``projection`` has processed ``source`` up to ``position`` (it never goes back)."""
        with self._lock:
            key = (projection, source)
            if position > self._positions.get(key, 0):
                self._positions[key] = position
            waiters = self._waiters.get(key)
            if waiters:
                for event, wanted in waiters.items():
                    if wanted <= position:
                        event.set()

    def known(self, projection: str, source: str) -> int:
        """The highest position published for ``projection`` and ``source`` (0: none)."""
        return self._positions.get((projection, source), 0)

    def hold(self, projection: str) -> None:
        """A runner of this process took ``projection``'s lock: it will publish its pages
        (it publishes its starting positions right after)."""
        with self._lock:
            self._holders[projection] = self._holders.get(projection, 0) + 1

    def release(self, projection: str) -> None:
        """The runner that ``hold``-s ``projection`` lost or gave up its lock: its waiters
        go back to polling the database (they are woken to notice)."""
        with self._lock:
            count = self._holders.get(projection, 0) - 1
            if count > 0:
                self._holders[projection] = count
            else:
                self._holders.pop(projection, None)
            for (name, _), waiters in self._waiters.items():
                if name == projection:
                    for event in waiters:
                        event.set()

    def held(self, projection: str) -> bool:
        """Whether a runner of this process holds ``projection``."""
        return self._holders.get(projection, 0) > 0

    def wait(
        self,
        projection: str,
        source: str,
        position: int,
        timeout: float,
        poll: Callable[[], int] | None = None,
    ) -> bool:
        """Block until ``projection`` has processed ``source`` up to ``position``.

        ``poll()`` (optional) reads the position from the database: called every
        ``POLL_INTERVAL`` s while no local runner holds the projection, every
        ``SAFETY_POLL_INTERVAL`` s while one does. Returns False on timeout (seconds)."""
        key = (projection, source)
        if self.known(projection, source) >= position:
            return True
        now = time.monotonic()
        deadline = now + timeout
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(key, {})[event] = position
        try:
            interval = self.SAFETY_POLL_INTERVAL if self.held(projection) else self.POLL_INTERVAL
            next_poll = now + interval
            while self.known(projection, source) < position:
                now = time.monotonic()
                if now >= deadline:
                    return False
                interval = (
                    self.SAFETY_POLL_INTERVAL if self.held(projection) else self.POLL_INTERVAL
                )
                next_poll = min(next_poll, now + interval)
                if poll is not None and now >= next_poll:
                    polled = int(poll())
                    if polled >= position:
                        self.publish(projection, source, polled)
                        return True
                    next_poll = time.monotonic() + interval
                until = min(deadline, next_poll) if poll is not None else deadline
                event.wait(max(0.0, until - time.monotonic()))
                event.clear()
            return True
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.pop(event, None)
                    if not waiters:
                        del self._waiters[key]


def tracked_position(conn: psycopg.Connection[Any], projection: str, source: str) -> int:
    row = conn.execute(
        "SELECT t.position FROM projection_tracking t JOIN projection_versions v "
        "ON v.schema_name = t.schema_name WHERE v.projection = %s AND v.active "
        "AND t.source = %s",
        (projection, source),
    ).fetchone()
    if row is None:
        return 0
    return int(row["position"] if isinstance(row, dict) else row[0])


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


# -- reading ahead ----------------------------------------------------------------------------


class _Prefetcher:
    """Reads (and decodes) the page after the current one on its own connection, in a
    thread, while the current page is applied: a catch-up or a rebuild then overlaps
    reading and decoding (Python) with the server's work on the page before (psycopg
    releases the GIL while it waits).

    A page read ahead is a prefix of the events after its start position, as any page
    (commit order equals log order, module docstring); it is used only for a page starting
    at that same position, cut to the page's ``stop``."""

    def __init__(self, database_url: str, name: str) -> None:
        self.database_url = database_url
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"prefetch-{name}")
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: dict[
            str, tuple[int, int, Future[tuple[list[RawRow], list[Any] | None]]]
        ] = {}

    def start(
        self, source: Source, after: int, limit: int, stop: int | None, projection: Projection
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
        self, source: Source, after: int, limit: int, stop: int | None, projection: Projection
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


# -- the runner -------------------------------------------------------------------------------


@dataclass
class RunnerState:
    state: str = "starting"  # starting | standby | running | failed | stopped
    error: str | None = None
    failed_position: int | None = None
    failed_source: str | None = None
    processed: int = 0
    last_page_at: float = 0.0
    positions: dict[str, int] = field(default_factory=dict)


class ProjectionRunner:
    """Runs one projection in a background thread of this process.

    ``start()`` returns at once; the thread takes the projection's advisory lock (or stands
    by), then catches up in pages and follows new events (LISTEN/NOTIFY wake-ups with a
    1 s polling fallback).

    ``page_size`` (500) bounds a page while following (pages are as small as what was
    committed meanwhile); when a page comes back full the runner is behind and catches up
    with overlapped pages of ``catch_up_page_size`` (5,000, ``catch_up``)."""

    def __init__(
        self,
        projection: Projection,
        database_url: str,
        sources: dict[str, Source],
        *,
        board: PositionBoard | None = None,
        page_size: int = 500,
        idle_wait: float = 1.0,
        retry_interval: float = 5.0,
        catch_up_page_size: int = 5000,
    ) -> None:
        self.projection = projection
        self.database_url = database_url
        self.sources = {name: sources[name] for name in projection.sources}
        self.board = board or PositionBoard()
        self.page_size = page_size
        self.catch_up_page_size = catch_up_page_size
        self.idle_wait = idle_wait
        self.retry_interval = retry_interval
        self.status = RunnerState()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._woken: set[str] = set()  # sources named by wake() since the last look
        self._woken_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._prefetcher: _Prefetcher | None = None
        self.fallback_pages = 0
        """Pages that failed set-wise (``fold_page``) but not event by event: a discrepancy
        between the two paths, logged (the page is applied event by event)."""

    # lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"projection-{self.projection.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.status.state != "failed":
            self.status.state = "stopped"

    def close(self) -> None:
        """Release the read-ahead thread and its connection (``process_page`` starts them
        again when needed)."""
        prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            prefetcher.close()

    def wake(self, source: str | None = None) -> None:
        """Hint that new events were committed to ``source`` (default: any of the logs this
        runner follows); saves waiting for NOTIFY. A source it does not follow is ignored."""
        if source is not None and source not in self.sources:
            return
        with self._woken_lock:
            self._woken.update(self.sources if source is None else (source,))
        self._wake.set()

    # thread body

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.database_url,
                    autocommit=True,
                    row_factory=dict_row,
                    application_name=f"liudong projection {self.projection.name}"[:63],
                ) as lock_conn:
                    if not self._acquire(lock_conn):
                        continue
                    self.board.hold(self.projection.name)
                    try:
                        self._follow(lock_conn)
                    finally:
                        self.board.release(self.projection.name)
                    return
            except ProjectionFailed:
                return
            except Exception as exc:  # connection lost, database restarting…
                log.warning("projection %s: %s; retrying in 1 s", self.projection.name, exc)
                self.status.error = str(exc)
                self._stop.wait(1.0)

    def _acquire(self, lock_conn: psycopg.Connection[Any]) -> bool:
        key = lock_key(self.projection.name)
        row = lock_conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
        if row and row["ok"]:
            return True
        self.status.state = "standby"
        self._stop.wait(1.0)
        return False

    def _follow(self, lock_conn: psycopg.Connection[Any]) -> None:
        """Process pages while holding the lock. LISTEN comes before the first page, so an
        event committed after a page's read always brings a NOTIFY: a source is processed
        until a page is not full, then only again when it is notified or woken (or every
        ``idle_wait`` seconds)."""
        ensure_active_version(self.database_url, self.projection)
        for source in self.sources.values():
            lock_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(source.channel)))
            # waiters of this process stop polling once the board is held: tell them where
            # the previous holder (maybe another process) left the projection
            self.board.publish(
                self.projection.name,
                source.name,
                tracked_position(lock_conn, self.projection.name, source.name),
            )
        with (
            psycopg.connect(self.database_url, row_factory=dict_row) as conn,
            contextlib.closing(self),
        ):
            if not self.projection.durable_pages:  # every transaction of this connection
                conn.execute("SET synchronous_commit = off")
                conn.commit()
            self.status.state = "running"
            self.status.error = None
            pending = set(self.sources)
            while not self._stop.is_set():
                try:
                    for name, source in self.sources.items():
                        if name not in pending:
                            continue
                        while not self._stop.is_set():
                            if self.process_page(conn, source) < self.page_size:
                                break
                            # behind: overlap larger pages
                            self.catch_up(
                                conn,
                                source,
                                page_size=max(self.page_size, self.catch_up_page_size),
                            )
                except ProjectionFailed:
                    self._wait_until_unblocked(conn, lock_conn)
                    pending = set(self.sources)
                    continue
                pending = self._idle(lock_conn)

    def _wait_until_unblocked(
        self, conn: psycopg.Connection[Any], lock_conn: psycopg.Connection[Any]
    ) -> None:
        """Stay ``failed`` (keeping the lock, so no standby repeats the failure) until the
        failure no longer blocks the active version: an operator skipped it
        (``liudong projections skip``), cleared it for a retry (``… retry``), or switched to
        a rebuilt version. Checks every ``retry_interval`` seconds."""
        while not self._stop.is_set():
            deadline = time.monotonic() + self.retry_interval
            while not self._stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
                for _ in lock_conn.notifies(timeout=min(0.2, remaining)):
                    pass  # drain NOTIFYs so the server never queues them for us
            if self._stop.is_set() or self._blocked(conn):
                continue
            log.warning("projection %s: failure resolved; resuming", self.projection.name)
            self.status.state = "running"
            self.status.error = None
            self.status.failed_position = None
            self.status.failed_source = None
            return

    def _blocked(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether an unskipped failure lies ahead of the active version's position."""
        with conn.transaction():
            row = conn.execute(
                "SELECT 1 FROM projection_failures f "
                "JOIN projection_versions v ON v.schema_name = f.schema_name AND v.active "
                "JOIN projection_tracking t ON t.schema_name = f.schema_name "
                "AND t.source = f.source "
                "WHERE v.projection = %s AND f.skipped_at IS NULL AND f.position > t.position "
                "LIMIT 1",
                (self.projection.name,),
            ).fetchone()
        return row is not None

    def _idle(self, lock_conn: psycopg.Connection[Any]) -> set[str]:
        """Sleep until a NOTIFY, a local ``wake()`` or the polling interval; returns the
        names of the sources to look at (all of them after the polling interval)."""
        channels = {source.channel: name for name, source in self.sources.items()}
        pending: set[str] = set()
        deadline = time.monotonic() + self.idle_wait
        while not self._stop.is_set():
            if self._wake.is_set():
                self._wake.clear()
                with self._woken_lock:
                    pending |= self._woken
                    self._woken.clear()
            remaining = deadline - time.monotonic()
            if not pending and remaining <= 0:
                return set(self.sources)
            # with sources pending, only collect the NOTIFYs already there
            timeout = 0.0 if pending else min(0.1, remaining)
            for notify in lock_conn.notifies(timeout=timeout, stop_after=1):
                pending.add(channels.get(notify.channel, ""))
            if pending:
                for notify in lock_conn.notifies(timeout=0.0):  # the rest already there
                    pending.add(channels.get(notify.channel, ""))
                return set(self.sources) if "" in pending else pending
        return pending

    # one page

    def process_page(
        self,
        conn: psycopg.Connection[Any],
        source: Source,
        *,
        schema: str | None = None,
        stop: int | None = None,
    ) -> int:
        """Apply the next page of ``source`` to the active version; returns how many
        notifications it processed (0: none left).

        ``schema`` names another version to write instead (a rebuild), ``stop`` the last
        position to read. Pages written to a given ``schema`` are not announced (neither the
        board nor ``after_commit`` hears of them): a rebuild has no side effects.
        Raises ``ProjectionFailed`` on a poison event (after recording it)."""
        pause = self.page_size >= GC_PAUSE_PAGE_SIZE or self._prefetcher is not None
        with gc_paused() if pause else contextlib.nullcontext():
            return self._process_page(conn, source, schema, stop)

    def _process_page(
        self, conn: psycopg.Connection[Any], source: Source, schema: str | None, stop: int | None
    ) -> int:
        announce = schema is None
        with conn.transaction():
            schema_name, position = self._lock_tracking(conn, source.name, schema)
            ahead = (
                self._prefetcher.take(source, position, self.page_size, stop)
                if (self._prefetcher is not None)
                else None
            )
            rows, events = ahead or (source.read_rows(conn, position, self.page_size, stop), None)
            if not rows:
                self.close()
                return 0
            if len(rows) == self.page_size:  # more may follow: read the next page meanwhile
                if self._prefetcher is None:
                    self._prefetcher = _Prefetcher(self.database_url, self.projection.name)
                self._prefetcher.start(source, rows[-1][0], self.page_size, stop, self.projection)
            else:
                self.close()
            try:
                with conn.transaction():  # savepoint: a failure leaves the page undone
                    self._apply_all(conn, schema_name, source, rows, events=events)
            except Exception:
                log.warning(
                    "projection %s: page %s..%s of %s failed; replaying it event by event",
                    self.projection.name, rows[0][0], rows[-1][0], source.name, exc_info=True,
                )  # fmt: skip
                failed = True
            else:
                failed = False
        if failed:
            self._isolate_failure(conn, source, rows, schema)
        if announce:
            self._published(source.name, rows[0][0], rows[-1][0])
        return len(rows)

    # many pages, overlapped

    def catch_up(
        self,
        conn: psycopg.Connection[Any],
        source: Source,
        *,
        schema: str | None = None,
        stop: int | Callable[[], int] | None = None,
        progress: Callable[[int], None] | None = None,
        page_size: int | None = None,
    ) -> int:
        """Process pages of ``source`` until one is not full (caught up, or ``stop``
        reached); returns how many notifications it processed. ``stop`` may be a callable,
        asked before each page; ``progress(n)`` hears of each committed page; ``page_size``
        overrides the runner's for overlapped pages.

        Pages of a projection that folds pages (``fold_page``) overlap when ``conn`` is not
        in a transaction: one page is written (in a thread, on ``conn``, its own
        transaction with the tracking update as always) while the next is read, decoded,
        loaded (on another connection, which sees every page but the one being written:
        that one is the next page's ``carry``) and folded. Otherwise, and whenever a page
        fails, it is ``process_page`` page after page. Raises ``ProjectionFailed``."""
        pipelined = (
            self.projection.records
            and self.projection.folds_pages
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        if pipelined:
            return self._pipelined(
                conn, source, schema, stop, progress, page_size or self.page_size
            )
        total = 0
        while not self._stop.is_set():
            limit = stop() if callable(stop) else stop
            done = self.process_page(conn, source, schema=schema, stop=limit)
            total += done
            if progress and done:
                progress(done)
            if done < self.page_size:
                break
        return total

    def _pipelined(  # noqa: C901, PLR0912, PLR0915
        self,
        conn: psycopg.Connection[Any],
        source: Source,
        schema: str | None,
        stop: int | Callable[[], int] | None,
        progress: Callable[[int], None] | None,
        size: int,
    ) -> int:
        projection = self.projection
        announce = schema is None
        total = 0
        inflight: tuple[Future[None], list[RawRow]] | None = None
        writer = ThreadPoolExecutor(1, thread_name_prefix=f"write-{projection.name}")

        def settle() -> bool:
            """Wait for the page being written: True if it committed; else it is
            replayed event by event here (raises ``ProjectionFailed`` on a poison event)."""
            nonlocal inflight, total
            if inflight is None:
                return True
            future, rows = inflight
            inflight = None
            try:
                future.result()
            except _Stale:
                return False
            except psycopg.OperationalError:
                raise
            except Exception:  # noqa: BLE001 - find the event event by event
                log.warning(
                    "projection %s: page %s..%s of %s failed; replaying it event by event",
                    projection.name, rows[0][0], rows[-1][0], source.name, exc_info=True,
                )  # fmt: skip
                self._isolate_failure(conn, source, rows, schema)
                committed = False
            else:
                committed = True
            total += len(rows)
            if progress:
                progress(len(rows))
            if announce:
                self._published(source.name, rows[0][0], rows[-1][0])
            return committed

        try:
            with (
                psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as reads,
                gc_paused(),
            ):
                schema_name, position = self._position(reads, source.name, schema)
                carry: Any = None
                carried = 0  # pages carried since the last fresh start
                while not self._stop.is_set():
                    limit = stop() if callable(stop) else stop
                    ahead = (
                        self._prefetcher.take(source, position, size, limit)
                        if self._prefetcher is not None
                        else None
                    )
                    rows, events = ahead or (
                        source.read_rows(reads, position, size, limit),
                        None,
                    )
                    if not rows:
                        break
                    full = len(rows) == size
                    if full:
                        if self._prefetcher is None:
                            self._prefetcher = _Prefetcher(self.database_url, projection.name)
                        self._prefetcher.start(source, rows[-1][0], size, limit, projection)
                    if carry is not None and (
                        carry.remembered() > CARRY_LIMIT or carried >= CARRY_PAGES
                    ):
                        # start afresh from the tables, once they hold every page (a page
                        # keeps the one before alive: this bounds the memory they hold)
                        if not settle():
                            break
                        carry = None
                    carried = carried + 1 if carry is not None else 0
                    try:
                        if events is None:
                            events = source.decoder.decode_all(rows, projection.decode_types)
                        page = projection.fold_page(
                            sql.Identifier(schema_name), source.name, events, carry
                        )
                        if page is None:
                            raise _Sequential
                        page.load(reads)
                        page.fold()
                        statements = page.statements()
                        page.remember()
                    except Exception:  # noqa: BLE001 - this page goes event by event
                        log.debug("projection %s: page fold failed", projection.name,
                                  exc_info=True)  # fmt: skip
                        if not settle():
                            break
                        done = self.process_page(conn, source, schema=schema, stop=limit)
                        total += done
                        if progress and done:
                            progress(done)
                        carry = None
                        schema_name, position = self._position(reads, source.name, schema)
                        if not full:
                            break
                        continue
                    if not settle():
                        break
                    last_at = events[-1].timestamp if events else None
                    inflight = (
                        writer.submit(
                            self._write_page, conn, source.name, schema, schema_name, position,
                            rows[-1][0], last_at, statements,
                        ),
                        rows,
                    )  # fmt: skip
                    carry = page
                    position = rows[-1][0]
                    if not full:
                        break
                settle()
                # free the pages' rows by reference counting before the collector resumes
                # (it would scan them all)
                carry = page = events = rows = statements = None  # type: ignore[assignment]
        finally:
            if inflight is not None:  # an error here: let the page being written end
                with contextlib.suppress(Exception):
                    inflight[0].result()
                    if announce:
                        self._published(source.name, inflight[1][0][0], inflight[1][-1][0])
            writer.shutdown(wait=True)
            self.close()
        return total

    def _position(
        self, conn: psycopg.Connection[Any], source: str, schema: str | None
    ) -> tuple[str, int]:
        """``(schema, position)`` of ``source`` in ``schema`` (default: the active version),
        read on ``conn`` (each page's writer checks them again under the lock)."""
        with conn.transaction():
            return self._lock_tracking(conn, source, schema)

    def _write_page(  # noqa: PLR0913
        self,
        conn: psycopg.Connection[Any],
        source: str,
        schema: str | None,
        schema_name: str,
        after: int,
        last: int,
        last_at: datetime | None,
        statements: list[Any],
    ) -> None:
        """One folded page's transaction: the writes and the tracking update, if the
        version is still ``schema_name`` and at ``after`` (else ``_Stale``, nothing
        written)."""
        with conn.transaction():
            locked_schema, position = self._lock_tracking(conn, source, schema)
            if (locked_schema, position) != (schema_name, after):
                raise _Stale
            with conn.cursor() as cur:
                execute_all(
                    cur,
                    [
                        (_KEYED_PLANS, ()),
                        *statements,
                        (
                            "UPDATE projection_tracking SET position = %s, last_event_at = %s, "
                            "updated_at = now() WHERE schema_name = %s AND source = %s",
                            (last, last_at, schema_name, source),
                        ),
                    ],
                )

    def _lock_tracking(
        self, conn: psycopg.Connection[Any], source: str, schema: str | None = None
    ) -> tuple[str, int]:
        """Lock the tracking row of ``source`` in ``schema`` (default: the active version)
        for this transaction; returns ``(schema, position)``."""
        if schema is not None:
            row = conn.execute(
                "SELECT schema_name, position FROM projection_tracking "
                "WHERE schema_name = %s AND source = %s FOR UPDATE",
                (schema, source),
            ).fetchone()
            if row is None:
                raise RuntimeError(f"version {schema} does not track {source}")
            return str(row["schema_name"]), int(row["position"])
        while True:
            row = conn.execute(
                "SELECT t.schema_name, t.position FROM projection_tracking t "
                "JOIN projection_versions v ON v.schema_name = t.schema_name "
                "WHERE v.projection = %s AND v.active AND t.source = %s FOR UPDATE OF t",
                (self.projection.name, source),
            ).fetchone()
            if row is None:
                raise RuntimeError(f"projection {self.projection.name} has no active version")
            # The lock may have waited for a rebuild's switch, and this statement's snapshot
            # predates it: confirm in a fresh snapshot that the version is still active.
            active = conn.execute(
                "SELECT active FROM projection_versions WHERE schema_name = %s",
                (row["schema_name"],),
            ).fetchone()
            if active is not None and active["active"]:
                return str(row["schema_name"]), int(row["position"])

    def _apply_all(
        self,
        conn: psycopg.Connection[Any],
        schema_name: str,
        source: Source,
        rows: Sequence[RawRow],
        *,
        events: list[Any] | None = None,
        one_by_one: bool = False,
    ) -> None:
        """Decode and apply ``rows``, then move the tracking position to the last one.

        Set-wise (``apply_page``) when the projection supports it and the page has at least
        ``batch_min`` events, else one statement (or a few) an event, pipelined: the page
        costs a few round trips, not one per event; an error surfaces by the end of it."""
        projection = self.projection
        schema = sql.Identifier(schema_name)
        if events is None:
            if projection.records:
                events = source.decoder.decode_all(rows, projection.decode_types)
            else:
                events = [source.decode_row(row) for row in rows]
        last_at = getattr(events[-1], "timestamp", None)
        tracking = (
            "UPDATE projection_tracking SET position = %s, last_event_at = %s, "
            "updated_at = now() WHERE schema_name = %s AND source = %s"
        )
        params = (rows[-1][0], last_at, schema_name, source.name)
        page = (
            projection.fold_page(schema, source.name, events, None)
            if not one_by_one
            and projection.records
            and len(events) >= projection.batch_min
            and projection.folds_pages
            else None
        )
        if page is not None:
            page.load(conn)
            page.fold()
            with conn.cursor() as cur:
                execute_all(cur, [(_KEYED_PLANS, ()), *page.statements(), (tracking, params)])
            return
        with conn.pipeline(), conn.cursor() as cur:
            if projection.records:  # (events of types it ignores were not decoded)
                for event in events:
                    projection.apply(cur, schema, source.name, event.position, event)
            else:
                for row, event in zip(rows, events, strict=True):
                    projection.apply(cur, schema, source.name, row[0], event)
            cur.execute(tracking, params)

    def _isolate_failure(
        self,
        conn: psycopg.Connection[Any],
        source: Source,
        rows: Sequence[RawRow],
        schema: str | None = None,
    ) -> None:
        """Replay a failed page one event per transaction, with ``apply``, up to the event
        that fails: record it and raise ``ProjectionFailed``. (If none fails, the page is
        applied this way.)"""
        for row in rows:
            position = row[0]
            try:
                with conn.transaction():
                    schema_name, tracked = self._lock_tracking(conn, source.name, schema)
                    if position <= tracked:
                        continue
                    self._apply_all(conn, schema_name, source, [row], one_by_one=True)
            except Exception as exc:
                self._record_failure(conn, source.name, position, exc, schema)
                if schema is None:
                    self._published(source.name, rows[0][0], position - 1)
                raise ProjectionFailed(str(exc)) from exc
        self.fallback_pages += 1
        log.warning(
            "projection %s: page %s..%s of %s failed as a whole but not event by event "
            "(applied so)", self.projection.name, rows[0][0], rows[-1][0], source.name,
        )  # fmt: skip

    def _record_failure(
        self,
        conn: psycopg.Connection[Any],
        source: str,
        position: int,
        exc: Exception,
        schema: str | None = None,
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.error(
            "projection %s STOPPED at %s position %s: %s",
            self.projection.name, source, position, error,
        )  # fmt: skip
        with contextlib.suppress(Exception), conn.transaction():
            schema_name, _ = self._lock_tracking(conn, source, schema)
            conn.execute(
                "INSERT INTO projection_failures (schema_name, source, position, error) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (schema_name, source, position) "
                "DO UPDATE SET error = excluded.error, failed_at = now()",
                (schema_name, source, position, error),
            )
        self.status.state = "failed"
        self.status.error = error
        self.status.failed_position = position
        self.status.failed_source = source

    def _published(self, source: str, first: int, last: int) -> None:
        if last < first:
            return
        self.status.processed += last - first + 1
        self.status.positions[source] = last
        self.status.last_page_at = time.time()
        self.board.publish(self.projection.name, source, last)
        try:
            self.projection.after_commit(source, first, last)
        except Exception:
            log.exception("projection %s: after_commit failed", self.projection.name)


@contextlib.contextmanager
def running(runners: Iterable[ProjectionRunner]) -> Iterator[list[ProjectionRunner]]:
    """Start runners and stop them on exit."""
    started = list(runners)
    for runner in started:
        runner.start()
    try:
        yield started
    finally:
        for runner in started:
            runner.stop()
