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

Failure policy (poison events): when a page fails, it is replayed one event per transaction
up to the failing event, which is recorded in ``projection_failures``; the runner then
stops that projection (state ``failed``) and says so in status, logs and metrics. It never
skips an event unless an operator asks for that position to be skipped
(``liudong projections skip``); a failed runner keeps its lock and checks every
``retry_interval`` (5 s) whether the failure still blocks the active version, and resumes
once it was skipped, cleared for a retry, or a rebuilt version was switched in.

Rebuilds (``projections.ops``) write pages into a new version through the same
``process_page(schema=...)``, without side effects, then switch under the live version's
tracking-row locks (see ``_lock_tracking``).

Several processes may run projections: one is active per projection (a session-level
PostgreSQL advisory lock), the others stand by and take over when it dies.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from psycopg import sql
from psycopg.rows import dict_row

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

    def decode(self, notification: Any) -> DomainEventProtocol[Any]:
        return self.app.mapper.to_domain_event(notification)

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)  # type: ignore[attr-defined]


class Projection(ABC):
    """A read model built from one or more notification logs.

    Subclasses set ``name``, ``sources`` (names of the logs followed), ``ddl`` (SQL creating
    the tables inside ``{schema}``) and ``tables`` (the names exposed as views), and
    implement ``apply``.
    """

    name: ClassVar[str]
    sources: ClassVar[tuple[str, ...]]
    ddl: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]

    @abstractmethod
    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        """Apply one domain event to the tables in ``schema`` (inside the page's
        transaction). Raise to signal a poison event."""

    def after_commit(self, source: str, first: int, last: int) -> None:  # noqa: B027
        """Called after a page [first, last] of ``source`` committed (e.g. to relay it)."""


class ProjectionFailed(RuntimeError):
    """A projection stopped on an event it could not apply."""


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


def create_version(
    conn: psycopg.Connection[Any], projection: Projection, *, activate: bool
) -> str:
    """Create the next version's schema and tables (in the caller's transaction).

    Returns the new schema name."""
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 AS v FROM projection_versions WHERE projection=%s",
        (projection.name,),
    ).fetchone()
    version = int(row["v"] if isinstance(row, dict) else row[0])  # type: ignore[index]
    schema = schema_for(projection.name, version)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL(projection.ddl.replace("{schema}", "{0}")).format(sql.Identifier(schema)))
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
    read models include its own events. Waiters also poll the database, so it works when
    another process runs the projection."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._positions: dict[tuple[str, str], int] = {}

    def publish(self, projection: str, source: str, position: int) -> None:
        with self._cond:
            key = (projection, source)
            if position > self._positions.get(key, 0):
                self._positions[key] = position
            self._cond.notify_all()

    def known(self, projection: str, source: str) -> int:
        return self._positions.get((projection, source), 0)

    def wait(
        self,
        projection: str,
        source: str,
        position: int,
        timeout: float,
        poll: Any = None,
    ) -> bool:
        """Block until ``projection`` has processed ``source`` up to ``position``.

        ``poll()`` (optional) reads the position from the database. Returns False on
        timeout (seconds)."""
        deadline = time.monotonic() + timeout
        next_poll = time.monotonic() + 0.05
        with self._cond:
            while self.known(projection, source) < position:
                now = time.monotonic()
                if now >= deadline:
                    return False
                if poll is not None and now >= next_poll:
                    self._cond.release()
                    try:
                        polled = int(poll())
                    finally:
                        self._cond.acquire()
                    if polled >= position:
                        self._positions[(projection, source)] = max(
                            polled, self.known(projection, source)
                        )
                        break
                    next_poll = now + 0.05
                self._cond.wait(min(0.05, deadline - now))
        return True


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
    1 s polling fallback)."""

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
    ) -> None:
        self.projection = projection
        self.database_url = database_url
        self.sources = {name: sources[name] for name in projection.sources}
        self.board = board or PositionBoard()
        self.page_size = page_size
        self.idle_wait = idle_wait
        self.retry_interval = retry_interval
        self.status = RunnerState()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

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

    def wake(self) -> None:
        """Hint that new events were committed (saves waiting for NOTIFY)."""
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
                    self._follow(lock_conn)
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
        ensure_active_version(self.database_url, self.projection)
        for source in self.sources.values():
            lock_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(source.channel)))
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            self.status.state = "running"
            self.status.error = None
            while not self._stop.is_set():
                worked = False
                try:
                    for source in self.sources.values():
                        while not self._stop.is_set() and self.process_page(conn, source):
                            worked = True
                except ProjectionFailed:
                    self._wait_until_unblocked(conn, lock_conn)
                    continue
                if worked:
                    continue
                self._idle(lock_conn)

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

    def _idle(self, lock_conn: psycopg.Connection[Any]) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        # Sleep until a NOTIFY, a local wake() or the polling interval.
        deadline = time.monotonic() + self.idle_wait
        while not self._stop.is_set() and not self._wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for _ in lock_conn.notifies(timeout=min(0.1, remaining), stop_after=1):
                return
        self._wake.clear()

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
        announce = schema is None
        with conn.transaction():
            schema_name, position = self._lock_tracking(conn, source.name, schema)
            notifications = source.read(position, self.page_size, stop)
            if not notifications:
                return 0
            try:
                with conn.transaction():  # savepoint: a failure leaves the page undone
                    self._apply_all(conn, schema_name, source, notifications)
            except Exception:
                failed = True
            else:
                failed = False
        if failed:
            self._isolate_failure(conn, source, notifications, schema)
        if announce:
            self._published(source.name, notifications[0].id, notifications[-1].id)
        return len(notifications)

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
        notifications: Iterable[Any],
    ) -> None:
        schema = sql.Identifier(schema_name)
        last_id = 0
        last_at: datetime | None = None
        # Pipeline mode: statements are sent without waiting for each reply (a page costs
        # a few round trips, not one per event); an error surfaces by the end of the block.
        with conn.pipeline(), conn.cursor() as cur:
            for notification in notifications:
                event = source.decode(notification)
                self.projection.apply(cur, schema, source.name, notification.id, event)
                last_id = notification.id
                last_at = getattr(event, "timestamp", None)
            cur.execute(
                "UPDATE projection_tracking SET position = %s, last_event_at = %s, "
                "updated_at = now() WHERE schema_name = %s AND source = %s",
                (last_id, last_at, schema_name, source.name),
            )

    def _isolate_failure(
        self,
        conn: psycopg.Connection[Any],
        source: Source,
        notifications: Sequence[Any],
        schema: str | None = None,
    ) -> None:
        for notification in notifications:
            try:
                with conn.transaction():
                    schema_name, position = self._lock_tracking(conn, source.name, schema)
                    if notification.id <= position:
                        continue
                    self._apply_all(conn, schema_name, source, [notification])
            except Exception as exc:
                self._record_failure(conn, source.name, notification.id, exc, schema)
                if schema is None:
                    self._published(source.name, notifications[0].id, notification.id - 1)
                raise ProjectionFailed(str(exc)) from exc

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
