"""Session-wide real services for integration and e2e tests.

``DATABASE_URL`` / ``NATS_URL`` are used when set (CI exports the machine's services);
otherwise the embedded PostgreSQL and nats-server are started once per session. Either way
the session gets its own fresh database, migrated, and dropped at the end.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.bootstrap.db import migrate
from api.bootstrap.embedded import EmbeddedNats, start_postgres


@pytest.fixture(scope="session")
def services_dir() -> Path:
    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, which
    # would delete a running embedded PostgreSQL's data folder.
    path = Path(tempfile.mkdtemp(prefix="liudong-test-services-"))
    # atexit is LIFO: registered before pgserver's own hook, this runs after it has stopped
    # the embedded PostgreSQL.
    atexit.register(shutil.rmtree, path, True)
    return path


@pytest.fixture(scope="session")
def server_url(services_dir: Path) -> str:
    """URL of a PostgreSQL server's maintenance database."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    return start_postgres(services_dir)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    name = f"liudong_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    migrate(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def nats_url(services_dir: Path) -> Iterator[str]:
    configured = os.environ.get("NATS_URL")
    if configured:
        yield configured
        return
    server = EmbeddedNats(services_dir)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def library(database_url: str) -> Iterator[object]:
    """The Library Application on the session database."""
    from api.bootstrap.db import eventsourcing_env
    from domain.library import Library

    app = Library(env=eventsourcing_env(database_url))
    yield app
    app.close()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
