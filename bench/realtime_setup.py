"""Setting up thousands of authenticated readers for the socket scenarios.

Logging 10,000 readers in over HTTP would take minutes of ``RegisterReader`` commands before
anything is measured, so readers are bulk-loaded instead: ``Reader`` aggregates built by the
domain, encoded with the Library's mapper and COPYed into ``library_events``
(``bench.loader.copy_stored``), then the server's shelf projection catches up as it would
after any burst; each reader gets a session token from the product's own
``SessionStore.issue`` (what ``/v1/auth/login`` does after registering). The sockets then
authenticate exactly as a client's do.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench.common import Skip


def realtime_missing() -> str | None:
    """Why the WebSocket gateway cannot be measured here (``None`` when it can)."""
    for module in ("realtime.gateway", "api.http.controllers.ws"):
        if importlib.util.find_spec(module) is None:
            return f"{module} does not exist yet"
    return None


def require_realtime() -> None:
    reason = realtime_missing()
    if reason:
        raise Skip(f"no WebSocket gateway: {reason}")


def bulk_readers(
    database_url: str, count: int, prefix: str = "bench"
) -> list[tuple[uuid.UUID, str]]:
    """``count`` registered readers with a live session each: ``[(reader_id, token)]``."""
    from api.adapters.sessions import SessionStore
    from api.bootstrap.db import eventsourcing_env, make_pool
    from bench.loader import copy_stored
    from domain.library import Library
    from domain.reader import Reader

    library = Library(env=eventsourcing_env(database_url, pool_size=1))
    try:
        readers = [
            Reader(id=uuid.uuid4(), nickname=f"{prefix}{i}", avatar_url="") for i in range(count)
        ]
        stored = [library.mapper.to_stored_event(e) for r in readers for e in r.collect_events()]
    finally:
        library.close()
    with psycopg.connect(database_url) as conn, conn.transaction():
        copy_stored(conn, "library_events", stored)
    pool = make_pool(database_url, size=8, name="bench-sessions")
    try:
        store = SessionStore(pool)
        with ThreadPoolExecutor(8) as executor:
            tokens = list(executor.map(lambda r: store.issue(r.id, 7 * 24 * 3600).token, readers))
    finally:
        pool.close()
    return [(r.id, t) for r, t in zip(readers, tokens, strict=True)]


def log_head(database_url: str, table: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT coalesce(max(notification_id), 0) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def wait_projection(
    database_url: str,
    projection: str,
    source: str,
    position: int | None = None,
    timeout: float = 600.0,
) -> None:
    """Until ``projection`` has processed ``source`` up to ``position`` (default: its head)."""
    from projections.board import tracked_position

    if position is None:
        position = log_head(database_url, f"{source}_events")
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while tracked_position(conn, projection, source) < position:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{projection} did not reach {source} position {position}")
            time.sleep(0.1)


def open_conversations(
    database_url: str, pairs: list[tuple[uuid.UUID, uuid.UUID]]
) -> list[uuid.UUID]:
    """Open the conversation of each pair through ``Chat.handle`` (the API's command)."""
    from api.bootstrap.db import eventsourcing_env
    from domain.chat import Chat
    from domain.chat_commands import OpenConversation

    chat = Chat(env=eventsourcing_env(database_url, pool_size=2))
    try:
        return [chat.handle(OpenConversation(reader_id=a, peer_id=b)).id for a, b in pairs]
    finally:
        chat.close()


def create_room(database_url: str, name: str, title: str) -> Any:
    from api.bootstrap.db import eventsourcing_env
    from domain.chat import Chat
    from domain.chat_commands import CreateRoom

    chat = Chat(env=eventsourcing_env(database_url, pool_size=1))
    try:
        return chat.handle(CreateRoom(name=name, title=title))
    finally:
        chat.close()
