"""The read-model runner: follows notification logs and writes read models exactly once.

Why one module of this size: ``ReadModelRunner`` is one class because every path that
writes a page (one page, overlapped pages, a failed page replayed event by event, a
rebuild's pages) follows one protocol around the tracking row (``_lock_tracking``: lock it,
check the version is still active and at the expected position, write the rows and the new
position in the same transaction), and a rebuild's switch (``projections.ops``) relies on
it. Splitting those methods across modules would separate the code paths that must agree
on that protocol; what does not share it lives elsewhere (``projections.source``,
``.versions``, ``.board``, ``.readahead``, ``.read_model``).

Processing: one transaction per *page* of notifications (``page_size``, default 500) that
writes the read-model rows **and** the tracking position (``projection_tracking``) together:
the effect of each event is applied exactly once. Logs are followed in their notification
order (``projections.source``: reading "after my position" never skips an event).

- a projection that implements ``fold_page`` gets a page folded in memory over the rows it
  touches and written back with a few statements (``projections.batch``: a binary ``COPY``
  for new rows, one ``UPDATE`` a table for changed ones); small pages go event by event
  (``apply``, pipelined), which leaves the same rows;
- while behind (a full page), ``catch_up`` overlaps pages: a thread writes one page (its
  transaction, as above) while the next is read ahead (``projections.readahead``), decoded,
  loaded and folded, carrying the rows the page being written touched; the cyclic garbage
  collector is paused meanwhile.

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
PostgreSQL advisory lock, ``projections.versions.lock_key``), the others stand by and take
over when it dies.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from projections.batch import CARRY_LIMIT, CARRY_PAGES, execute_all
from projections.board import PositionBoard, tracked_position
from projections.read_model import ReadModelProjection
from projections.readahead import Prefetcher
from projections.records import RawRow
from projections.source import GC_PAUSE_PAGE_SIZE, Source, gc_paused
from projections.versions import ensure_active_version, lock_key

log = logging.getLogger(__name__)


_LOCK_ACTIVE = (
    "SELECT t.schema_name, t.position FROM projection_tracking t "
    "JOIN projection_versions v ON v.schema_name = t.schema_name "
    "WHERE v.projection = %s AND v.active AND t.source = %s FOR UPDATE OF t"
)


@contextlib.contextmanager
def _page_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A page's transaction on ``conn`` (not in autocommit): begun implicitly by its first
    statement, so that ``BEGIN`` can go out pipelined with it, committed at the end, rolled
    back on any error (``conn.transaction()`` sends ``BEGIN`` on its own round trip).
    Inside a transaction already (a rebuild's switch writes its last pages under the live
    version's locks) it is ``conn.transaction()``: a savepoint, as before."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with conn.transaction():
            yield
        return
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


class ProjectionFailed(RuntimeError):
    """A projection stopped on an event it could not apply."""


_KEYED_PLANS = (
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)
"""A folded page's writes join its rows to the table by key: one index probe a row, never
a scan of the table, whatever its statistics say (a version being rebuilt has none)."""


class _Stale(Exception):
    """The version or its position changed under an overlapped page: not written."""


class _PageFailed(Exception):
    """Applying a page raised (its cause): the page's transaction was rolled back."""


class _Sequential(Exception):
    """The projection declined to fold this page (``fold_page`` returned None)."""


@dataclass
class RunnerState:
    state: str = "starting"  # starting | standby | running | failed | stopped
    error: str | None = None
    failed_position: int | None = None
    failed_source: str | None = None
    processed: int = 0
    last_page_at: float = 0.0
    positions: dict[str, int] = field(default_factory=dict)


