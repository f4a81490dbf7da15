"""The inbox projection, a page at a time: ``InboxPage`` folds a page of the Library or the
Chat log over the rows it touches and writes them back set-wise (``projections.batch``).

Why one module of this size: ``InboxPage`` is one fold whose steps (planning which rows to
load, loading them in a few queries, folding each kind of event, encoding the writes) all
work on the page's in-memory row sets and on the page before it (``carry``); split by step,
every module would need all of them. What it shares with the per-event path (the tables,
``LOAN_KINDS``) is in ``model``.

It has exactly the effect of ``InboxProjection.apply`` event by event (the per-event SQL in
``projection`` is the reference; ``tests/integration/test_batched_projections.py``
compares the two on a realistic log, row for row):

- per-reader ``seq``: each item takes ``heads.seq + 1`` of its reader, in log order, in
  memory (the page loads the heads of the readers it delivers to first);
- lookups (``readers``, ``books``, ``loans``) are folded like the statements that maintain
  them (``ON CONFLICT DO NOTHING`` where those have it; a duplicate loan or a
  loan/conversation that does not exist fails as the statement fails);
- ``unread`` is a counter on the conversation row (``InboxProjection`` keeps it equal to
  the number of the peer's messages after ``read_up_to`` not hidden for the reader):
  ``MessagesRead`` lowers it by the peer's visible messages in the range it marks read
  (``seq`` in ``(old read_up_to, new read_up_to]``): none to count when the new position
  is the conversation's ``last_seq`` (it drops to 0), else one range query for the
  messages of that range (plus those of this page and the page before, in memory). So a
  read receipt never iterates a conversation's messages: its cost is that of the range it
  marks read, each message counted at most once per reader;
- a hidden message that was a reader's last message is replaced by the newest message
  still visible to them, built as the SQL ``jsonb_build_object`` builds it (``at`` as
  ``to_char(… 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')``), from memory and, for the messages the
  page does not know, one query; the messages the page before added or hid are looked up
  in it (``own``), never copied.

A Library page and a Chat page never change the same tables except ``heads``/``items``;
``readers`` (sender nicknames) only change in Library pages, so a Chat page reads them as
stored (the runner commits one log's pages before it starts the other's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projections.batch import COPY_MIN_ROWS, Copy, Page, Rows, Statement, as_json
from projections.inbox.model import (
    BOOKS,
    CONVERSATIONS,
    ENDED,
    HEADS,
    ITEMS,
    LOAN_KINDS,
    LOANS,
    MESSAGES,
    READERS,
    as_uuid,
    clear_contact,
    clear_contacts_at,
)
from projections.media import picture_view

ITEMS_COPY_TYPES = tuple("bytea" if t == "jsonb" else t for t in ITEMS.types)
"""How the items' ``COPY`` sends its values: ``data`` as the bytes of jsonb's binary
input (version 1, then the JSON text: ``_jsonb_binary``), written as they are (the server
reads a binary ``COPY`` field with the column's type, jsonb), rather than through psycopg's
jsonb dumper, a Python call a value."""

_LIBRARY_TABLE_OF = {
    kind: kind.partition(".")[0]
    for kind in (
        "Reader.Registered",
        "Reader.ProfileChanged",
        "Book.Published",
        "Book.DetailsRevised",
        "Loan.Requested",
        *LOAN_KINDS,
    )
}


def _sql(query: str, schema: sql.Identifier) -> sql.Composed:
    return sql.SQL(query).format(s=schema)


_READ_RANGE = """
SELECT conversation_id, seq, message_id, sender_id, text, client_msg_id, at, hidden_for, media
FROM {s}.messages WHERE conversation_id = %s AND seq > %s AND seq <= %s AND sender_id <> %s
"""
_MEMBERS_HEADS = """
SELECT h.reader_id, h.seq FROM json_array_elements_text(%s::json) AS k(v)
CROSS JOIN LATERAL (
    SELECT reader_id FROM {s}.conversations c WHERE c.conversation_id = k.v::uuid OFFSET 0) c
CROSS JOIN LATERAL (SELECT * FROM {s}.heads h WHERE h.reader_id = c.reader_id OFFSET 0) h
"""
_REMOVED = """
SELECT media_id FROM {s}.removed_media WHERE media_id = ANY(%s)
"""
_VISIBLE_CANDIDATES = """
SELECT m.conversation_id, m.seq, m.message_id, m.sender_id, m.text, m.client_msg_id, m.at,
       m.hidden_for, m.media, r.id AS r_id, r.nickname AS r_nickname, r.avatar_url AS r_avatar_url
FROM json_to_recordset(%s::json) AS p(c uuid, r uuid, k integer)
CROSS JOIN LATERAL (
    SELECT * FROM {s}.messages m
    WHERE m.conversation_id = p.c AND NOT p.r = ANY(m.hidden_for)
    ORDER BY m.seq DESC LIMIT p.k) m
LEFT JOIN {s}.readers r ON r.id = m.sender_id
"""


_encode = msgspec.json.Encoder().encode


def _jsonb_binary(value: Any) -> bytes:
    """``value`` as jsonb's binary input: ``b"\\x01"`` then its JSON text (msgspec: UUIDs
    and datetimes as strings)."""
    return b"\x01" + _encode(value)


def _sql_time(at: datetime) -> str:
    """``to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class InboxPage(Page):
    """A page of the Library or the Chat log for the inbox (module docstring)."""

    def __init__(
        self,
        schema: sql.Identifier,
        source: str,
        events: Sequence[Any],
        carry: Any,
        requested_before: dict[int, tuple[UUID, int]] | None = None,
    ) -> None:
        super().__init__(schema, source, events, carry)
        self.conn: psycopg.Connection[Any] | None = None
        # called with the page at the end of ``statements()`` (``InboxProjection``)
        self.on_statements: Callable[[InboxPage], None] | None = None
        c: Any = carry  # an InboxPage of the same log, or None
        self.readers: Rows = Rows(READERS, c.readers if c else None, cumulative=True)
        self.books: Rows = Rows(BOOKS, c.books if c else None, cumulative=True)
        self.loans: Rows = Rows(LOANS, c.loans if c else None, cumulative=True)
        self.heads: Rows = Rows(HEADS, c.heads if c else None, cumulative=True)
        # insert only: ITEMS' columns, in order (``data`` as ``_jsonb_binary``)
        self.items: list[tuple[Any, ...]] = []
        self.conversations: Rows = Rows(
            CONVERSATIONS, c.conversations if c else None, cumulative=True
        )
        # messages: only the page before's (it may have added or hidden some)
        self.messages: Rows = Rows(MESSAGES, c.messages if c else None)
        # conversation -> keys of its rows (all of them), in this page and in those before
        self.members: dict[int, list[tuple[int, int]]] = {}
        self.all_members: dict[int, list[tuple[int, int]]] = c.all_members if c else {}
        # conversation -> keys of the messages known (not necessarily all)
        self.by_conversation: dict[int, list[int]] = {}
        # conversation -> keys of the messages this page added or hid (the page after looks
        # them up here: they are newer than the table's until this page is written)
        self.own: dict[int, list[int]] = {}
        self._load_conversations: dict[int, UUID] = {}
        # (conversation, reader) -> [conversation, reader, hides in this page]
        self.hides: dict[tuple[int, int], list[Any]] = {}
        # book or reader key -> its JSON in loan items (ids are random UUIDs: no clash)
        self._fragments: dict[int, msgspec.Raw] = {}
        # pictures of this page's messages, and those of them taken down (``load``)
        self._pictures: set[str] = set()
        self._removed: set[str] = set()
        # (lender, loan) of the loans that ended here: contact cleared after the items
        self.ended: list[tuple[UUID, UUID]] = []
        # loan key -> (index in ``items``, data) of its loan.requested item with a contact
        self._requested: dict[int, tuple[int, dict[str, Any]]] = {}
        # loan key -> (lender, position) of its loan.requested item with a contact in a page
        # before (``requested_before``: the projection's for this version, else the carried
        # page's): an ended loan's contact is cleared there by position (``cleared``), not by
        # a search of the lender's items (``ended``). Positions are those of the log, so
        # they hold whichever write of a page committed; a stale entry (an item cleared
        # meanwhile) matches nothing.
        if requested_before is None:
            requested_before = c.requested_before if c else {}
        self.requested_before: dict[int, tuple[UUID, int]] = requested_before
        self.cleared: list[tuple[UUID, int, UUID]] = []
        if source == "library":
            self._plan_library()
        else:
            self._plan_chat()

    # -- planning -------------------------------------------------------------------------

    def _plan_library(self) -> None:
        readers: dict[int, UUID] = {}
        books: dict[int, UUID] = {}
        loans: dict[int, UUID] = {}
        heads: dict[int, UUID] = {}
        tables = {"Reader": readers, "Book": books, "Loan": loans}
        table_of = _LIBRARY_TABLE_OF
        for e in self.events:
            aggregate = table_of.get(e.type)
            if aggregate is None:
                continue
            uuid = e.originator_id
            tables[aggregate][uuid.int] = uuid
            if aggregate == "Loan" and e.type == "Loan.Requested":
                d = e.data
                book, borrower, lender = d["book_id"], d["borrower_id"], d["lender_id"]
                books[book.int] = book
                readers[borrower.int] = heads[borrower.int] = borrower
                readers[lender.int] = heads[lender.int] = lender
        self.readers.want_all(readers)
        self.books.want_all(books)
        self.loans.want_all(loans)
        self.heads.want_all(heads)

    def _want_parties(self, loan: dict[str, Any]) -> None:
        book, borrower, lender = loan["book_id"], loan["borrower_id"], loan["lender_id"]
        self.books.want(book.int, book)
        for reader in (borrower, lender):
            self.readers.want(reader.int, reader)
            self.heads.want(reader.int, reader)

    def _plan_chat(self) -> None:
        members, load, all_members = self.members, self._load_conversations, self.all_members
        messages: dict[int, UUID] = {}
        readers: dict[int, UUID] = {}
        heads: dict[int, UUID] = {}
        for e in self.events:
            kind = e.type
            if not kind.startswith("Conversation."):
                continue
            conversation = e.originator_id
            cid = conversation.int
            if cid not in members and cid not in load:
                if cid in all_members:
                    self._take_conversation(cid)
                else:
                    load[cid] = conversation
            d = e.data
            if kind == "Conversation.MessageSent":
                mid, sender = d["message_id"], d["sender_id"]
                messages[mid.int] = mid
                readers[sender.int] = sender
                if d.get("media"):
                    self._pictures.add(str(d["media"]["id"]))
            elif kind == "Conversation.MessageHidden":
                mid, reader = d["message_id"], d["reader_id"]
                messages[mid.int] = mid
                heads[reader.int] = reader
                pair = self.hides.setdefault((cid, reader.int), [conversation, reader, 0])
                pair[2] += 1
            elif kind == "Conversation.MessagesRead":
                reader = d["reader_id"]
                heads[reader.int] = reader
            elif kind == "Conversation.Opened":
                for member in d["members"]:
                    member = as_uuid(member)
                    heads[member.int] = member
        self.messages.want_all(messages)
        self.readers.want_all(readers)
        self.heads.want_all(heads)

    def _take_conversation(self, cid: int) -> None:
        """Take all rows of a conversation the pages before knew entirely."""
        keys = self.all_members[cid]
        known = self.conversations.carried
        for k in keys:
            row = known[k]
            self.conversations.rows[k] = row
            self.heads.want(row["reader_id"].int, row["reader_id"])
        self.members[cid] = list(keys)

    # -- loading ----------------------------------------------------------------------------

    def load(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        s = self.schema
        if self.source == "library":
            with conn.pipeline():
                loans = self.loans.load_by(conn, s, "id")
                readers = self.readers.load_by(conn, s, "id")
                books = self.books.load_by(conn, s, "id")
                heads = self.heads.load_by(conn, s, "reader_id")
            self.loans.loaded(loans)
            self.readers.loaded(readers)
            self.books.loaded(books)
            self.heads.loaded(heads)
            # the parties of the loans read (transitions of loans requested earlier)
            for loan in list(self.loans.rows.values()):
                self._want_parties(loan)
            if self.readers.wanted or self.books.wanted or self.heads.wanted:
                with conn.pipeline():
                    readers = self.readers.load_by(conn, s, "id")
                    books = self.books.load_by(conn, s, "id")
                    heads = self.heads.load_by(conn, s, "reader_id")
                self.readers.loaded(readers)
                self.books.loaded(books)
                self.heads.loaded(heads)
            return
        with conn.pipeline():
            conversations = members_heads = None
            if self._load_conversations:
                ids = as_json(list(self._load_conversations.values()))
                conversations = conn.cursor(row_factory=dict_row)
                conversations.execute(CONVERSATIONS.select_by(s, "conversation_id"), (ids,))
                members_heads = conn.cursor(row_factory=dict_row)
                members_heads.execute(_sql(_MEMBERS_HEADS, s), (ids,))
            visible = None
            if self.hides:
                # The messages a hide may leave as a reader's newest visible one: with k
                # hides of that reader here and in the page before, one of the k + 1 newest
                # visible in the stored state is still visible (or a newer one we know).
                carry: Any = self.carry
                earlier: dict[tuple[int, int], list[Any]] = carry.hides if carry else {}
                visible = conn.cursor(row_factory=dict_row)
                visible.execute(
                    _sql(_VISIBLE_CANDIDATES, s),
                    (
                        as_json(
                            [
                                {"c": c, "r": r, "k": n + earlier.get(pair, (0, 0, 0))[2] + 1}
                                for pair, (c, r, n) in self.hides.items()
                            ]
                        ),
                    ),
                )
            messages = self.messages.load_by(conn, s, "message_id")
            readers = self.readers.load_by(conn, s, "id")
            heads = self.heads.load_by(conn, s, "reader_id")
            removed = None
            if self._pictures:
                removed = conn.cursor(row_factory=dict_row)
                removed.execute(_sql(_REMOVED, s), (sorted(self._pictures),))
        if removed is not None:
            self._removed = {row["media_id"] for row in removed.fetchall()}
            removed.close()
        if visible is not None:
            candidates = visible.fetchall()
            visible.close()
            self.readers.loaded(
                {"id": m["r_id"], "nickname": m["r_nickname"], "avatar_url": m["r_avatar_url"]}
                for m in candidates
                if m["r_id"] is not None
            )
            self.messages.loaded(candidates)
        self.conversations.loaded(conversations)
        self.heads.loaded(members_heads)
        self.messages.loaded(messages)
        self.readers.loaded(readers)
        self.heads.loaded(heads)
        members = self.members
        heads_known, heads_carried = self.heads.rows, self.heads.carried
        for k in self.conversations.rows:
            cid = k[1]
            if cid in self._load_conversations:
                members.setdefault(cid, []).append(k)
                # a member's head the page being written created is not stored yet
                if k[0] not in heads_known and k[0] in heads_carried:
                    heads_known[k[0]] = heads_carried[k[0]]
        for cid in self._load_conversations:
            members.setdefault(cid, [])
        by_conversation = self.by_conversation
        for k, row in self.messages.rows.items():
            by_conversation.setdefault(row["conversation_id"].int, []).append(k)

    # -- folding ----------------------------------------------------------------------------

    def fold(self) -> None:
        library = self.source == "library"
        for e in self.events:
            if library:
                self._fold_library(e)
            else:
                self._fold_chat(e)
        items, before = self.items, self.requested_before
        for k, (at, _) in self._requested.items():  # still open: the pages after end them
            item = items[at]
            before[k] = (item[0], item[6])

    def _deliver(
        self, readers: Sequence[Any], kind: str, at: datetime, data: dict[str, Any], position: int
    ) -> None:
        """``projection.deliver``: one item a reader (duplicates ignored), each with the next seq
        of its reader."""
        heads, append = self.heads, self.items.append
        payload = _jsonb_binary(data)  # encoded once for every reader
        seen: set[int] = set()
        for reader in readers:
            if type(reader) is not UUID:
                reader = as_uuid(reader)
            k = reader.int
            if k in seen:
                continue
            seen.add(k)
            head = heads.change(k)
            if head is None:
                head = {"reader_id": reader, "seq": 1}
                heads.insert(k, head)
            else:
                head["seq"] += 1
            append((reader, head["seq"], kind, at, payload, self.source, position))

    # library

    def _loan_fields(self, loan_id: UUID, status: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(loan fields, loan row)``: the fields with ``book``, ``borrower`` and
        ``lender`` as JSON encoded once a page for each book and reader
        (``_fragments``, dropped when the row changes)."""
        loan = self.loans.get(loan_id.int)
        if loan is None:
            raise LookupError(f"inbox: loan {loan_id} has no Loan.Requested before it")
        fragments = self._fragments
        book_id, borrower_id, lender_id = loan["book_id"], loan["borrower_id"], loan["lender_id"]
        book = fragments.get(book_id.int)
        if book is None:
            row = self.books.get(book_id.int)
            book = fragments[book_id.int] = msgspec.Raw(
                _encode({"id": book_id, "title": (row and row["title"]) or ""})
            )
        borrower = fragments.get(borrower_id.int) or self._reader_fragment(borrower_id)
        lender = fragments.get(lender_id.int) or self._reader_fragment(lender_id)
        fields = {
            "loan_id": loan_id,
            "status": status,
            "book": book,
            "borrower": borrower,
            "lender": lender,
        }
        return fields, loan

    def _reader_fragment(self, reader_id: UUID) -> msgspec.Raw:
        row = self.readers.get(reader_id.int)
        fragment = self._fragments[reader_id.int] = msgspec.Raw(
            _encode(
                {
                    "id": reader_id,
                    "nickname": (row and row["nickname"]) or "",
                    "avatar_url": (row and row["avatar_url"]) or "",
                }
            )
        )
        return fragment

    def _fold_library(self, e: Any) -> None:  # noqa: C901
        kind = e.type
        d = e.data
        uuid = e.originator_id
        k = uuid.int
        if kind == "Reader.Registered":
            self._fragments.pop(k, None)
            if k not in self.readers:  # ON CONFLICT (id) DO NOTHING
                self.readers.insert(
                    k, {"id": uuid, "nickname": d["nickname"], "avatar_url": d["avatar_url"]}
                )
        elif kind == "Reader.ProfileChanged":
            self._fragments.pop(k, None)
            if (row := self.readers.change(k)) is not None:
                row["nickname"] = d["nickname"]
                row["avatar_url"] = d["avatar_url"]
        elif kind == "Book.Published":
            self._fragments.pop(k, None)
            if k not in self.books:  # ON CONFLICT (id) DO NOTHING
                self.books.insert(k, {"id": uuid, "owner_id": d["owner_id"], "title": d["title"]})
        elif kind == "Book.DetailsRevised":
            title = (d["changes"] or {}).get("title")
            self._fragments.pop(k, None)
            if title and (row := self.books.change(k)) is not None:
                row["title"] = title
        elif kind == "Loan.Requested":
            self.loans.insert(
                k,
                {
                    "id": uuid,
                    "book_id": d["book_id"],
                    "borrower_id": d["borrower_id"],
                    "lender_id": d["lender_id"],
                },
            )
            data, _ = self._loan_fields(uuid, "requested")
            data["note"] = d["note"] or ""
            data["contact"] = dict(d["contact"]) if d["contact"] else None
            self._deliver([d["lender_id"]], "loan.requested", e.timestamp, data, e.position)
            if data["contact"]:  # (an item a lender: one appended)
                self._requested[k] = (len(self.items) - 1, data)
        elif kind in LOAN_KINDS:
            item_kind, status, roles = LOAN_KINDS[kind]
            data, loan = self._loan_fields(uuid, status)
            if status == "declined":
                data["reason"] = d.get("reason", "") or ""
            readers = [loan[f"{role}_id"] for role in roles]
            self._deliver(readers, item_kind, e.timestamp, data, e.position)
            if status in ENDED:
                requested = self._requested.pop(k, None)
                if requested is not None:  # requested in this page: its item, unwritten
                    at, requested_data = requested
                    requested_data["contact"] = None
                    item = self.items[at]
                    self.items[at] = (*item[:4], _jsonb_binary(requested_data), *item[5:])
                elif (before := self.requested_before.pop(k, None)) is not None:
                    self.cleared.append((before[0], before[1], uuid))
                else:
                    self.ended.append((loan["lender_id"], uuid))

    # chat

    def _fold_chat(self, e: Any) -> None:
        kind = e.type
        if kind == "Conversation.Opened":
            self._opened(e)
        elif kind == "Conversation.MessageSent":
            self._message_sent(e)
        elif kind == "Conversation.MessagesRead":
            self._messages_read(e)
        elif kind == "Conversation.MessageHidden":
            self._message_hidden(e)

    def _opened(self, e: Any) -> None:
        a, b = (as_uuid(m) for m in e.data["members"])
        conversation = e.originator_id
        cid = conversation.int
        members = self.members.setdefault(cid, [])
        for reader, peer in ((a, b), (b, a)):
            k = (reader.int, cid)
            if k in self.conversations:  # ON CONFLICT DO NOTHING
                continue
            self.conversations.insert(
                k,
                {
                    "reader_id": reader,
                    "conversation_id": conversation,
                    "peer_id": peer,
                    "loan_id": e.data["loan_id"],
                    "last_message": None,
                    "last_seq": 0,
                    "read_up_to": 0,
                    "unread": 0,
                    "opened_at": e.timestamp,
                    "updated_at": e.timestamp,
                    "activity": e.position,
                },
            )
            members.append(k)

    def _message_sent(self, e: Any) -> None:
        d = e.data
        conversation = e.originator_id
        cid = conversation.int
        mid, sender, seq = d["message_id"], d["sender_id"], d["seq"]
        media = d.get("media")  # events before pictures have none
        media = None if media is None else dict(media)
        if media is not None and media["id"] in self._removed:
            media["removed"] = True  # taken down before this was projected
        if mid.int in self.messages:
            return  # a retry beyond the aggregate's window: the first message stands
        self.messages.insert(
            mid.int,
            {
                "conversation_id": conversation,
                "seq": seq,
                "message_id": mid,
                "sender_id": sender,
                "text": d["text"],
                "client_msg_id": d["client_msg_id"],
                "at": e.timestamp,
                "hidden_for": [],
                "media": media,
            },
        )
        self.by_conversation.setdefault(cid, []).append(mid.int)
        self.own.setdefault(cid, []).append(mid.int)
        who = self.readers.get(sender.int) or {}
        message = {
            "conversation_id": conversation,
            "message_id": mid,
            "seq": seq,
            "sender": {
                "id": sender,
                "nickname": who.get("nickname") or "",
                "avatar_url": who.get("avatar_url") or "",
            },
            "text": d["text"],
            "client_msg_id": d["client_msg_id"],
            "at": e.timestamp,
            "media": picture_view(media),
        }
        members = []
        for k in self.members.get(cid, ()):
            row = self.conversations.change(k)
            assert row is not None
            row["last_message"] = message
            row["last_seq"] = seq
            row["updated_at"] = e.timestamp
            row["activity"] = e.position
            if row["reader_id"] != sender:
                row["unread"] += 1
            members.append(row["reader_id"])
        if not members:
            raise LookupError(f"inbox: conversation {conversation} was never opened")
        self._deliver(members, "chat.message", e.timestamp, message, e.position)

    def _messages_read(self, e: Any) -> None:
        d = e.data
        conversation = e.originator_id
        reader, up_to = d["reader_id"], d["up_to_seq"]
        row = self.conversations.change((reader.int, conversation.int))
        if row is None:
            raise LookupError(f"inbox: conversation {conversation} was never opened")
        old = row["read_up_to"]
        if up_to is not None and up_to > old:
            row["read_up_to"] = up_to
            if up_to >= row["last_seq"]:
                row["unread"] = 0  # every message is at or before it
            elif row["unread"]:
                row["unread"] -= self._unread_between(conversation, reader, old, up_to)
        data = {"conversation_id": conversation, "reader_id": reader, "up_to": up_to}
        self._deliver([reader, row["peer_id"]], "chat.read", e.timestamp, data, e.position)

    def _unread_between(self, conversation: UUID, reader: UUID, after: int, up_to: int) -> int:
        """How many messages of the peer with ``after < seq <= up_to`` ``reader`` has not
        hidden: the stored ones (one range query; rows this page or the page before know
        are taken from memory, they are newer) and those of this page and the page before."""
        cid = conversation.int
        assert self.conn is not None
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_sql(_READ_RANGE, self.schema), (conversation, after, up_to, reader))
            stored = cur.fetchall()
        known = self.messages.rows
        by_conversation = self.by_conversation.setdefault(cid, [])
        fresh = [m["message_id"].int for m in stored if m["message_id"].int not in known]
        self.messages.loaded(stored)
        by_conversation.extend(fresh)
        carry: Any = self.carry
        candidates: dict[int, dict[str, Any]] = {}
        for k in carry.own.get(cid, ()) if carry is not None else ():
            candidates[k] = known.get(k) or carry.messages.rows[k]
        for k in by_conversation:
            candidates[k] = known[k]
        unread = 0
        for m in candidates.values():
            if (
                after < m["seq"] <= up_to
                and m["sender_id"] != reader
                and reader not in m["hidden_for"]
            ):
                unread += 1
        return unread

    def _message_hidden(self, e: Any) -> None:
        d = e.data
        conversation = e.originator_id
        cid = conversation.int
        reader, mid = d["reader_id"], d["message_id"]
        message = self.messages.get(mid.int)
        if (
            message is None
            or message["conversation_id"] != conversation
            or reader in message["hidden_for"]
        ):
            return  # unknown or already hidden: hiding is idempotent
        message = self.messages.change(mid.int)
        assert message is not None
        message["hidden_for"] = [*message["hidden_for"], reader]
        self.own.setdefault(cid, []).append(mid.int)
        row = self.conversations.change((reader.int, cid))
        if row is not None:
            seq, sender = message["seq"], message["sender_id"]
            unread = row["unread"]
            if sender != reader and seq > row["read_up_to"]:
                unread = max(unread - 1, 0)
            last = row["last_message"]
            if last is not None and last.get("seq") == seq:
                row["last_message"] = self._newest_visible(conversation, reader)
            row["unread"] = unread
        data = {"conversation_id": conversation, "message_id": mid}
        self._deliver([reader], "chat.hidden", e.timestamp, data, e.position)

    def _newest_visible(self, conversation: UUID, reader: UUID) -> dict[str, Any] | None:
        """The newest message of the conversation that ``reader`` has not hidden, shaped as
        the SQL ``jsonb_build_object`` of ``InboxProjection._message_hidden`` shapes it."""
        cid = conversation.int
        known = self.messages.rows
        carry: Any = self.carry
        rows = {k: known[k] for k in self.by_conversation.get(cid, ())}
        for k in carry.own.get(cid, ()) if carry is not None else ():
            rows.setdefault(k, known.get(k) or carry.messages.rows[k])
        candidates = [m for m in rows.values() if reader not in m["hidden_for"]]
        # the newest of them is the newest visible (``load``)
        if not candidates:
            return None
        m = max(candidates, key=lambda c: c["seq"])
        sender = self._reader(m["sender_id"])
        return {
            "conversation_id": m["conversation_id"],
            "message_id": m["message_id"],
            "seq": m["seq"],
            "sender": {
                "id": m["sender_id"],
                "nickname": sender.get("nickname") or "",
                "avatar_url": sender.get("avatar_url") or "",
            },
            "text": m["text"],
            "client_msg_id": m["client_msg_id"],
            "at": _sql_time(m["at"]),
            "media": picture_view(m.get("media")),
        }

    def _reader(self, reader: UUID) -> dict[str, Any]:
        row = self.readers.get(reader.int)
        if row is None:
            assert self.conn is not None
            with self.conn.cursor(row_factory=dict_row) as cur:
                cur.execute(READERS.select_by(self.schema, "id"), (as_json([reader]),))
                self.readers.loaded(cur.fetchall())
            row = self.readers.get(reader.int)
        return row or {}

    # -- carrying ---------------------------------------------------------------------------

    def remember(self) -> None:
        for table in (self.readers, self.books, self.loans, self.heads, self.conversations):
            table.remember()
        self.all_members.update(self.members)

    def remembered(self) -> int:
        return sum(
            len(t.carried)
            for t in (self.readers, self.books, self.loans, self.heads, self.conversations)
        ) + len(self.messages.rows)

    # -- writing ----------------------------------------------------------------------------

    def statements(self) -> list[Statement]:
        s = self.schema
        statements = [
            *self.readers.statements(s),
            *self.books.statements(s),
            *self.loans.statements(s),
            *self.conversations.statements(s),
            *self.messages.statements(s),
            *self.heads.statements(s),
            *self._items_statements(),
            *(clear_contact(s, lender, loan) for lender, loan in self.ended),
            *([clear_contacts_at(s, self.source, self.cleared)] if self.cleared else []),
        ]
        if self.on_statements is not None:
            self.on_statements(self)
        return statements

    def _items_statements(self) -> list[Statement]:
        """A ``COPY`` of the items, or for a few (a live page) an ``INSERT`` pipelined with
        the page's other statements (a ``COPY`` costs round trips of its own)."""
        if not self.items:
            return []
        if len(self.items) >= COPY_MIN_ROWS:
            return [Copy(ITEMS.copy_sql(self.schema), ITEMS_COPY_TYPES, self.items)]
        rows = [
            {
                "reader_id": reader,
                "seq": seq,
                "kind": kind,
                "at": at,
                "data": msgspec.Raw(data[1:]),
                "source": source,
                "position": position,
            }
            for reader, seq, kind, at, data, source, position in self.items
        ]
        return [(ITEMS.insert_sql(self.schema), (as_json(rows),))]


__all__ = ["InboxPage"]
