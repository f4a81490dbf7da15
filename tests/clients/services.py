"""Services for the SDK's Node tests (clients/miniprogram/test): a fresh, migrated database and
a NATS server, for as long as standard input stays open.

    python -m tests.clients.services
    → one JSON line on stdout: {"database_url": "...", "nats_url": "..."}
    (close stdin or send EOF) → the database is dropped and an embedded nats-server stopped

``DATABASE_URL`` (a server's maintenance database) and ``NATS_URL`` are used when set, as in
tests/conftest.py; otherwise the embedded PostgreSQL and nats-server are started.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.bootstrap.db import migrate
from api.bootstrap.embedded import EmbeddedNats, start_postgres


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)  # the finally below drops the database and stops nats-server


def main() -> None:
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)
    work = Path(tempfile.mkdtemp(prefix="liudong-sdk-services-"))
    # atexit is LIFO: registered before pgserver's own hook, this runs after it stopped
    atexit.register(shutil.rmtree, work, True)
    server_url = os.environ.get("DATABASE_URL") or start_postgres(work)
    name = f"liudong_sdk_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    nats: EmbeddedNats | None = None
    try:
        migrate(database_url)
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats = EmbeddedNats(work)
            nats_url = nats.start()
        print(json.dumps({"database_url": database_url, "nats_url": nats_url}), flush=True)
        sys.stdin.read()  # until the Node test closes our stdin (or exits)
    finally:
        if nats is not None:
            nats.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
