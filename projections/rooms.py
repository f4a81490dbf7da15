"""The rooms read model: public rooms and their message history.

Written only by ``RoomsProjection`` (from the Chat log: ``Room.Created``,
``Room.MessageSent``); read through ``RoomQueries`` (views in schema ``rooms``). Who is *in*
a room is presence (``realtime.presence``, from NATS), not history, so it is not here.

Tables (in each version's schema)::

    rooms(id pk, name unique, title, created_at, last_seq, last_message_at)
    messages(room_id, seq, message_id unique, sender_id, text, client_msg_id, at)
        PRIMARY KEY (room_id, seq)

A retried send beyond the aggregate's de-duplication window records a second
``MessageSent`` with the same ``message_id``: the first one stands (``ON CONFLICT DO
NOTHING``), as in the inbox.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.framework import Cursor, Projection

DDL = """
CREATE TABLE {schema}.rooms (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    title text NOT NULL,
    created_at timestamptz NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    last_message_at timestamptz
);
CREATE TABLE {schema}.messages (
    room_id uuid NOT NULL,
    seq bigint NOT NULL,
    message_id uuid NOT NULL UNIQUE,
    sender_id uuid NOT NULL,
    text text NOT NULL,
    client_msg_id text NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (room_id, seq)
);
"""


class RoomsProjection(Projection):
    """Chat log → ``rooms``, ``messages`` (room messages only; conversations are the inbox's)."""

    name = "rooms"
    sources = ("chat",)
    ddl = DDL
    tables = ("rooms", "messages")

    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        kind = type(event).__qualname__
        if kind == "Room.Created":
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.rooms (id, name, title, created_at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING"
                ).format(schema),
                (event.originator_id, event.name, event.title, event.timestamp),
            )
        elif kind == "Room.MessageSent":
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.messages (room_id, seq, message_id, sender_id, text, "
                    "client_msg_id, at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING seq"
                ).format(schema),
                (event.originator_id, event.seq, event.message_id, event.sender_id, event.text,
                 event.client_msg_id, event.timestamp),
            )  # fmt: skip
            if cur.fetchone() is not None:
                cur.execute(
                    sql.SQL(
                        "UPDATE {}.rooms SET last_seq = greatest(last_seq, %s), "
                        "last_message_at = %s WHERE id = %s"
                    ).format(schema),
                    (event.seq, event.timestamp, event.originator_id),
                )


class RoomQueries:
    """Reads of the rooms read model (rows are dicts)."""

    def __init__(self, pool: ConnectionPool, schema: str = "rooms") -> None:
        self.pool = pool
        self.s = sql.Identifier(schema)

    def _all(self, query: str, params: Any) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            return list(conn.execute(sql.SQL(query).format(self.s), params).fetchall())  # type: ignore[arg-type]

    def rooms(self) -> list[dict[str, Any]]:
        """Every room, by name: ``{"id", "name", "title", "created_at", "last_seq",
        "last_message_at"}``."""
        return self._all(
            "SELECT id, name, title, created_at, last_seq, last_message_at FROM {}.rooms "
            "ORDER BY name",
            (),
        )

    def room(self, name: str) -> dict[str, Any] | None:
        rows = self._all(
            "SELECT id, name, title, created_at, last_seq, last_message_at FROM {}.rooms "
            "WHERE name = %s",
            (name,),
        )
        return rows[0] if rows else None

    def messages(
        self, room_id: UUID, before_seq: int | None = None, limit: int = 30
    ) -> tuple[list[dict[str, Any]], int | None]:
        """``(rows, next_before)``: up to ``limit`` messages with ``seq < before_seq``, newest
        first, with the sender's ``sender_nickname`` / ``sender_avatar_url`` (from the shelf);
        ``next_before`` is the ``before_seq`` of the next (older) page or ``None``."""
        params: list[Any] = [room_id]
        where = "m.room_id = %s"
        if before_seq is not None:
            where += " AND m.seq < %s"
            params.append(before_seq)
        params.append(limit + 1)
        rows = self._all(
            "SELECT m.room_id, m.seq, m.message_id, m.sender_id, m.text, m.client_msg_id, m.at, "
            "r.nickname AS sender_nickname, r.avatar_url AS sender_avatar_url "
            "FROM {}.messages m LEFT JOIN shelf.readers r ON r.id = m.sender_id "
            f"WHERE {where} ORDER BY m.seq DESC LIMIT %s",
            params,
        )
        next_before = int(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return rows[:limit], next_before


__all__ = ["DDL", "RoomQueries", "RoomsProjection"]
