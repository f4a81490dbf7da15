"""PostgreSQL plumbing: connection pool, eventsourcing environment, migrations.

Low-level psycopg errors are translated at the adapters that use them; this module only
builds connections.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from migrations import MIGRATIONS_DIR


def connection_kwargs(database_url: str) -> dict[str, Any]:
    """Split a libpq URL or key=value string into psycopg keyword arguments."""
    return conninfo_to_dict(database_url)


def eventsourcing_env(database_url: str, *, pool_size: int = 5) -> dict[str, str]:
    """The eventsourcing ``PostgresFactory`` environment for ``database_url``.

    Tables are created by migrations (``CREATE_TABLE=n``); the default insert mode is kept
    (``POSTGRES_ENABLE_DB_FUNCTIONS`` unset: the function mode can let a follower skip an
    event in 9.5.6)."""
    kw = connection_kwargs(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(kw.get("dbname", "postgres")),
        "POSTGRES_HOST": str(kw.get("host", "localhost")),
        "POSTGRES_PORT": str(kw.get("port", "5432")),
        "POSTGRES_USER": str(kw.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(kw.get("password", "")),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "CREATE_TABLE": "n",
    }


def make_pool(database_url: str, *, size: int = 10, name: str = "liudong") -> ConnectionPool:
    """An open psycopg pool with dict rows, for read models and our own tables."""
    pool = ConnectionPool(
        database_url,
        min_size=min(2, size),
        max_size=size,
        kwargs={"row_factory": dict_row, "autocommit": False},
        name=name,
        open=True,
    )
    pool.wait(timeout=30)
    return pool


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
