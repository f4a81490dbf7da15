"""PostgreSQL plumbing: connection pool, eventsourcing environment, migrations.

Low-level psycopg errors are translated at the adapters that use them; this module only
builds connections.
"""

from __future__ import annotations

import select
import time
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool import base as _pool_base

from api.adapters.eventstore import RECORDER_TOPIC
from migrations import MIGRATIONS_DIR

# psycopg_pool re-opens the connections an outage broke with an exponential back-off (1 s,
# then ×2 without a cap: after a 30 s outage the next try may be 30 s away). A constant
# half-second keeps "service returns within 2 s of the database" true, for our pool and
# eventsourcing's alike; a refused connection costs next to nothing.
_pool_base.AttemptWithBackoff.INITIAL_DELAY = 0.5
_pool_base.AttemptWithBackoff.DELAY_BACKOFF = 1.0


def connection_kwargs(database_url: str) -> dict[str, Any]:
    """Split a libpq URL or key=value string into psycopg keyword arguments."""
    return conninfo_to_dict(database_url)


def eventsourcing_env(
    database_url: str,
    *,
    pool_size: int = 5,
    timeouts: DatabaseTimeouts | None = None,
    pre_ping: bool = True,
) -> dict[str, str]:
    """The eventsourcing ``PostgresFactory`` environment for ``database_url``.

    Tables are created by migrations (``CREATE_TABLE=n``); the default insert mode is kept
    (``POSTGRES_ENABLE_DB_FUNCTIONS`` unset: the function mode can let a follower skip an
    event in 9.5.6). ``pre_ping=False`` when the pool's connections are checked by
    ``FailFast.guard`` instead (the pool's own check waits 0.5 s after each broken one)."""
    kw = connection_kwargs(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        # the default recorder, plus the idempotency mark in the events' transaction
        "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC,
        "POSTGRES_DBNAME": str(kw.get("dbname", "postgres")),
        "POSTGRES_HOST": str(kw.get("host", "localhost")),
        "POSTGRES_PORT": str(kw.get("port", "5432")),
        "POSTGRES_USER": str(kw.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(kw.get("password", "")),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",
        # eventsourcing's "connect timeout" is its pool's wait for a connection (whole seconds)
        "POSTGRES_CONNECT_TIMEOUT": str(max(1, int((timeouts or DatabaseTimeouts()).pool))),
        # a connection broken by a restart is replaced, not used
        "POSTGRES_PRE_PING": "y" if pre_ping else "n",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "CREATE_TABLE": "n",
        # personal fields sealed with a key per reader (crypto-shredding: domain/personal.py)
        "PERSONAL_DATA_MAPPER_TOPIC": "api.adapters.shredding:personal_data_mapper",
    }


LIBRARY_CACHE_SIZE = 10_000


def library_cache_env(maxsize: int = LIBRARY_CACHE_SIZE) -> dict[str, str]:
    """eventsourcing's aggregate cache for the Library (``AGGREGATE_CACHE_MAXSIZE``, an LRU
    of ``maxsize`` aggregates by id): a load finds the aggregate it loaded last and reads
    only the events stored since (``AGGREGATE_CACHE_FASTFORWARD``: one ``SELECT … WHERE
    originator_version > v``, whichever process stored them), and is handed a deep copy,
    so a refused command leaves the cache as it was. The store still decides conflicts: a
    save from a stale copy fails on the ``(originator_id, originator_version)`` key as
    before, so several nodes and "exactly one of 16 approvals wins" hold. A book's load no
    longer decodes its whole lending history. (Chat keeps its own copies: ``domain.chat``.)"""
    return {"AGGREGATE_CACHE_MAXSIZE": str(maxsize), "AGGREGATE_CACHE_FASTFORWARD": "y"}


class DatabaseTimeouts(msgspec.Struct, frozen=True, kw_only=True):
    """How long the request path waits on the database (``LIUDONG_DB_*_TIMEOUT``): to
    connect (libpq ``connect_timeout``, whole seconds ≥ 2), for a pooled connection, and per
    statement (``statement_timeout``; 0: none). An outage is then answered fast (503)."""

    connect: int = 2
    pool: float = 0.8
    statement: float = 10.0


def make_pool(
    database_url: str,
    *,
    size: int = 10,
    name: str = "liudong",
    timeouts: DatabaseTimeouts | None = None,
    autocommit: bool = False,
) -> ConnectionPool:
    """An open psycopg pool with dict rows, for read models and our own tables. Each
    connection is checked when taken from the pool (a connection broken by a database
    restart is replaced, not handed out), and waits are bounded by ``timeouts``.

    ``autocommit``: each statement is its own transaction (for single-statement reads: one
    round trip instead of ``BEGIN``, the statement and ``COMMIT``); otherwise a block
    ``with pool.connection()`` is one transaction."""
    timeouts = timeouts or DatabaseTimeouts()
    kwargs: dict[str, Any] = {
        "row_factory": dict_row,
        "autocommit": autocommit,
        "connect_timeout": timeouts.connect,
    }
    if timeouts.statement > 0:
        kwargs["options"] = f"-c statement_timeout={int(timeouts.statement * 1000)}"
    pool: ConnectionPool = ConnectionPool(
        database_url,
        min_size=min(2, size),
        max_size=size,
        kwargs=kwargs,
        name=name,
        open=True,
        timeout=timeouts.pool,
        reconnect_timeout=24 * 3600,  # keep trying: the database comes back
    )
    check_connections(pool)
    pool.wait(timeout=30)
    return pool


def check_connections(pool: Any) -> None:
    """Check each connection ``pool.getconn`` hands out and, when one is broken, drain the
    pool: a database restart breaks every idle connection at once, and they are replaced
    together instead of one by one. The next connection is then taken at once, within the
    same bounded wait (``PoolTimeout`` when it runs out).

    The check is a look at the idle connection's socket (``poll``, no round trip): the
    server sends an idle session nothing unless it ends it (a restart or
    ``pg_terminate_backend`` sends a FATAL error, then closes; a dead server's sockets read
    end-of-file). Only a socket with something to read, or a connection psycopg already
    knows is closed, is checked with a query (``SELECT`` of nothing). A round-trip check
    of every connection taken cost a statement and a transaction per checkout (4.3 per
    command of the bench's loan life cycle: a third of all statements). As before, a
    connection the network lost silently is found by its first statement's error.

    Instead of psycopg_pool's own ``check``, which sleeps its reconnection delay after each
    broken connection: with five broken connections in the pool, requests after the
    database came back failed for ~3 s (a 0.8 s wait sees two of them). The pool must be
    built without ``check``."""
    original = pool.getconn

    def getconn(timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (pool.timeout if timeout is None else timeout)
        while True:
            conn = original(max(0.0, deadline - time.monotonic()))
            if _quiet(conn):
                return conn
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.Error:
                pool.putconn(conn)  # broken: the pool closes it and opens another
                pool.drain()  # the idle ones are as broken: replace them all now
                continue
            return conn

    pool.getconn = getconn


def _quiet(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle pooled connection is open with nothing sent by the server to read
    (so it was not ended while idle): one ``poll`` of its socket with no timeout."""
    if conn.closed or conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
    except (psycopg.OperationalError, ValueError):  # no socket any more
        return False
    return not poller.poll(0)


class DatabaseDown(Exception):
    """The database could not be reached just now (``fail_fast``): raised at once instead of
    waiting again, and not one of the errors eventsourcing retries (it would retry ten
    times, each waiting for the pool: twelve seconds for one request)."""


class FailFast:
    """A circuit breaker on the pools of eventsourcing's datastores (``guard``): when taking
    a connection fails (the pool's bounded wait ran out, or connecting failed), every taker
    gets ``DatabaseDown`` at once for ``open_for`` seconds; then one try goes through again.
    Connections that work are never delayed."""

    def __init__(self, wait: float, open_for: float = 0.5) -> None:
        self.wait = wait  # seconds a taker waits for a connection (eventsourcing: whole s)
        self.open_for = open_for
        self.down_until = 0.0

    def guard(self, pool: Any) -> None:
        """Wrap ``pool.getconn`` (eventsourcing's ``datastore.pool``, built with
        ``eventsourcing_env(pre_ping=False)``): connections checked as by
        ``check_connections``, and the breaker around that."""
        check_connections(pool)
        original = pool.getconn

        def getconn(timeout: float | None = None) -> Any:
            if time.monotonic() < self.down_until:
                raise DatabaseDown("the database is unavailable")
            try:
                return original(self.wait if timeout is None else min(timeout, self.wait))
            except (PoolTimeout, psycopg.OperationalError) as exc:
                self.down_until = time.monotonic() + self.open_for
                raise DatabaseDown(f"the database is unavailable: {exc}") from exc

        pool.getconn = getconn


def connect(database_url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    """One connection with dict rows (for CLI commands and tests)."""
    return psycopg.connect(database_url, row_factory=dict_row, **kwargs)


def _yoyo_uri(database_url: str) -> str:
    kw = connection_kwargs(database_url)
    user = kw.pop("user", "postgres")
    password = kw.pop("password", "")
    dbname = kw.pop("dbname", "postgres")
    host = kw.pop("host", "localhost")
    port = kw.pop("port", None)
    query = {}
    netloc_host = host
    if host.startswith("/"):  # unix socket folder: passed as a query argument
        query["host"] = host
        netloc_host = ""
    query.update({k: str(v) for k, v in kw.items()})
    from urllib.parse import quote, urlencode

    auth = quote(user) + (":" + quote(password) if password else "")
    netloc = f"{auth}@{netloc_host}" + (f":{port}" if port and netloc_host else "")
    uri = f"postgresql+psycopg://{netloc}/{dbname}"
    if port and not netloc_host:
        query["port"] = str(port)
    return uri + ("?" + urlencode(query) if query else "")


def _read_migrations() -> Any:
    from yoyo import read_migrations
    from yoyo.migrations import MigrationList

    # the folder is also a Python package (so the SQL ships in the wheel): skip __init__.py
    return MigrationList(m for m in read_migrations(str(MIGRATIONS_DIR)) if m.id != "__init__")


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations (yoyo, under its lock); returns the ids applied."""
    from yoyo import get_backend

    backend = get_backend(_yoyo_uri(database_url))
    migrations = _read_migrations()
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


def pending_migrations(database_url: str) -> list[str]:
    """Ids of migrations not yet applied."""
    from yoyo import get_backend

    backend = get_backend(_yoyo_uri(database_url))
    return [m.id for m in backend.to_apply(_read_migrations())]
