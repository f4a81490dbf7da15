"""One process runs the projections (``projections.runner.Ownership``), the others wait in
PostgreSQL without polling and take over when it goes; every process hears the committed
positions (``projections.board.PositionListener``, migration ``0014_position_notify``)."""

from __future__ import annotations

import random
from typing import Any

import psycopg

from projections.board import PositionBoard, PositionListener
from projections.runner import Ownership, RunnerState
from tests.conftest import wait_until


class FakeRunner:
    """What ``Ownership`` uses of a runner: ``start``, ``stop``, ``status``, ``_thread``."""

    def __init__(self) -> None:
        self.status = RunnerState()
        self._thread: Any = None
        self.started = 0
        self.stopped = 0

    def start(self) -> None:
        self.started += 1
        self._thread = object()

    def stop(self) -> None:
        self.stopped += 1


def test_one_owner_runs_the_runners_and_a_standby_takes_over(database_url: str) -> None:
    key = random.randint(1, 2**31)  # this test's own lock
    first, second = FakeRunner(), FakeRunner()
    a = Ownership(database_url, [first], key=key)  # type: ignore[list-item]
    b = Ownership(database_url, [second], key=key)  # type: ignore[list-item]
    a.start()
    wait_until(lambda: a.owner)
    b.start()
    try:
        wait_until(lambda: second.status.state == "standby")
        assert first.started == 1 and second.started == 0 and not b.owner
        a.stop()  # its session ends: the standby's pg_advisory_lock returns
        assert first.stopped == 1
        wait_until(lambda: b.owner)
        assert second.started == 1
    finally:
        a.stop()
        b.stop()


def test_a_standby_stops_at_once(database_url: str) -> None:
    key = random.randint(1, 2**31)
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        runner = FakeRunner()
        standby = Ownership(database_url, [runner], key=key)  # type: ignore[list-item]
        standby.start()
        wait_until(lambda: runner.status.state == "standby")
        standby.stop(timeout=5)
        assert standby._thread is not None and not standby._thread.is_alive()
        assert runner.started == 0


def test_every_process_hears_the_positions_of_active_versions(database_url: str) -> None:
    board = PositionBoard()
    listener = PositionListener(database_url, board)
    listener.start()
    name = f"heard_{random.randint(0, 10**9)}"
    try:
        wait_until(lambda: board.listening)
        with psycopg.connect(database_url, autocommit=True) as conn:
            for schema, active in ((f"{name}_v1", True), (f"{name}_v2", False)):
                conn.execute(
                    "INSERT INTO projection_versions (projection, version, schema_name, active) "
                    "VALUES (%s, %s, %s, %s)",
                    (name, int(schema[-1]), schema, active),
                )
                conn.execute(
                    "INSERT INTO projection_tracking (schema_name, source, position) "
                    "VALUES (%s, 'library', 0)",
                    (schema,),
                )
            conn.execute(
                "UPDATE projection_tracking SET position = 42 WHERE schema_name = %s",
                (f"{name}_v1",),
            )
            # a version being rebuilt is not announced
            conn.execute(
                "UPDATE projection_tracking SET position = 99 WHERE schema_name = %s",
                (f"{name}_v2",),
            )
        wait_until(lambda: board.known(name, "library") == 42)
        assert board.wait(name, "library", 42, timeout=0.1)
        assert not board.wait(name, "library", 43, timeout=0.2)
    finally:
        listener.stop()
    assert not board.listening
