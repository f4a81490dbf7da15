"""The rooms read model: public rooms and their message history.

Written only by ``RoomsProjection`` (from the Chat log: ``Room.Created``,
``Room.MessageSent``); read through ``RoomQueries`` (views in schema ``rooms``). Who is *in*
a room is presence (``realtime.presence``, from NATS), not history, so it is not here.

Tables (in each version's schema)::

    rooms(id pk, name unique, title, created_at, last_seq, last_message_at)
    messages(room_id, seq, message_id unique, sender_id, text, client_msg_id, at, media)
        PRIMARY KEY (room_id, seq)

``media`` is the event's picture ``{"id", "width", "height"}`` (or null); ``RoomQueries``
shows it as a picture view (``projections.media``). This read model follows the Chat log
only, so it never sees ``Media.Removed`` (Library log): the history marks a picture
``removed`` by looking at the picture's own row (``media.removed_at``, migration
``0013_media_checks``) when it is read.

A retried send beyond the aggregate's de-duplication window records a second
``MessageSent`` with the same ``message_id``: the first one stands (``ON CONFLICT DO
NOTHING``), as in the inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from projections.batch import Page, Rows, Statement, Table, as_json, as_jsonb
from projections.media import PICTURE_VIEW_SQL
from projections.read_model import Cursor, ReadModelProjection
from projections.records import event_type

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
    media jsonb,
    PRIMARY KEY (room_id, seq)
);
"""


