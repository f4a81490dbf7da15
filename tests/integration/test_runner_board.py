"""The live runner and the in-process ``PositionBoard``: a runner holds the board while it
holds the projection's lock (so waiters stop polling the database), tells it where the
projection stands as soon as it takes over, and lets go when it stops; a projection without
``durable_pages`` has its live pages committed with ``synchronous_commit = off``, the others
durably."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import uuid4

import psycopg
from psycopg import sql

from domain.library import Library
from projections.board import PositionBoard, PositionListener, tracked_position
from projections.inbox import InboxProjection
from projections.read_model import Cursor, ReadModelProjection
from projections.rooms import RoomsProjection
from projections.runner import ReadModelRunner
from projections.shelf import ShelfProjection
from projections.source import Source
from tests.conftest import wait_until
from tests.integration.activity import reader


class CommitMode(ReadModelProjection):
    """Records, for each Library event, the ``synchronous_commit`` its page ran with."""

    sources = ("library",)
    ddl = "CREATE TABLE {schema}.pages (position bigint PRIMARY KEY, mode text NOT NULL)"
    tables = ("pages",)
    durable_pages: ClassVar[bool]

    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.pages VALUES (%s, current_setting('synchronous_commit'))"
            ).format(schema),
            (position,),
        )


def commit_mode(durable: bool) -> ReadModelProjection:
    name = f"commit_mode_{uuid4().hex[:8]}"
    return type(name, (CommitMode,), {"name": name, "durable_pages": durable})()


def modes(database_url: str, projection: ReadModelProjection) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT mode FROM {}.pages").format(sql.Identifier(projection.name))
        ).fetchall()
    return {row[0] for row in rows}


def run_until_caught_up(
    database_url: str, library: Library, projection: ReadModelProjection, board: PositionBoard
) -> ReadModelRunner:
    runner = ReadModelRunner(
        projection, database_url, {"library": Source("library", library)}, board=board
    )
    runner.start()
    head = Source("library", library).head()
    wait_until(lambda: board.known(projection.name, "library") >= head, timeout=30)
    return runner


def test_pages_of_a_projection_without_durable_pages_commit_asynchronously(
    database_url: str, library: Library
) -> None:
    reader(library, "commit-mode")
    board = PositionBoard()
    lazy, durable = commit_mode(durable=False), commit_mode(durable=True)
    runners = [run_until_caught_up(database_url, library, p, board) for p in (lazy, durable)]
    try:
        assert modes(database_url, lazy) == {"off"}
        assert modes(database_url, durable) == {"on"}
    finally:
        for runner in runners:
            runner.stop()


def test_only_pure_read_models_give_up_durable_pages() -> None:
    assert not ShelfProjection.durable_pages
    assert not RoomsProjection.durable_pages
    assert InboxProjection.durable_pages  # its pages' items are published after commit


def test_the_runner_holds_the_board_and_publishes_where_it_takes_over(
    database_url: str, library: Library
) -> None:
    reader(library, "board-takeover")
    board = PositionBoard()
    projection = commit_mode(durable=False)
    first = run_until_caught_up(database_url, library, projection, board)
    assert board.held(projection.name)
    first.stop()
    assert not board.held(projection.name)
    with psycopg.connect(database_url) as conn:
        where = tracked_position(conn, projection.name, "library")
    assert where > 0

    # A new process's runner (a fresh board) with nothing left to do: its board learns the
    # position at once, so a command recorded before the takeover is not left waiting.
    fresh = PositionBoard()
    second = ReadModelRunner(
        projection, database_url, {"library": Source("library", library)}, board=fresh
    )
    second.start()
    try:
        wait_until(lambda: fresh.held(projection.name), timeout=30)
        assert fresh.wait(projection.name, "library", where, timeout=10)
    finally:
        second.stop()
    assert not fresh.held(projection.name)


def test_wake_ignores_logs_the_runner_does_not_follow(database_url: str, library: Library) -> None:
    runner = ReadModelRunner(
        commit_mode(durable=True), database_url, {"library": Source("library", library)}
    )
    runner.wake("chat")
    assert not runner._wake.is_set()
    runner.wake("library")
    assert runner._wake.is_set()


def test_a_runner_that_does_not_listen_is_woken_by_the_process_listener(
    database_url: str, library: Library
) -> None:
    """The server's runners do not LISTEN themselves: the process's one listening connection
    (``PositionListener.follow``) wakes them on each NOTIFY of their logs. A runner with
    nothing else to wake it follows events committed by another writer, and after its lock's
    session was ended while it idled it takes the lock again and goes on."""
    projection = commit_mode(durable=True)
    source = Source("library", library)
    board = PositionBoard()
    runner = ReadModelRunner(
        projection, database_url, {"library": source}, board=board, listen=False
    )
    listener = PositionListener(database_url, PositionBoard())
    listener.follow(source.channel, lambda: runner.wake("library"))
    runner.start()
    listener.start()
    try:
        wait_until(lambda: board.known(projection.name, "library") >= source.head(), timeout=30)
        for _ in range(3):  # idle now: only the listener's wake brings it to these events
            reader(library, "woken")
            head = source.head()
            wait_until(lambda h=head: board.known(projection.name, "library") >= h, timeout=10)

        name = f"liudong projection {projection.name}"[:63]
        lock_pid = lock_session(database_url, name)
        assert lock_pid is not None
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (lock_pid,))
        wait_until(lambda: lock_session(database_url, name) not in (None, lock_pid), timeout=10)
        reader(library, "after the lock's session ended")
        head = source.head()
        wait_until(lambda: board.known(projection.name, "library") >= head, timeout=10)
    finally:
        listener.stop()
        runner.stop()


def lock_session(database_url: str, application_name: str) -> int | None:
    """The backend pid of the session named ``application_name`` (a runner's lock)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchone()
    return None if row is None else int(row[0])
