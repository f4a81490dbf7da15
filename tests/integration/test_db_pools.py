"""Pools after a database restart: every idle connection of a pool is broken at once (here:
``pg_terminate_backend`` of each, as a restart does). The next request gets a working
connection at once, and the other broken ones are replaced together
(``api.bootstrap.db.check_connections``), for our pool and eventsourcing's behind
``FailFast`` alike. psycopg_pool's own check slept 0.5 s after each broken connection: with
five in the pool, the service came back ~3 s after the database (tests/e2e/test_outage.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from api.bootstrap.db import DatabaseTimeouts, FailFast, eventsourcing_env, make_pool
from tests.conftest import wait_until


def _break_all(database_url: str, pool: Any) -> int:
    """Terminate the server side of every connection ``pool`` holds; how many."""
    pids = []
    for conn in list(pool._pool):  # the idle connections (psycopg_pool keeps them in a deque)
        pids.append(conn.info.backend_pid)
    with psycopg.connect(database_url, autocommit=True) as admin:
        for pid in pids:
            admin.execute(
                "SELECT pg_terminate_backend(%s, 10000)", (pid,)
            )  # returns once it exited
    return len(pids)


def _taken_within(pool: Any, seconds: float) -> float:
    started = time.monotonic()
    with pool.connection(timeout=seconds) as conn:
        assert conn.execute("SELECT 1 AS one").fetchone() is not None
    return time.monotonic() - started


@pytest.fixture
def read_pool(database_url: str) -> Iterator[Any]:
    pool = make_pool(database_url, size=5, name="test-broken")
    # fill the pool to 5 idle connections
    conns = [pool.getconn() for _ in range(5)]
    for conn in conns:
        pool.putconn(conn)
    yield pool
    pool.close()


def test_a_pool_whose_connections_all_broke_serves_the_next_request_at_once(
    database_url: str, read_pool: Any
) -> None:
    assert _break_all(database_url, read_pool) == 5
    took = _taken_within(read_pool, 0.8)
    assert took < 0.3, took  # psycopg_pool's own check: 0.5 s asleep after the first
    wait_until(lambda: len(read_pool._pool) >= 2, timeout=5)  # the broken ones replaced
    for _ in range(5):  # and none of the broken ones is handed out later
        assert _taken_within(read_pool, 0.8) < 0.3


def test_eventsourcing_pools_behind_the_breaker_recover_at_once(database_url: str) -> None:
    from domain.library import Library

    timeouts = DatabaseTimeouts()
    library = Library(env=eventsourcing_env(database_url, pool_size=5, pre_ping=False))
    try:
        FailFast(wait=timeouts.pool).guard(library.recorder.datastore.pool)  # type: ignore[attr-defined]
        pool = library.recorder.datastore.pool  # type: ignore[attr-defined]
        pool.open(wait=True, timeout=10)
        assert _break_all(database_url, pool) >= 1
        took = _taken_within(pool, 0.8)
        assert took < 0.3, took
        library.recorder.max_notification_id()  # a real query through the pool works
    finally:
        library.close()


def test_taking_a_healthy_connection_sends_it_no_statement(database_url: str) -> None:
    pool = make_pool(database_url, size=1, name="test-quiet", autocommit=True)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 'last statement' AS marker")
            pid = conn.info.backend_pid
        with pool.connection() as conn:  # the same connection, checked by looking at its socket
            assert conn.info.backend_pid == pid
            with psycopg.connect(database_url, autocommit=True) as admin:
                row = admin.execute(
                    "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
            assert row == ("SELECT 'last statement' AS marker",)  # not the check's empty query
    finally:
        pool.close()


def test_a_connection_ended_while_idle_is_never_handed_out(database_url: str) -> None:
    pool = make_pool(database_url, size=1, name="test-ended")
    try:
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        with pool.connection(timeout=5) as conn:
            assert conn.info.backend_pid != pid
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        pool.close()