class ReadModelRunner:
    """Runs one projection (``ReadModelProjection``) in a background thread of this process.
    (Not eventsourcing's ``eventsourcing.projection.ProjectionRunner``:
    ``docs/adr/0001-projection-runner.md``.)

    ``start()`` returns at once; the thread takes the projection's advisory lock (or stands
    by), then catches up in pages and follows new events: LISTEN/NOTIFY and local ``wake()``
    only, so an idle runner sends no statement (``idle_wait`` seconds: an optional polling
    fallback, for logs written by something that does not NOTIFY; ``None``, the default: none).
    A standby waits for the lock inside PostgreSQL (``pg_advisory_lock``), again without
    polling, and takes over the moment the holder's session ends.

    ``page_size`` (500) bounds a page while following (pages are as small as what was
    committed meanwhile); when a page comes back full the runner is behind and catches up
    with overlapped pages of ``catch_up_page_size`` (5,000, ``catch_up``).

    ``listen=False``: the runner does not ``LISTEN`` itself; something else calls
    ``wake(source)`` on each ``NOTIFY`` of its logs' channels and after each of its own
    (re)connects (the server's one listening connection,
    ``projections.board.PositionListener.follow``). Its lock's connection is still read
    (nothing sent) while idle, so a lost session is noticed as before."""

    def __init__(
        self,
        projection: ReadModelProjection,
        database_url: str,
        sources: dict[str, Source],
        *,
        board: PositionBoard | None = None,
        page_size: int = 500,
        idle_wait: float | None = None,
        retry_interval: float = 5.0,
        catch_up_page_size: int = 5000,
        listen: bool = True,
    ) -> None:
        self.projection = projection
        self.listen = listen
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
        self._lock_conn: psycopg.Connection[Any] | None = None  # while waiting for the lock
        self._prefetcher: Prefetcher | None = None
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
        waiting = self._lock_conn
        if waiting is not None:  # a standby blocked in pg_advisory_lock
            with contextlib.suppress(Exception):
                waiting.cancel()
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
        """Take the projection's advisory lock: at once, or else stand by blocked in
        ``pg_advisory_lock`` until the holder's session ends (no polling; ``stop()`` cancels
        the wait). False when stopped meanwhile."""
        key = lock_key(self.projection.name)
        row = lock_conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
        if row and row["ok"]:
            return True
        self.status.state = "standby"
        self._lock_conn = lock_conn
        try:
            if self._stop.is_set():
                return False
            lock_conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except psycopg.errors.QueryCanceled:
            return False
        finally:
            self._lock_conn = None
        return not self._stop.is_set()

    def _follow(self, lock_conn: psycopg.Connection[Any]) -> None:
        """Process pages while holding the lock. LISTEN comes before the first page, so an
        event committed after a page's read always brings a NOTIFY: a source is processed
        until a page is not full, then only again when it is notified or woken (or, with an
        ``idle_wait``, after that many seconds)."""
        ensure_active_version(self.database_url, self.projection)
        for source in self.sources.values():
            if self.listen:
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
        """Sleep until a NOTIFY, a local ``wake()`` or the polling interval (if any);
        returns the names of the sources to look at (all of them after the polling
        interval). Sends no statement: it only reads the lock's connection's socket."""
        channels = {source.channel: name for name, source in self.sources.items()}
        pending: set[str] = set()
        wait = self.idle_wait
        deadline = time.monotonic() + (wait if wait is not None else float("inf"))
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
            if not self.listen:  # woken by wake(); the lock's session is only watched
                if pending:
                    return pending
                self._wake.wait(timeout)
                for _ in lock_conn.notifies(timeout=0.0):  # raises once the session ended
                    pass
                continue
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
        failed = False
        try:
            with _page_transaction(conn):  # a failure rolls the whole page back (no savepoint)
                locked = (
                    self._lock_and_read(conn, source, stop)
                    if schema is None and self._prefetcher is None
                    else None
                )
                if locked is not None:
                    schema_name, position, rows = locked
                    events = None
                else:
                    schema_name, position = self._lock_tracking(conn, source.name, schema)
                    ahead = (
                        self._prefetcher.take(source, position, self.page_size, stop)
                        if (self._prefetcher is not None)
                        else None
                    )
                    rows, events = ahead or (
                        source.read_rows(conn, position, self.page_size, stop),
                        None,
                    )
                if not rows:
                    self.close()
                    return 0
                if len(rows) == self.page_size:  # more may follow: read the next page meanwhile
                    if self._prefetcher is None:
                        self._prefetcher = Prefetcher(self.database_url, self.projection.name)
                    self._prefetcher.start(
                        source, rows[-1][0], self.page_size, stop, self.projection
                    )
                else:
                    self.close()
                try:
                    self._apply_all(conn, schema_name, source, rows, events=events)
                except Exception as exc:
                    raise _PageFailed from exc
        except _PageFailed as exc:
            log.warning(
                "projection %s: page %s..%s of %s failed; replaying it event by event",
                self.projection.name,
                rows[0][0],
                rows[-1][0],
                source.name,
                exc_info=exc.__cause__,
            )
            failed = True
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
                    projection.name,
                    rows[0][0],
                    rows[-1][0],
                    source.name,
                    exc_info=True,
                )
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
                            self._prefetcher = Prefetcher(self.database_url, projection.name)
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
                        log.debug("projection %s: page fold failed", projection.name, exc_info=True)
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
                            self._write_page,
                            conn,
                            source.name,
                            schema,
                            schema_name,
                            position,
                            rows[-1][0],
                            last_at,
                            statements,
                        ),
                        rows,
                    )
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

    def _lock_and_read(
        self, conn: psycopg.Connection[Any], source: Source, stop: int | None
    ) -> tuple[str, int, list[RawRow]] | None:
        """``_lock_tracking`` of the active version and the page after its position in one
        round trip with the transaction's ``BEGIN`` (pipelined): a following runner's page
        costs three round trips (this, its writes, ``COMMIT``) instead of six, which is
        what bounds its pages under load. The read runs after the lock in a fresh snapshot
        and names the version active then: the one locked, or else (a rebuild's switch
        came in between) ``_lock_tracking`` runs as usual and this returns ``None`` (so does
        a source that is not a PostgreSQL table)."""
        query = source.rows_after_tracked_query
        if query is None:
            return None
        name = self.projection.name
        with conn.pipeline():
            lock = conn.execute(_LOCK_ACTIVE, (name, source.name))
            page = conn.cursor(binary=True, row_factory=tuple_row)
            page.execute(
                query, (name, source.name, stop if stop is not None else 2**63 - 1, self.page_size)
            )
        row = lock.fetchone()
        found = page.fetchall()
        if row is None or not found or found[0][0] != row["schema_name"]:
            return None
        rows = [tuple(r[1:]) for r in found if r[1] is not None]
        return str(row["schema_name"]), int(row["position"]), rows

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
            row = conn.execute(_LOCK_ACTIVE, (self.projection.name, source)).fetchone()
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
            "(applied so)",
            self.projection.name,
            rows[0][0],
            rows[-1][0],
            source.name,
        )

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
            self.projection.name,
            source,
            position,
            error,
        )
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


