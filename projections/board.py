"""Waiting for a tracking position: read-your-writes for commands.

A command that changed a log may wait until a read model includes its own events before it
answers (the API container's ``wait_for``). ``PositionBoard`` is the in-process notice
board on which the runners of this process publish their committed pages;
``tracked_position`` reads the active version's position from the database (the board's
fallback while no local runner holds the projection, and what the realtime relay and the
benchmarks read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

POSITIONS_CHANNEL = "liudong_positions"
"""Where PostgreSQL announces each move of an active version's tracking position
(migration ``0014_position_notify``): payload ``"<projection> <source> <position>"``."""


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
        self._waiters: dict[tuple[str, str], dict[threading.Event | _LoopWaiter, int]] = {}
        self.listening = False
        """A ``PositionListener`` feeds this board every position committed by any process:
        waiters of a projection no local runner holds poll only every
        ``SAFETY_POLL_INTERVAL`` s."""

    def publish(self, projection: str, source: str, position: int) -> None:
        """``projection`` has processed ``source`` up to ``position`` (it never goes back)."""
        with self._lock:
            key = (projection, source)
            if position > self._positions.get(key, 0):
                self._positions[key] = position
            waiters = self._waiters.get(key)
            if waiters:
                for waiter, wanted in waiters.items():
                    if wanted <= position:
                        waiter.set()

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
                    for waiter in waiters:
                        waiter.set()

    def held(self, projection: str) -> bool:
        """Whether a runner of this process holds ``projection``."""
        return self._holders.get(projection, 0) > 0

    def _interval(self, projection: str) -> float:
        """Seconds between a waiter's database polls for ``projection``."""
        return self.SAFETY_POLL_INTERVAL if self._informed(projection) else self.POLL_INTERVAL

    @contextlib.contextmanager
    def _registered(self, key: tuple[str, str], waiter: Any, position: int) -> Iterator[None]:
        """``waiter`` (a ``threading.Event`` or ``_LoopWaiter``) is ``set()`` by ``publish``
        of ``position`` or beyond for ``key`` while the block runs."""
        with self._lock:
            self._waiters.setdefault(key, {})[waiter] = position
        try:
            yield
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self._waiters[key]

    def _informed(self, projection: str) -> bool:
        """Whether this board hears of ``projection``'s pages without asking the database
        (a local runner holds it, or a ``PositionListener`` is connected)."""
        return self.listening or self.held(projection)

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
        with self._registered(key, event, position):
            next_poll = now + self._interval(projection)
            while self.known(projection, source) < position:
                now = time.monotonic()
                if now >= deadline:
                    return False
                interval = self._interval(projection)
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

    async def wait_async(
        self,
        projection: str,
        source: str,
        position: int,
        timeout: float,
        poll: Callable[[], Awaitable[int]] | None = None,
    ) -> bool:
        """``wait`` for a coroutine: awaited on the running event loop, holding no thread.

        The thread that ``publish``-es (a runner, the ``PositionListener``) wakes the waiter
        with ``call_soon_threadsafe``. ``poll()`` is awaited on the same schedule as
        ``wait``'s (the caller runs its query in a worker thread). Returns False on timeout
        (seconds)."""
        key = (projection, source)
        if self.known(projection, source) >= position:
            return True
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout
        waiter = _LoopWaiter(loop)
        with self._registered(key, waiter, position):
            next_poll = now + self._interval(projection)
            while self.known(projection, source) < position:
                now = loop.time()
                if now >= deadline:
                    return False
                interval = self._interval(projection)
                next_poll = min(next_poll, now + interval)
                if poll is not None and now >= next_poll:
                    polled = int(await poll())
                    if polled >= position:
                        self.publish(projection, source, polled)
                        return True
                    next_poll = loop.time() + interval
                until = min(deadline, next_poll) if poll is not None else deadline
                await waiter.wait(max(0.0, until - loop.time()))
            return True


class _LoopWaiter:
    """A waiter of ``PositionBoard.wait_async``, a ``threading.Event`` for a coroutine:
    ``set()`` from any thread wakes the coroutine awaiting ``wait()`` on ``loop``, or its
    next ``wait()`` returns at once; each ``wait()`` clears it."""

    __slots__ = ("_future", "_is_set", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None
        self._is_set = False

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        future = self._future
        if future is None:
            self._is_set = True
        elif not future.done():
            future.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Return when ``set()`` or after ``timeout`` seconds, whichever comes first."""
        if self._is_set:
            self._is_set = False
            return
        future = self._future = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._wake)
        try:
            await future
        finally:
            timer.cancel()
            self._future = None


class PositionListener:
    """The process's one ``LISTEN`` connection, in a thread: publishes each position
    announced on ``liudong_positions`` on ``board`` (read-your-writes in a process, API
    worker or node, that does not run the projection, without polling
    ``projection_tracking``), and calls the callbacks ``follow``-ed for the event logs'
    channels (the runners' ``wake``). While it is not connected the board's waiters poll as
    before (``board.listening`` is False); after a (re)connect it reads every tracked
    position once and calls every callback (a NOTIFY sent meanwhile was missed).

    One connection for all: PostgreSQL signals the listening sessions of a database on a
    ``NOTIFY``, whatever their channel, and a signalled session runs a transaction to read
    the queue. With the runners listening on their own connections, four sessions were
    woken per commit: 1.3 of the 6.2 transactions per command that ``pg_stat_database``
    counted under the ``commands`` load (``docs/BENCHMARKS.md``)."""

    def __init__(self, database_url: str, board: PositionBoard) -> None:
        self.database_url = database_url
        self.board = board
        self._followers: dict[str, list[Callable[[], None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (in the listener's thread; it must not block) on each
        ``NOTIFY`` of ``channel`` and after each (re)connect. Only before ``start()``.
        Raises ``RuntimeError`` once started."""
        if self._thread is not None:
            raise RuntimeError("follow() before start()")
        self._followers.setdefault(channel, []).append(callback)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="positions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.database_url,
                    autocommit=True,
                    application_name="liudong positions",
                ) as conn:
                    for channel in (POSITIONS_CHANNEL, *self._followers):
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    for projection, source, position in conn.execute(
                        "SELECT v.projection, t.source, t.position FROM projection_tracking t "
                        "JOIN projection_versions v ON v.schema_name = t.schema_name "
                        "WHERE v.active"
                    ).fetchall():
                        self.board.publish(projection, source, int(position))
                    self.board.listening = True
                    for callbacks in self._followers.values():
                        self._call(callbacks)
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.2):
                            if notify.channel == POSITIONS_CHANNEL:
                                self._publish(notify.payload)
                            else:
                                self._call(self._followers.get(notify.channel, ()))
            except Exception as exc:  # connection lost, database restarting…
                if not self._stop.is_set():
                    log.warning("positions: %s; listening again in 1 s", exc)
            finally:
                self.board.listening = False
            self._stop.wait(1.0)

    @staticmethod
    def _call(callbacks: Iterable[Callable[[], None]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("positions: a NOTIFY callback failed")

    def _publish(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            projection, source, position = payload.split(" ")
            self.board.publish(projection, source, int(position))


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
