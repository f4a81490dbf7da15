"""``InboxQueries``: what the API and the realtime gateway read from the inbox read model
(``model``), through the views of the active version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from domain.chat import message_id_for
from projections.media import PICTURE_VIEW_SQL
from projections.paging import decode_cursor, encode_cursor


class InboxQueries:
    """Reads of the inbox read model. Rows are dicts (``data`` / ``last_message`` as
    JSON-shaped dicts with string ids and ISO times).

    ``schema`` is the projection's name (its views' schema): ``"inbox"`` unless a test runs
    its own copy of the projection under another name."""

    def __init__(self, pool: ConnectionPool, schema: str = "inbox") -> None:
        self.pool = pool
        self.s = sql.Identifier(schema)

    def _all(self, query: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            return list(conn.execute(sql.SQL(query).format(self.s), params).fetchall())  # type: ignore[arg-type]

    def _one(self, query: str, params: Sequence[Any]) -> dict[str, Any] | None:
        rows = self._all(query, params)
        return rows[0] if rows else None

    # feed

    def items(
        self, reader_id: UUID, after: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """``(items, head)``: up to ``limit`` items of ``reader_id`` with ``seq > after``,
        oldest first (``{"seq", "kind", "at", "data"}``), and the reader's head seq (0 for
        none). ``head`` is read after the items, so ``head > last seq`` means more follow."""
        rows = self._all(
            "SELECT seq, kind, at, data FROM {}.items WHERE reader_id = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (reader_id, after, limit),
        )
        return rows, self.head(reader_id)

    def head(self, reader_id: UUID) -> int:
        """The last seq given to ``reader_id`` (0 if none)."""
        row = self._one("SELECT seq FROM {}.heads WHERE reader_id = %s", (reader_id,))
        return int(row["seq"]) if row else 0

    def unread(self, reader_id: UUID) -> int:
        """Unread messages of ``reader_id`` over all their conversations."""
        row = self._one(
            "SELECT coalesce(sum(unread), 0) AS n FROM {}.conversations WHERE reader_id = %s",
            (reader_id,),
        )
        return int(row["n"]) if row else 0

    def items_for_positions(self, source: str, first: int, last: int) -> list[dict[str, Any]]:
        """The items made by ``source`` log positions ``first..last`` (inclusive), in log
        order then seq: ``{"reader_id", "seq", "kind", "at", "data", "source", "position"}``.
        ``(reader_id, seq)`` identifies an item (dedupe key for a relay)."""
        return self._all(
            "SELECT reader_id, seq, kind, at, data, source, position FROM {}.items "
            "WHERE source = %s AND position BETWEEN %s AND %s ORDER BY position, seq",
            (source, first, last),
        )

    # conversations

    _CONVERSATION = (
        "SELECT c.conversation_id, c.reader_id, c.peer_id, c.loan_id, c.last_message, "
        "c.last_seq, c.read_up_to, c.unread, c.opened_at, c.updated_at, c.activity, "
        "p.nickname AS peer_nickname, p.avatar_url AS peer_avatar_url "
        "FROM {0}.conversations c LEFT JOIN {0}.readers p ON p.id = c.peer_id "
    )

    def conversations(
        self, reader_id: UUID, cursor: str | None = None, limit: int = 20
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The reader's conversations, most recent activity (message or opening) first, with
        peer nickname/avatar, last message, unread. Raises ``InvalidCursor``."""
        params: list[Any] = [reader_id]
        where = "c.reader_id = %s"
        if cursor:
            where += " AND c.activity < %s"
            params.append(decode_cursor(cursor))
        params.append(limit + 1)
        rows = self._all(
            self._CONVERSATION + f"WHERE {where} ORDER BY c.activity DESC LIMIT %s", params
        )
        next_cursor = encode_cursor(rows[limit - 1]["activity"]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def conversation(self, conversation_id: UUID, reader_id: UUID) -> dict[str, Any] | None:
        """The reader's row of one conversation (same shape as ``conversations``), or
        ``None`` if they are not a member or it does not exist (yet)."""
        return self._one(
            self._CONVERSATION + "WHERE c.reader_id = %s AND c.conversation_id = %s",
            (reader_id, conversation_id),
        )

    def is_member(self, conversation_id: UUID, reader_id: UUID) -> bool:
        return (
            self._one(
                "SELECT 1 AS ok FROM {}.conversations WHERE conversation_id = %s "
                "AND reader_id = %s",
                (conversation_id, reader_id),
            )
            is not None
        )

    def conversation_exists(self, conversation_id: UUID) -> bool:
        return (
            self._one(
                "SELECT 1 AS ok FROM {}.conversations WHERE conversation_id = %s LIMIT 1",
                (conversation_id,),
            )
            is not None
        )

    # messages

    _MESSAGE = (
        "SELECT m.conversation_id, m.seq, m.message_id, m.sender_id, m.text, m.client_msg_id, "
        "m.at, m.hidden_for, r.nickname AS sender_nickname, r.avatar_url AS sender_avatar_url, "
        + PICTURE_VIEW_SQL.format(m="m")
        + " AS media FROM {0}.messages m LEFT JOIN {0}.readers r ON r.id = m.sender_id "
    )

    def messages(
        self,
        conversation_id: UUID,
        reader_id: UUID,
        before_seq: int | None = None,
        limit: int = 30,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """``(rows, next_before)``: up to ``limit`` messages of the conversation with
        ``seq < before_seq`` (all if ``None``), newest first, leaving out those
        ``reader_id`` hid; ``next_before`` is the ``before_seq`` of the next (older) page, or
        ``None`` at the start. Does not check membership (``is_member``)."""
        params: list[Any] = [conversation_id, reader_id]
        where = "m.conversation_id = %s AND NOT (%s = ANY(m.hidden_for))"
        if before_seq is not None:
            where += " AND m.seq < %s"
            params.append(before_seq)
        params.append(limit + 1)
        rows = self._all(self._MESSAGE + f"WHERE {where} ORDER BY m.seq DESC LIMIT %s", params)
        next_before = int(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return rows[:limit], next_before

    def message(self, message_id: UUID) -> dict[str, Any] | None:
        return self._one(self._MESSAGE + "WHERE m.message_id = %s", (message_id,))

    def message_by_client_id(
        self, conversation_id: UUID, sender_id: UUID, client_msg_id: str
    ) -> dict[str, Any] | None:
        """The message ``sender_id`` sent as ``client_msg_id`` (its deterministic id,
        ``domain.chat.message_id_for``), hidden or not; ``None`` if not projected."""
        return self.message(message_id_for(conversation_id, sender_id, client_msg_id))


__all__ = ["InboxQueries"]
