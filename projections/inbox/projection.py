"""``InboxProjection``: the Library and Chat logs → the inbox read model (``model``).

Event by event (``apply``: one or two statements an event, the reference for what each event
does to the tables) or a page at a time (``fold_page``, which hands the page to ``page``'s
``InboxPage``). ``deliver`` appends an item to readers' feeds, each with the next ``seq`` of
its reader. After each committed page the projection tells its ``listeners`` and hands the
page's items to its ``item_listeners`` (the realtime relay), from memory when it can.
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

from projections.batch import Page
from projections.inbox.model import (
    DDL,
    ENDED,
    LOAN_KINDS,
    as_uuid,
    clear_contact,
    scrub_forgotten,
)
from projections.inbox.page import InboxPage
from projections.media import PICTURE_VIEW_SQL, picture_view
from projections.read_model import Cursor, ReadModelProjection
from projections.records import event_type

log = logging.getLogger(__name__)

Listener = Callable[[str, int, int], None]
"""``listener(source, first, last)``: a page of ``source`` positions [first, last] committed."""

ItemListener = Callable[[str, int, int, "Sequence[dict[str, Any]] | None"], None]
"""``listener(source, first, last, items)``: a page of ``source`` positions [first, last]
committed, with the items it made (``InboxQueries.items_for_positions``' shape and order),
or ``None`` when they are not known in memory (then read them from the database)."""

REQUESTED_LIMIT = 100_000
"""Open loans (with a contact) whose request item's position a version remembers; above,
it starts afresh (a loan it forgot has its contact cleared by the lender's items)."""

STASH_PAGES = 16
"""Folded pages of a source kept for ``item_listeners`` until their commit is announced."""


class _Folded(NamedTuple):
    """A folded page's items, kept until the runner announces its commit."""

    schema: str
    first: int  # position of its first event decoded (>= the page's first position)
    last: int  # position of its last row
    items: list[tuple[Any, ...]]  # ``model.ITEMS`` columns (``data``: jsonb binary)

    def overlaps(self, other: _Folded) -> bool:
        return self.schema == other.schema and self.first <= other.last and other.first <= self.last


def _json(value: Any) -> Jsonb:
    """A jsonb parameter encoded by msgspec (UUIDs and datetimes become strings)."""
    return Jsonb(value, dumps=msgspec.json.encode)


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
    unique = list(dict.fromkeys(as_uuid(r) for r in readers))
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
    tables = (
        "heads",
        "items",
        "readers",
        "books",
        "loans",
        "conversations",
        "messages",
        "removed_media",
    )
    records = True
    batch_min = 1  # a live page of one event is folded too: its items reach item_listeners
    deferred_indexes = ("conversations_reader_idx",)

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.item_listeners: list[ItemListener] = []
        self._folded: dict[str, list[_Folded]] = {}
        self._folded_lock = threading.Lock()
        # schema -> the ``InboxPage.requested_before`` of its Library pages, kept across
        # the runner's fresh starts (an ended loan's contact is then cleared by position)
        self._requested_at: dict[str, dict[int, tuple[UUID, int]]] = {}
        self._handlers: dict[str, Callable[[Cursor, sql.Identifier, str, int, Any], None]] = {
            "Reader.Registered": self._registered,
            "Reader.ProfileChanged": self._profile_changed,
            "Reader.Forgotten": self._forgotten,
            "Book.Published": self._published,
            "Book.DetailsRevised": self._revised,
            "Loan.Requested": self._requested,
            "Conversation.Opened": self._opened,
            "Conversation.MessageSent": self._message_sent,
            "Conversation.MessagesRead": self._messages_read,
            "Conversation.MessageHidden": self._message_hidden,
            "Media.Removed": self._media_removed,
        }
        for name in LOAN_KINDS:
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

    def fold_page(  # type: ignore[override]
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> Page | None:
        """The page folded in memory (``projections.inbox.page``): the same rows as
        ``apply`` event by event, in a few statements. ``None`` (event by event) for a page
        holding a ``Media.Removed`` or a ``Reader.Forgotten`` (rare; the next page starts
        afresh)."""
        if any(e.type in ("Media.Removed", "Reader.Forgotten") for e in events):
            return None
        requested = None
        if source == "library":
            name = schema.as_string(None)
            requested = self._requested_at.get(name)
            if requested is None or len(requested) > REQUESTED_LIMIT:
                requested = self._requested_at[name] = {}
        page = InboxPage(schema, source, events, carry, requested_before=requested)
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
            page.schema.as_string(None),
            page.events[0].position,
            page.events[-1].position,
            page.items,
        )
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
            {
                "reader_id": reader,
                "seq": seq,
                "kind": kind,
                "at": at,
                "data": decode(memoryview(data)[1:]),
                "source": src,
                "position": position,
            }
            for reader, seq, kind, at, data, src, position in found[0].items
        ]
        items.sort(key=_position_seq)  # as ``items_for_positions`` orders them
        return items

    def after_commit(self, source: str, first: int, last: int) -> None:
        for listener in list(self.listeners):
            try:
                listener(source, first, last)
            except Exception:
                log.exception(
                    "inbox listener %r failed on %s [%s, %s]", listener, source, first, last
                )
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
                log.exception(
                    "inbox listener %r failed on %s [%s, %s]", item_listener, source, first, last
                )

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

    def _forgotten(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        """The reader's nickname and avatar become the neutral ones in the lookup and in
        every item and last message that shows them; the contact and note of their loan
        requests leave the lenders' items (``scrub_forgotten``)."""
        for statement, params in scrub_forgotten(s, e.originator_id):
            cur.execute(statement, params)

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
            "borrower": {
                "id": row["borrower_id"],
                "nickname": row["bo_nickname"] or "",
                "avatar_url": row["bo_avatar"] or "",
            },
            "lender": {
                "id": row["lender_id"],
                "nickname": row["le_nickname"] or "",
                "avatar_url": row["le_avatar"] or "",
            },
        }

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
        kind, status, roles = LOAN_KINDS[event_type(e)]
        data = self._loan_fields(cur, s, e.originator_id, status)
        if status == "declined":
            data["reason"] = getattr(e, "reason", "") or ""
        readers = [data[role]["id"] for role in roles]
        deliver(cur, s, readers, kind, e.timestamp, data, src, pos)
        if status in ENDED:
            statement, params = clear_contact(s, data["lender"]["id"], e.originator_id)
            cur.execute(statement, params)

    # -- chat -----------------------------------------------------------------------------

    def _opened(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        a, b = (as_uuid(m) for m in e.members)
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.conversations (reader_id, conversation_id, peer_id, loan_id, "
                "opened_at, updated_at, activity) VALUES (%s, %s, %s, %s, %s, %s, %s), "
                "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            ).format(s),
            (
                a,
                e.originator_id,
                b,
                e.loan_id,
                e.timestamp,
                e.timestamp,
                pos,
                b,
                e.originator_id,
                a,
                e.loan_id,
                e.timestamp,
                e.timestamp,
                pos,
            ),
        )

    def _message_sent(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        media = getattr(e, "media", None)  # events before pictures have none
        if media is not None:
            cur.execute(
                sql.SQL("SELECT 1 FROM {}.removed_media WHERE media_id = %s").format(s),
                (media["id"],),
            )
            if cur.fetchone() is not None:  # taken down before this was projected
                media = {**dict(media), "removed": True}
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.messages (conversation_id, seq, message_id, sender_id, text, "
                "client_msg_id, at, media) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (message_id) DO NOTHING RETURNING seq"
            ).format(s),
            (
                e.originator_id,
                e.seq,
                e.message_id,
                e.sender_id,
                e.text,
                e.client_msg_id,
                e.timestamp,
                None if media is None else _json(dict(media)),
            ),
        )
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
            "sender": {
                "id": e.sender_id,
                "nickname": sender.get("nickname") or "",
                "avatar_url": sender.get("avatar_url") or "",
            },
            "text": e.text,
            "client_msg_id": e.client_msg_id,
            "at": e.timestamp,
            "media": picture_view(media),
        }
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
        data = {"conversation_id": e.originator_id, "reader_id": e.reader_id, "up_to": e.up_to_seq}
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
                "    to_char(m.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
                "    'media', " + PICTURE_VIEW_SQL.format(m="m") + ") "
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

    # -- pictures ---------------------------------------------------------------------------

    def _media_removed(self, cur: Cursor, s: sql.Identifier, src: str, pos: int, e: Any) -> None:
        """A picture was taken down: every message showing it shows a placeholder (its
        ``media`` gets ``removed: true``, and so does a conversation's last message), and
        each member of such a conversation gets one ``media.removed`` item listing the
        messages of theirs that showed it."""
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.removed_media (media_id, reason) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING"
            ).format(s),
            (e.media_id, e.reason),
        )
        cur.execute(
            sql.SQL(
                "UPDATE {}.messages SET media = media || '{{\"removed\": true}}'::jsonb "
                "WHERE media->>'id' = %s AND media IS NOT NULL "
                "AND NOT coalesce((media->>'removed')::boolean, false) "
                "RETURNING conversation_id, message_id, seq"
            ).format(s),
            (e.media_id,),
        )
        changed = cur.fetchall()
        seen: dict[UUID, list[dict[str, Any]]] = {}
        for row in sorted(changed, key=lambda r: (str(r["conversation_id"]), r["seq"])):
            cur.execute(
                sql.SQL(
                    "UPDATE {}.conversations SET last_message = jsonb_set(last_message, "
                    "'{{media}}', (last_message->'media') || %s::jsonb) "
                    "WHERE conversation_id = %s AND (last_message->>'message_id') = %s "
                    "AND jsonb_typeof(last_message->'media') = 'object'"
                ).format(s),
                (_PLACEHOLDER, row["conversation_id"], str(row["message_id"])),
            )
            cur.execute(
                sql.SQL(
                    "SELECT reader_id FROM {}.conversations WHERE conversation_id = %s "
                    "ORDER BY reader_id"
                ).format(s),
                (row["conversation_id"],),
            )
            for member in cur.fetchall():
                seen.setdefault(member["reader_id"], []).append(
                    {"conversation_id": row["conversation_id"], "message_id": row["message_id"]}
                )
        for reader, messages in seen.items():
            data = {"media_id": e.media_id, "reason": e.reason, "messages": messages}
            deliver(cur, s, [reader], "media.removed", e.timestamp, data, src, pos)


_PLACEHOLDER = '{"url": null, "thumb_url": null, "removed": true}'


def _position_seq(item: dict[str, Any]) -> tuple[int, int]:
    return item["position"], item["seq"]


__all__ = ["InboxProjection", "ItemListener", "Listener", "STASH_PAGES", "deliver"]
