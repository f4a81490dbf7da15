"""The inbox read model: each reader's ordered feed, conversations and message history.

Written only by ``InboxProjection`` (from the Library **and** the Chat logs); read only through
``InboxQueries`` (views in schema ``inbox``, or the schema named after a test projection).

Tables (in each version's schema, exposed as views ``inbox.<table>``)::

    heads(reader_id pk, seq)                 the last seq given to each reader
    items(reader_id, seq, kind, at, data jsonb, source, position)
        PRIMARY KEY (reader_id, seq), UNIQUE (source, position, reader_id)
    conversations(reader_id, conversation_id, peer_id, loan_id, last_message jsonb,
                  last_seq, read_up_to, unread, opened_at, updated_at, activity)
        PRIMARY KEY (reader_id, conversation_id): one row per member
    messages(conversation_id, seq, message_id unique, sender_id, text, client_msg_id, at,
             hidden_for uuid[])               PRIMARY KEY (conversation_id, seq)
    readers(id, nickname, avatar_url), books(id, owner_id, title),
    loans(id, book_id, borrower_id, lender_id)
                                              lookups fed by Library events, so this
                                              projection needs no other read model

Per-reader ``seq``
    1, 2, 3… without gaps: every item takes ``heads.seq + 1`` of its reader in the same
    statement that inserts it (``INSERT … ON CONFLICT DO UPDATE … RETURNING``), inside the
    page's transaction, and only one runner writes a projection at a time (advisory lock).
    ``(source, position)`` says which log event made an item (a relay publishes by it).

Item kinds and recipients (``data`` shapes; ids are strings, times ISO 8601 UTC)::

    loan.requested   lender             loan fields + note, contact (personal data: the
                                         lender of that loan only)
    loan.approved    borrower           loan fields
    loan.declined    borrower           loan fields + reason
    loan.cancelled   borrower, lender   loan fields (the borrower cancelled)
    loan.returning   lender             loan fields (the borrower says it is back)
    loan.returned    borrower           loan fields (the lender confirmed)
    chat.message     both members       conversation_id, message_id, seq, text,
                     (the sender too:   client_msg_id, at, sender {id, nickname, avatar_url}
                     their other devices)
    chat.read        both members       conversation_id, reader_id, up_to (the reader's own
                                         devices clear their badge; the peer sees a receipt)
    chat.hidden      the hiding reader  conversation_id, message_id (their other devices)

    loan fields: loan_id, status, book {id, title},
                 borrower {id, nickname, avatar_url}, lender {id, nickname, avatar_url}

Chat messages
    ``message_id`` is unique: a retried send beyond the aggregate's window (a second
    ``MessageSent`` with the same id and a new seq) is ignored here, so it neither shows twice
    nor makes an inbox item. ``unread`` counts the peer's messages after the reader's
    ``read_up_to`` that are not hidden for them; ``MessagesRead`` and ``MessageHidden`` lower
    it. A hidden message disappears from that reader's history and last message only.

Rooms are not in the inbox (``Room.*`` events are ignored here).

Rebuild caveat: a rebuild replays the Library log and then the Chat log page by page, so
items of the two logs may interleave differently than when they were live: a rebuilt version
numbers a reader's items in another order (still gap-free). Clients whose last seen ``seq``
is above the new head must resynchronise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from domain.chat import message_id_for
from projections.batch import Page
from projections.read_model import Cursor, ReadModelProjection
from projections.records import event_type
from projections.shelf import decode_cursor, encode_cursor

log = logging.getLogger(__name__)

DDL = """
CREATE TABLE {schema}.heads (
    reader_id uuid PRIMARY KEY,
    seq bigint NOT NULL
);
CREATE TABLE {schema}.items (
    reader_id uuid NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    data jsonb NOT NULL,
    source text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (reader_id, seq),
    UNIQUE (source, position, reader_id)
);
CREATE TABLE {schema}.readers (
    id uuid PRIMARY KEY,
    nickname text NOT NULL,
    avatar_url text NOT NULL DEFAULT ''
);
CREATE TABLE {schema}.books (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    title text NOT NULL
);
CREATE TABLE {schema}.loans (
    id uuid PRIMARY KEY,
    book_id uuid NOT NULL,
    borrower_id uuid NOT NULL,
    lender_id uuid NOT NULL
);
CREATE TABLE {schema}.conversations (
    reader_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    peer_id uuid NOT NULL,
    loan_id uuid,
    last_message jsonb,
    last_seq bigint NOT NULL DEFAULT 0,
    read_up_to bigint NOT NULL DEFAULT 0,
    unread integer NOT NULL DEFAULT 0,
    opened_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    activity bigint NOT NULL,
    PRIMARY KEY (reader_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS conversations_reader_idx
    ON {schema}.conversations (reader_id, activity DESC);
CREATE INDEX IF NOT EXISTS conversations_conversation_idx
    ON {schema}.conversations (conversation_id);
CREATE TABLE {schema}.messages (
    conversation_id uuid NOT NULL,
    seq bigint NOT NULL,
    message_id uuid NOT NULL UNIQUE,
    sender_id uuid NOT NULL,
    text text NOT NULL,
    client_msg_id text NOT NULL,
    at timestamptz NOT NULL,
    hidden_for uuid[] NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (conversation_id, seq)
);
"""

Listener = Callable[[str, int, int], None]
"""``listener(source, first, last)``: a page of ``source`` positions [first, last] committed."""

ItemListener = Callable[[str, int, int, "Sequence[dict[str, Any]] | None"], None]
"""``listener(source, first, last, items)``: a page of ``source`` positions [first, last]
committed, with the items it made (``InboxQueries.items_for_positions``' shape and order),
or ``None`` when they are not known in memory (then read them from the database)."""

STASH_PAGES = 16
"""Folded pages of a source kept for ``item_listeners`` until their commit is announced."""


class _Folded(NamedTuple):
    """A folded page's items, kept until the runner announces its commit."""

    schema: str
    first: int  # position of its first event decoded (>= the page's first position)
    last: int  # position of its last row
    items: list[tuple[Any, ...]]  # ``inbox_page.ITEMS`` columns (``data``: jsonb binary)

    def overlaps(self, other: _Folded) -> bool:
        return self.schema == other.schema and self.first <= other.last and other.first <= self.last


_LOAN_KINDS = {
    # event: (kind, status, recipients)
    "Loan.Approved": ("loan.approved", "approved", ("borrower",)),
    "Loan.Declined": ("loan.declined", "declined", ("borrower",)),
    "Loan.Cancelled": ("loan.cancelled", "cancelled", ("borrower", "lender")),
    "Loan.ReturnStarted": ("loan.returning", "returning", ("lender",)),
    "Loan.ReturnConfirmed": ("loan.returned", "returned", ("borrower",)),
}


def _json(value: Any) -> Jsonb:
    """A jsonb parameter encoded by msgspec (UUIDs and datetimes become strings)."""
    return Jsonb(value, dumps=msgspec.json.encode)


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def deliver(
    cur: Cursor,
    s: sql.Identifier,
    readers: Iterable[UUID],
    kind: str,
    at: datetime,
    data: dict[str, Any],
    source: str,
    position: int,
) -> None:
    """Append one item to the feed of each of ``readers`` (duplicates ignored), each with
    the next seq of its reader, in one statement."""
    unique = list(dict.fromkeys(_uuid(r) for r in readers))
    if not unique:
        return
    cur.execute(
        sql.SQL(
            "WITH h AS (INSERT INTO {0}.heads AS hd (reader_id, seq) "
            "SELECT r, 1 FROM unnest(%s::uuid[]) AS r "
            "ON CONFLICT (reader_id) DO UPDATE SET seq = hd.seq + 1 RETURNING reader_id, seq) "
            "INSERT INTO {0}.items (reader_id, seq, kind, at, data, source, position) "
            "SELECT reader_id, seq, %s, %s, %s, %s, %s FROM h"
        ).format(s),
        (unique, kind, at, _json(data), source, position),
    )


class InboxProjection(ReadModelProjection):
    """Library + Chat logs → each reader's feed (``items``, ``heads``), ``conversations``,
    ``messages`` and the small lookups those need.

    ``listeners``: callables ``(source, first, last)`` run (in the runner's thread, in
    order) after each committed page; a failing listener is logged and does not stop the
    others or the projection. ``item_listeners``: callables ``(source, first, last, items)``
    run after those, with the items the page made when the page was folded in memory here
    (``fold_page``) and that fold is what committed, else ``None`` (read them with
    ``InboxQueries.items_for_positions``). The realtime relay registers there.

    How the items of a committed page are known: while ``item_listeners`` is not empty,
    each folded page leaves its items here (at most ``STASH_PAGES`` a source) once folded;
    ``after_commit(source, first, last)`` takes the page of exactly that ``last`` position
    (and events within ``first..last``). A later fold of an overlapping range of the same
    version replaces it, and ``apply`` of one of its events (a page written event by event,
    e.g. after its folded write failed) drops every kept page holding it, whatever the
    version: so the items handed over are those of the write that committed, and anything
    uncertain (two versions folding the same range, as a rebuild in the same process may)
    falls back to ``None``."""

    name = "inbox"
    sources = ("library", "chat")
    ddl = DDL
    tables = ("heads", "items", "readers", "books", "loans", "conversations", "messages")
    records = True
    batch_min = 1  # a live page of one event is folded too: its items reach item_listeners
    deferred_indexes = ("conversations_reader_idx",)

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.item_listeners: list[ItemListener] = []
        self._folded: dict[str, list[_Folded]] = {}
        self._folded_lock = threading.Lock()
        self._handlers: dict[str, Callable[[Cursor, sql.Identifier, str, int, Any], None]] = {
            "Reader.Registered": self._registered,
            "Reader.ProfileChanged": self._profile_changed,
            "Book.Published": self._published,
            "Book.DetailsRevised": self._revised,
            "Loan.Requested": self._requested,
            "Conversation.Opened": self._opened,
            "Conversation.MessageSent": self._message_sent,
            "Conversation.MessagesRead": self._messages_read,
            "Conversation.MessageHidden": self._message_hidden,
        }
        for name in _LOAN_KINDS:
            self._handlers[name] = self._loan_changed

    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        if self._folded:  # this event is written one by one: no kept page of it committed
            self._forget(None, source, position, position)
        handler = self._handlers.get(event_type(event))
        if handler is not None:
            handler(cur, schema, source, position, event)

    @property
    def event_types(self) -> frozenset[str]:  # type: ignore[override]
        """It ignores ``Book.Lent`` / ``Returned`` / ``Withdrawn`` / ``Relisted`` and the
        rooms' events: those are not even decoded."""
        return frozenset(self._handlers)

    def fold_page(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> Page:
        """The page folded in memory (``projections.inbox_page``): the same rows as
        ``apply`` event by event, in a few statements."""
        from projections.inbox_page import InboxPage

        page = InboxPage(schema, source, events, carry)
        if events and (self.item_listeners or self._folded):
            self._forget(schema.as_string(None), source, events[0].position, events[-1].position)
            if self.item_listeners:
                page.on_statements = self._keep
        return page

    # -- items of committed pages, for ``item_listeners`` ---------------------------------

    def _keep(self, page: Any) -> None:
        """``InboxPage.on_statements``: the page is folded and its writes are encoded."""
        if not page.events:
            return
        folded = _Folded(
            page.schema.as_string(None), page.events[0].position, page.events[-1].position,
            page.items,
        )  # fmt: skip
        with self._folded_lock:
            pages = self._folded.setdefault(page.source, [])
            pages[:] = [p for p in pages if not folded.overlaps(p)]
            pages.append(folded)
            del pages[:-STASH_PAGES]

    def _forget(self, schema: str | None, source: str, first: int, last: int) -> None:
        """Drop the kept pages of ``source`` in ``schema`` (``None``: any) that overlap
        ``first..last``."""
        with self._folded_lock:
            pages = self._folded.get(source)
            if pages:
                pages[:] = [
                    p
                    for p in pages
                    if (schema is not None and p.schema != schema)
                    or p.last < first
                    or p.first > last
                ]

    def _committed_items(self, source: str, first: int, last: int) -> list[dict[str, Any]] | None:
        """The items of the kept page that committed as ``first..last`` (and forget every
        kept page up to ``last``), or ``None``."""
        with self._folded_lock:
            pages = self._folded.get(source)
            if not pages:
                return None
            found = [p for p in pages if p.last == last and p.first >= first]
            pages[:] = [p for p in pages if p.last > last]
        if len(found) != 1:
            return None  # not folded here, or ambiguous (two versions folded that range)
        decode = msgspec.json.decode
        items = [
            {"reader_id": reader, "seq": seq, "kind": kind, "at": at,
             "data": decode(memoryview(data)[1:]),
             "source": src, "position": position}
            for reader, seq, kind, at, data, src, position in found[0].items
        ]  # fmt: skip
        items.sort(key=_position_seq)  # as ``items_for_positions`` orders them
        return items

    def after_commit(self, source: str, first: int, last: int) -> None:
        for listener in list(self.listeners):
            try:
                listener(source, first, last)
            except Exception:
                log.exception("inbox listener %r failed on %s [%s, %s]", listener, source,
                              first, last)  # fmt: skip
        item_listeners = list(self.item_listeners)
        if not item_listeners:
            if self._folded:
                with self._folded_lock:
                    self._folded.clear()
            return
        try:
            items = self._committed_items(source, first, last)
        except Exception:
            log.exception("inbox: items of %s [%s, %s] not handed over", source, first, last)
            items = None
        for item_listener in item_listeners:
            try:
                item_listener(source, first, last, items)
            except Exception:
                log.exception("inbox listener %r failed on %s [%s, %s]", item_listener,
                              source, first, last)  # fmt: skip

    # -- library lookups ------------------------------------------------------------------

    def _registered(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.readers (id, nickname, avatar_url) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING"
            ).format(s),
            (e.originator_id, e.nickname, e.avatar_url),
        )

    def _profile_changed(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL("UPDATE {}.readers SET nickname = %s, avatar_url = %s WHERE id = %s").format(s),
            (e.nickname, e.avatar_url, e.originator_id),
        )

    def _published(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.books (id, owner_id, title) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING"
            ).format(s),
            (e.originator_id, e.owner_id, e.title),
        )

    def _revised(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        title = (e.changes or {}).get("title")
        if title:
            cur.execute(
                sql.SQL("UPDATE {}.books SET title = %s WHERE id = %s").format(s),
                (title, e.originator_id),
            )

    # -- loans ----------------------------------------------------------------------------

    def _loan_fields(
        self, cur: Cursor, s: sql.Identifier, loan_id: UUID, status: str
    ) -> dict[str, Any]:
        cur.execute(
            sql.SQL(
                "SELECT l.book_id, l.borrower_id, l.lender_id, b.title, "
                "bo.nickname AS bo_nickname, bo.avatar_url AS bo_avatar, "
                "le.nickname AS le_nickname, le.avatar_url AS le_avatar "
                "FROM {0}.loans l LEFT JOIN {0}.books b ON b.id = l.book_id "
                "LEFT JOIN {0}.readers bo ON bo.id = l.borrower_id "
                "LEFT JOIN {0}.readers le ON le.id = l.lender_id WHERE l.id = %s"
            ).format(s),
            (loan_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"inbox: loan {loan_id} has no Loan.Requested before it")
        return {
            "loan_id": loan_id,
            "status": status,
            "book": {"id": row["book_id"], "title": row["title"] or ""},
            "borrower": {"id": row["borrower_id"], "nickname": row["bo_nickname"] or "",
                         "avatar_url": row["bo_avatar"] or ""},
            "lender": {"id": row["lender_id"], "nickname": row["le_nickname"] or "",
                       "avatar_url": row["le_avatar"] or ""},
        }  # fmt: skip

    def _requested(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.loans (id, book_id, borrower_id, lender_id) VALUES (%s, %s, %s, %s)"
            ).format(s),
            (e.originator_id, e.book_id, e.borrower_id, e.lender_id),
        )
        data = self._loan_fields(cur, s, e.originator_id, "requested")
        data["note"] = e.note or ""
        data["contact"] = dict(e.contact) if e.contact else None
        deliver(cur, s, [e.lender_id], "loan.requested", e.timestamp, data, src, pos)

    def _loan_changed(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        kind, status, roles = _LOAN_KINDS[event_type(e)]
        data = self._loan_fields(cur, s, e.originator_id, status)
        if status == "declined":
            data["reason"] = getattr(e, "reason", "") or ""
        readers = [data[role]["id"] for role in roles]
        deliver(cur, s, readers, kind, e.timestamp, data, src, pos)

    # -- chat -----------------------------------------------------------------------------

    def _opened(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        a, b = (_uuid(m) for m in e.members)
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.conversations (reader_id, conversation_id, peer_id, loan_id, "
                "opened_at, updated_at, activity) VALUES (%s, %s, %s, %s, %s, %s, %s), "
                "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(s),
            (a, e.originator_id, b, e.loan_id, e.timestamp, e.timestamp, pos,
             b, e.originator_id, a, e.loan_id, e.timestamp, e.timestamp, pos),
        )  # fmt: skip

    def _message_sent(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.messages (conversation_id, seq, message_id, sender_id, text, "
                "client_msg_id, at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (message_id) DO NOTHING RETURNING seq"
            ).format(s),
            (e.originator_id, e.seq, e.message_id, e.sender_id, e.text, e.client_msg_id,
             e.timestamp),
        )  # fmt: skip
        if cur.fetchone() is None:
            return  # a retry beyond the aggregate's window: the first message stands
        cur.execute(
            sql.SQL("SELECT nickname, avatar_url FROM {}.readers WHERE id = %s").format(s),
            (e.sender_id,),
        )
        sender = cur.fetchone() or {}
        message = {
            "conversation_id": e.originator_id,
            "message_id": e.message_id,
            "seq": e.seq,
            "sender": {"id": e.sender_id, "nickname": sender.get("nickname") or "",
                       "avatar_url": sender.get("avatar_url") or ""},
            "text": e.text,
            "client_msg_id": e.client_msg_id,
            "at": e.timestamp,
        }  # fmt: skip
        cur.execute(
            sql.SQL(
                "UPDATE {}.conversations SET last_message = %s, last_seq = %s, "
                "updated_at = %s, activity = %s, "
                "unread = unread + CASE WHEN reader_id <> %s THEN 1 ELSE 0 END "
                "WHERE conversation_id = %s RETURNING reader_id"
            ).format(s),
            (_json(message), e.seq, e.timestamp, pos, e.sender_id, e.originator_id),
        )
        members = [row["reader_id"] for row in cur.fetchall()]
        if not members:
            raise LookupError(f"inbox: conversation {e.originator_id} was never opened")
        deliver(cur, s, members, "chat.message", e.timestamp, message, src, pos)

    def _messages_read(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "UPDATE {0}.conversations c SET read_up_to = greatest(c.read_up_to, %s), "
                "unread = (SELECT count(*) FROM {0}.messages m "
                "  WHERE m.conversation_id = c.conversation_id "
                "  AND m.seq > greatest(c.read_up_to, %s) AND m.sender_id <> c.reader_id "
                "  AND NOT c.reader_id = ANY(m.hidden_for)) "
                "WHERE c.reader_id = %s AND c.conversation_id = %s RETURNING c.peer_id"
            ).format(s),
            (e.up_to_seq, e.up_to_seq, e.reader_id, e.originator_id),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"inbox: conversation {e.originator_id} was never opened")
        data = {"conversation_id": e.originator_id, "reader_id": e.reader_id,
                "up_to": e.up_to_seq}  # fmt: skip
        deliver(cur, s, [e.reader_id, row["peer_id"]], "chat.read", e.timestamp, data, src, pos)

    def _message_hidden(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "UPDATE {}.messages SET hidden_for = array_append(hidden_for, %s) "
                "WHERE message_id = %s AND conversation_id = %s "
                "AND NOT (%s = ANY(hidden_for)) RETURNING seq, sender_id"
            ).format(s),
            (e.reader_id, e.message_id, e.originator_id, e.reader_id),
        )
        hidden = cur.fetchone()
        if hidden is None:
            return  # unknown or already hidden: hiding is idempotent
        # Lower unread if it was an unread message of the peer; if it was the last message
        # shown, show the newest one still visible to this reader.
        cur.execute(
            sql.SQL(
                "UPDATE {0}.conversations c SET "
                "unread = CASE WHEN %s <> c.reader_id AND %s > c.read_up_to "
                "  THEN greatest(c.unread - 1, 0) ELSE c.unread END, "
                "last_message = CASE WHEN (c.last_message->>'seq')::bigint = %s THEN ("
                "  SELECT jsonb_build_object('conversation_id', m.conversation_id, "
                "    'message_id', m.message_id, 'seq', m.seq, 'sender', jsonb_build_object("
                "      'id', m.sender_id, 'nickname', coalesce(r.nickname, ''), "
                "      'avatar_url', coalesce(r.avatar_url, '')), "
                "    'text', m.text, 'client_msg_id', m.client_msg_id, 'at', "
                "    to_char(m.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) "
                "  FROM {0}.messages m LEFT JOIN {0}.readers r ON r.id = m.sender_id "
                "  WHERE m.conversation_id = c.conversation_id "
                "  AND NOT c.reader_id = ANY(m.hidden_for) ORDER BY m.seq DESC LIMIT 1"
                ") ELSE c.last_message END "
                "WHERE c.reader_id = %s AND c.conversation_id = %s"
            ).format(s),
            (hidden["sender_id"], hidden["seq"], hidden["seq"], e.reader_id, e.originator_id),
        )
        data = {"conversation_id": e.originator_id, "message_id": e.message_id}
        deliver(cur, s, [e.reader_id], "chat.hidden", e.timestamp, data, src, pos)


def _position_seq(item: dict[str, Any]) -> tuple[int, int]:
    return item["position"], item["seq"]


# -- queries ------------------------------------------------------------------------------------


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
        "m.at, m.hidden_for, r.nickname AS sender_nickname, r.avatar_url AS sender_avatar_url "
        "FROM {0}.messages m LEFT JOIN {0}.readers r ON r.id = m.sender_id "
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


__all__ = ["DDL", "InboxProjection", "InboxQueries", "ItemListener", "Listener", "deliver"]