class RoomsProjection(ReadModelProjection):
    """Chat log → ``rooms``, ``messages`` (room messages only; conversations are the inbox's)."""

    name = "rooms"
    sources = ("chat",)
    ddl = DDL
    tables = ("rooms", "messages")

    records = True
    batch_min = 100  # below, one statement an event (pipelined) is quicker
    durable_pages = False  # a function of the Chat log, no side effect (see ReadModelProjection)
    event_types = frozenset({"Room.Created", "Room.MessageSent"})

    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        kind = event_type(event)
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
                    "client_msg_id, at, media) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING RETURNING seq"
                ).format(schema),
                (
                    event.originator_id,
                    event.seq,
                    event.message_id,
                    event.sender_id,
                    event.text,
                    event.client_msg_id,
                    event.timestamp,
                    _media_param(getattr(event, "media", None)),
                ),
            )
            if cur.fetchone() is not None:
                cur.execute(
                    sql.SQL(
                        "UPDATE {}.rooms SET last_seq = greatest(last_seq, %s), "
                        "last_message_at = %s WHERE id = %s"
                    ).format(schema),
                    (event.seq, event.timestamp, event.originator_id),
                )

    def fold_page(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> RoomsPage:
        return RoomsPage(schema, source, events, carry)


def _media_param(media: Any) -> Any:
    return None if media is None else as_jsonb(dict(media))


_ROOMS = Table(
    "rooms",
    {
        "id": "uuid",
        "name": "text",
        "title": "text",
        "created_at": "timestamptz",
        "last_seq": "bigint",
        "last_message_at": "timestamptz",
    },
    mutable=("last_seq", "last_message_at"),
)
_MESSAGES = Table(
    "messages",
    {
        "room_id": "uuid",
        "seq": "bigint",
        "message_id": "uuid",
        "sender_id": "uuid",
        "text": "text",
        "client_msg_id": "text",
        "at": "timestamptz",
        "media": "jsonb",
    },
    key=("message_id",),
    mutable=(),
)
_TAKEN_SEQS = """
SELECT m.room_id, m.seq, m.message_id, m.sender_id, m.text, m.client_msg_id, m.at, m.media
FROM json_to_recordset(%s::json) AS p(r uuid, s bigint)
CROSS JOIN LATERAL (
    SELECT * FROM {s}.messages m WHERE m.room_id = p.r AND m.seq = p.s OFFSET 0) m
"""


class RoomsPage(Page):
    """A page of the Chat log folded over the rooms and room messages it touches
    (``projections.batch``); the same effect as ``RoomsProjection.apply`` event by event:
    a message whose id or (room, seq) is taken is ignored (``ON CONFLICT DO NOTHING``),
    a new one moves its room's ``last_seq`` / ``last_message_at``."""

    def __init__(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> None:
        super().__init__(schema, source, events, carry)
        self.rooms = Rows(_ROOMS, carry.rooms if carry else None, cumulative=True)
        self.messages = Rows(_MESSAGES, carry.messages if carry else None)
        # (room, seq) taken: by the messages this page and the one before know
        self.seqs: dict[tuple[int, int], None] = {}
        self._seqs_wanted: dict[tuple[int, int], dict[str, Any]] = {}
        previous: dict[tuple[int, int], None] = carry.seqs if carry else {}
        for e in events:
            if e.type == "Room.Created":
                self.rooms.want(e.originator_id.int, e.originator_id)
            elif e.type == "Room.MessageSent":
                room, mid, seq = e.originator_id, e.data["message_id"], e.data["seq"]
                self.rooms.want(room.int, room)
                self.messages.want(mid.int, mid)
                taken = (room.int, seq)
                if taken in previous:
                    self.seqs[taken] = None
                else:
                    self._seqs_wanted[taken] = {"r": room, "s": seq}

    def load(self, conn: psycopg.Connection[Any]) -> None:
        s = self.schema
        with conn.pipeline():
            rooms = self.rooms.load_by(conn, s, "id")
            messages = self.messages.load_by(conn, s, "message_id")
            taken = None
            if self._seqs_wanted:
                taken = conn.cursor(row_factory=dict_row)
                taken.execute(
                    sql.SQL(_TAKEN_SEQS).format(s=s), (as_json(list(self._seqs_wanted.values())),)
                )
        self.rooms.loaded(rooms)
        self.messages.loaded(messages)
        if taken is not None:
            for row in taken.fetchall():
                self.seqs[(row["room_id"].int, row["seq"])] = None
            taken.close()

    def fold(self) -> None:
        for e in self.events:
            d = e.data
            if e.type == "Room.Created":
                k = e.originator_id.int
                if k not in self.rooms:  # ON CONFLICT (id) DO NOTHING
                    self.rooms.insert(
                        k,
                        {
                            "id": e.originator_id,
                            "name": d["name"],
                            "title": d["title"],
                            "created_at": e.timestamp,
                            "last_seq": 0,
                            "last_message_at": None,
                        },
                    )
            elif e.type == "Room.MessageSent":
                room, mid, seq = e.originator_id, d["message_id"], d["seq"]
                taken = (room.int, seq)
                if mid.int in self.messages or taken in self.seqs:
                    continue  # ON CONFLICT DO NOTHING
                self.messages.insert(
                    mid.int,
                    {
                        "room_id": room,
                        "seq": seq,
                        "message_id": mid,
                        "sender_id": d["sender_id"],
                        "text": d["text"],
                        "client_msg_id": d["client_msg_id"],
                        "at": e.timestamp,
                        "media": None if d.get("media") is None else dict(d["media"]),
                    },
                )
                self.seqs[taken] = None
                if (row := self.rooms.change(room.int)) is not None:
                    row["last_seq"] = max(row["last_seq"], seq)
                    row["last_message_at"] = e.timestamp

    def statements(self) -> list[Statement]:
        return [*self.rooms.statements(self.schema), *self.messages.statements(self.schema)]

    def remember(self) -> None:
        self.rooms.remember()

    def remembered(self) -> int:
        return len(self.rooms.carried) + len(self.messages.rows) + len(self.seqs)


_ROOM_PICTURE = PICTURE_VIEW_SQL.format(m="p")
_ROOM_PICTURE = (
    "(SELECT "
    + _ROOM_PICTURE
    + " FROM (SELECT CASE WHEN m.media IS NOT NULL AND EXISTS (SELECT 1 FROM public.media x "
    "WHERE x.id = m.media->>'id' AND x.removed_at IS NOT NULL) "
    "THEN m.media || '{{\"removed\": true}}'::jsonb ELSE m.media END AS media) p)"
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
        first, with the sender's ``sender_nickname`` / ``sender_avatar_url`` (from the shelf)
        and ``media``, a picture view or ``None`` (``projections.media``; ``removed`` when
        the picture was taken down since); ``next_before`` is the ``before_seq`` of the
        next (older) page or ``None``."""
        params: list[Any] = [room_id]
        where = "m.room_id = %s"
        if before_seq is not None:
            where += " AND m.seq < %s"
            params.append(before_seq)
        params.append(limit + 1)
        rows = self._all(
            "SELECT m.room_id, m.seq, m.message_id, m.sender_id, m.text, m.client_msg_id, m.at, "
            "r.nickname AS sender_nickname, r.avatar_url AS sender_avatar_url, "
            + _ROOM_PICTURE
            + " AS media FROM {}.messages m LEFT JOIN shelf.readers r ON r.id = m.sender_id "
            f"WHERE {where} ORDER BY m.seq DESC LIMIT %s",
            params,
        )
        next_before = int(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return rows[:limit], next_before

    def messages_with_picture(self, media_id: str) -> dict[str, list[UUID]]:
        """The messages showing picture ``media_id``, by room name (oldest first)."""
        rows = self._all(
            "SELECT r.name, m.message_id FROM {0}.messages m JOIN {0}.rooms r ON r.id = m.room_id "
            "WHERE m.media IS NOT NULL AND m.media->>'id' = %s ORDER BY r.name, m.seq",
            (media_id,),
        )
        found: dict[str, list[UUID]] = {}
        for row in rows:
            found.setdefault(row["name"], []).append(row["message_id"])
        return found


__all__ = ["DDL", "RoomQueries", "RoomsPage", "RoomsProjection"]