OWNER_LOCK = lock_key("liudong.owner")
"""The advisory lock of the process that runs the projections (and so the relay)."""


class Ownership:
    """Runs ``runners`` in at most one process at a time among those sharing a database
    (``liudong serve --workers N``, several nodes): a thread waits in
    ``pg_advisory_lock(OWNER_LOCK)`` (no polling) and starts the runners once it holds it;
    the other processes serve the API only, until the owner's session ends (a crash, a
    stop), when one of them takes over. Each runner still takes its projection's own lock,
    so a projection never runs twice even while an owner is being replaced."""

    def __init__(
        self, database_url: str, runners: Sequence[ReadModelRunner], *, key: int = OWNER_LOCK
    ) -> None:
        self.database_url = database_url
        self.runners = list(runners)
        self.key = key
        self.owner = False
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projections-owner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and not self.owner:
            with contextlib.suppress(Exception):
                conn.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        for runner in self.runners:
            if runner._thread is not None:  # noqa: SLF001 - started by this owner
                runner.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.database_url, autocommit=True, application_name="liudong owner"
                ) as conn:
                    self._conn = conn
                    if not self.owner:
                        for runner in self.runners:
                            runner.status.state = "standby"
                    conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
                    if self._stop.is_set():
                        return
                    if not self.owner:
                        self.owner = True
                        log.info("projections: this process runs them (owner)")
                        for runner in self.runners:
                            runner.start()
                    while not self._stop.is_set():  # keep the session (and the lock)
                        for _ in conn.notifies(timeout=0.5):  # raises if the session ends
                            pass
                    return
            except psycopg.errors.QueryCanceled:
                return
            except Exception as exc:  # connection lost: the runners keep their own locks
                if not self._stop.is_set():
                    log.warning("projections owner: %s; again in 1 s", exc)
            finally:
                self._conn = None
            self._stop.wait(1.0)


@contextlib.contextmanager
def running(runners: Iterable[ReadModelRunner]) -> Iterator[list[ReadModelRunner]]:
    """Start runners and stop them on exit."""
    started = list(runners)
    for runner in started:
        runner.start()
    try:
        yield started
    finally:
        for runner in started:
            runner.stop()
