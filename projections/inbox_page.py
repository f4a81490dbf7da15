"""The inbox projection, a page at a time: ``InboxPage`` folds a page of the Library or the
Chat log over the rows it touches and writes them back set-wise (``projections.batch``).

It has exactly the effect of ``InboxProjection.apply`` event by event (the per-event SQL in
``projections.inbox`` is the reference; ``tests/integration/test_batched_projections.py``
compares the two on a realistic log, row for row):

- per-reader ``seq``: each item takes ``heads.seq + 1`` of its reader, in log order, in
  memory (the page loads the heads of the readers it delivers to first);
- lookups (``readers``, ``books``, ``loans``) are folded like the statements that maintain
  them (``ON CONFLICT DO NOTHING`` where those have it; a duplicate loan or a
  loan/conversation that does not exist fails as the statement fails);
- ``unread`` after ``MessagesRead`` is recounted from the messages after the new read
  position, so the page loads, for each (conversation, reader) it reads, the peer's
  messages after the reader's stored read position (and takes the newer ones from memory);
- a hidden message that was a reader's last message is replaced by the newest message
  still visible to them, built as the SQL ``jsonb_build_object`` builds it (``at`` as
  ``to_char(… 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')``), from memory and, for the messages the
  page does not know, one query.

A Library page and a Chat page never change the same tables except ``heads``/``items``;
``readers`` (sender nicknames) only change in Library pages, so a Chat page reads them as
stored (the runner commits one log's pages before it starts the other's).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projections.batch import Copy, Page, Rows, Statement, Table, as_json, as_jsonb
from projections.inbox import _LOAN_KINDS, _uuid

READERS = Table("readers", {"id": "uuid", "nickname": "text", "avatar_url": "text"})
BOOKS = Table("books", {"id": "uuid", "owner_id": "uuid", "title": "text"})
LOANS = Table(
    "loans", {"id": "uuid", "book_id": "uuid", "borrower_id": "uuid", "lender_id": "uuid"}
)
HEADS = Table("heads", {"reader_id": "uuid", "seq": "bigint"}, key=("reader_id",))
ITEMS = Table(
    "items",
    {
        "reader_id": "uuid",
        "seq": "bigint",
        "kind": "text",
        "at": "timestamptz",
        "data": "jsonb",
        "source": "text",
        "position": "bigint",
    },
    key=("reader_id", "seq"),
)
CONVERSATIONS = Table(
    "conversations",
    {
        "reader_id": "uuid",
        "conversation_id": "uuid",
        "peer_id": "uuid",
        "loan_id": "uuid",
        "last_message": "jsonb",
        "last_seq": "bigint",
        "read_up_to": "bigint",
        "unread": "integer",
        "opened_at": "timestamptz",
        "updated_at": "timestamptz",
        "activity": "bigint",
    },
    key=("reader_id", "conversation_id"),
)
MESSAGES = Table(
    "messages",
    {
        "conversation_id": "uuid",
        "seq": "bigint",
        "message_id": "uuid",
        "sender_id": "uuid",
        "text": "text",
        "client_msg_id": "text",
        "at": "timestamptz",
        "hidden_for": "uuid[]",
    },
    key=("message_id",),
    mutable=("hidden_for",),
)

_LIBRARY_TABLE_OF = {
    kind: kind.partition(".")[0]
    for kind in (
        "Reader.Registered", "Reader.ProfileChanged", "Book.Published", "Book.DetailsRevised",
        "Loan.Requested", *_LOAN_KINDS,
    )
}  # fmt: skip


def _sql(query: str, schema: sql.Identifier) -> sql.Composed:
    return sql.SQL(query).format(s=schema)


_UNREAD_CANDIDATES = """
SELECT m.* FROM json_to_recordset(%s::json) AS p(c uuid, r uuid)
CROSS JOIN LATERAL (
    SELECT read_up_to FROM {s}.conversations cv
    WHERE cv.reader_id = p.r AND cv.conversation_id = p.c OFFSET 0) cv
CROSS JOIN LATERAL (
    SELECT conversation_id, seq, message_id, sender_id, text, client_msg_id, at, hidden_for
    FROM {s}.messages m
    WHERE m.conversation_id = p.c AND m.seq > cv.read_up_to AND m.sender_id <> p.r
    OFFSET 0) m
"""
_MEMBERS_HEADS = """
SELECT h.reader_id, h.seq FROM json_array_elements_text(%s::json) AS k(v)
CROSS JOIN LATERAL (
    SELECT reader_id FROM {s}.conversations c WHERE c.conversation_id = k.v::uuid OFFSET 0) c
CROSS JOIN LATERAL (SELECT * FROM {s}.heads h WHERE h.reader_id = c.reader_id OFFSET 0) h
"""
_VISIBLE_CANDIDATES = """
SELECT m.conversation_id, m.seq, m.message_id, m.sender_id, m.text, m.client_msg_id, m.at,
       m.hidden_for, r.id AS r_id, r.nickname AS r_nickname, r.avatar_url AS r_avatar_url
FROM json_to_recordset(%s::json) AS p(c uuid, r uuid, k integer)
CROSS JOIN LATERAL (
    SELECT * FROM {s}.messages m
    WHERE m.conversation_id = p.c AND NOT p.r = ANY(m.hidden_for)
    ORDER BY m.seq DESC LIMIT p.k) m
LEFT JOIN {s}.readers r ON r.id = m.sender_id
"""


def _sql_time(at: datetime) -> str:
    """``to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class InboxPage(Page):
    """A page of the Library or the Chat log for the inbox (module docstring)."""

    def __init__(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> None:
        super().__init__(schema, source, events, carry)
        self.conn: psycopg.Connection[Any] | None = None
        c: Any = carry  # an InboxPage of the same log, or None
        self.readers: Rows = Rows(READERS, c.readers if c else None, cumulative=True)
        self.books: Rows = Rows(BOOKS, c.books if c else None, cumulative=True)
        self.loans: Rows = Rows(LOANS, c.loans if c else None, cumulative=True)
        self.heads: Rows = Rows(HEADS, c.heads if c else None, cumulative=True)
        self.items: list[tuple[Any, ...]] = []  # insert only: ITEMS' columns, in order
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
        self._load_conversations: dict[int, UUID] = {}
        self._unread_pairs: dict[tuple[int, int], tuple[UUID, UUID]] = {}
        # (conversation, reader) -> [conversation, reader, hides in this page]
        self.hides: dict[tuple[int, int], list[Any]] = {}
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
                # before anything is read: the carried page's state of them is the newer
                self._take_carried_messages(cid)
            d = e.data
            if kind == "Conversation.MessageSent":
                mid, sender = d["message_id"], d["sender_id"]
                messages[mid.int] = mid
                readers[sender.int] = sender
            elif kind == "Conversation.MessageHidden":
                mid, reader = d["message_id"], d["reader_id"]
                messages[mid.int] = mid
                heads[reader.int] = reader
                pair = self.hides.setdefault((cid, reader.int), [conversation, reader, 0])
                pair[2] += 1
            elif kind == "Conversation.MessagesRead":
                reader = d["reader_id"]
                heads[reader.int] = reader
                self._unread_pairs[(cid, reader.int)] = (conversation, reader)
            elif kind == "Conversation.Opened":
                for member in d["members"]:
                    member = _uuid(member)
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

    def _take_carried_messages(self, cid: int) -> None:
        """Take the carried page's messages of a conversation (it may have added or hidden
        some since the stored state)."""
        carry: Any = self.carry
        if carry is None:
            return
        for k in carry.by_conversation.get(cid, ()):
            if k not in self.messages.rows:
                self.messages.rows[k] = carry.messages.rows[k]

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
            conversations = members_heads = unread = None
            if self._load_conversations:
                ids = as_json(list(self._load_conversations.values()))
                conversations = conn.cursor(row_factory=dict_row)
                conversations.execute(CONVERSATIONS.select_by(s, "conversation_id"), (ids,))
                members_heads = conn.cursor(row_factory=dict_row)
                members_heads.execute(_sql(_MEMBERS_HEADS, s), (ids,))
            if self._unread_pairs:
                unread = conn.cursor(row_factory=dict_row)
                unread.execute(
                    _sql(_UNREAD_CANDIDATES, s),
                    (as_json([{"c": c, "r": r} for c, r in self._unread_pairs.values()]),),
                )
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
                    (as_json([
                        {"c": c, "r": r, "k": n + earlier.get(pair, (0, 0, 0))[2] + 1}
                        for pair, (c, r, n) in self.hides.items()
                    ]),),
                )  # fmt: skip
            messages = self.messages.load_by(conn, s, "message_id")
            readers = self.readers.load_by(conn, s, "id")
            heads = self.heads.load_by(conn, s, "reader_id")
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
        self.messages.loaded(unread)
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

    def _deliver(
        self, readers: Sequence[Any], kind: str, at: datetime, data: dict[str, Any], position: int
    ) -> None:
        """``inbox.deliver``: one item a reader (duplicates ignored), each with the next seq
        of its reader."""
        heads, append = self.heads, self.items.append
        payload = as_jsonb(data)  # encoded once for every reader
        seen: set[int] = set()
        for reader in readers:
            if type(reader) is not UUID:
                reader = _uuid(reader)
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

    def _loan_fields(self, loan_id: UUID, status: str) -> dict[str, Any]:
        loan = self.loans.get(loan_id.int)
        if loan is None:
            raise LookupError(f"inbox: loan {loan_id} has no Loan.Requested before it")
        book = self.books.get(loan["book_id"].int)
        borrower = self.readers.get(loan["borrower_id"].int)
        lender = self.readers.get(loan["lender_id"].int)
        return {
            "loan_id": loan_id,
            "status": status,
            "book": {"id": loan["book_id"], "title": (book and book["title"]) or ""},
            "borrower": {"id": loan["borrower_id"],
                         "nickname": (borrower and borrower["nickname"]) or "",
                         "avatar_url": (borrower and borrower["avatar_url"]) or ""},
            "lender": {"id": loan["lender_id"],
                       "nickname": (lender and lender["nickname"]) or "",
                       "avatar_url": (lender and lender["avatar_url"]) or ""},
        }  # fmt: skip

    def _fold_library(self, e: Any) -> None:  # noqa: C901
        kind = e.type
        d = e.data
        uuid = e.originator_id
        k = uuid.int
        if kind == "Reader.Registered":
            if k not in self.readers:  # ON CONFLICT (id) DO NOTHING
                self.readers.insert(
                    k, {"id": uuid, "nickname": d["nickname"], "avatar_url": d["avatar_url"]}
                )
        elif kind == "Reader.ProfileChanged":
            if (row := self.readers.change(k)) is not None:
                row["nickname"] = d["nickname"]
                row["avatar_url"] = d["avatar_url"]
        elif kind == "Book.Published":
            if k not in self.books:  # ON CONFLICT (id) DO NOTHING
                self.books.insert(k, {"id": uuid, "owner_id": d["owner_id"], "title": d["title"]})
        elif kind == "Book.DetailsRevised":
            title = (d["changes"] or {}).get("title")
            if title and (row := self.books.change(k)) is not None:
                row["title"] = title
        elif kind == "Loan.Requested":
            self.loans.insert(k, {
                "id": uuid, "book_id": d["book_id"], "borrower_id": d["borrower_id"],
                "lender_id": d["lender_id"],
            })  # fmt: skip
            data = self._loan_fields(uuid, "requested")
            data["note"] = d["note"] or ""
            data["contact"] = dict(d["contact"]) if d["contact"] else None
            self._deliver([d["lender_id"]], "loan.requested", e.timestamp, data, e.position)
        elif kind in _LOAN_KINDS:
            item_kind, status, roles = _LOAN_KINDS[kind]
            data = self._loan_fields(uuid, status)
            if status == "declined":
                data["reason"] = d.get("reason", "") or ""
            readers = [data[role]["id"] for role in roles]
            self._deliver(readers, item_kind, e.timestamp, data, e.position)

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
        a, b = (_uuid(m) for m in e.data["members"])
        conversation = e.originator_id
        cid = conversation.int
        members = self.members.setdefault(cid, [])
        for reader, peer in ((a, b), (b, a)):
            k = (reader.int, cid)
            if k in self.conversations:  # ON CONFLICT DO NOTHING
                continue
            self.conversations.insert(k, {
                "reader_id": reader, "conversation_id": conversation, "peer_id": peer,
                "loan_id": e.data["loan_id"], "last_message": None, "last_seq": 0,
                "read_up_to": 0, "unread": 0, "opened_at": e.timestamp,
                "updated_at": e.timestamp, "activity": e.position,
            })  # fmt: skip
            members.append(k)

    def _message_sent(self, e: Any) -> None:
        d = e.data
        conversation = e.originator_id
        cid = conversation.int
        mid, sender, seq = d["message_id"], d["sender_id"], d["seq"]
        if mid.int in self.messages:
            return  # a retry beyond the aggregate's window: the first message stands
        self.messages.insert(mid.int, {
            "conversation_id": conversation, "seq": seq, "message_id": mid,
            "sender_id": sender, "text": d["text"], "client_msg_id": d["client_msg_id"],
            "at": e.timestamp, "hidden_for": [],
        })  # fmt: skip
        self.by_conversation.setdefault(cid, []).append(mid.int)
        who = self.readers.get(sender.int) or {}
        message = {
            "conversation_id": conversation,
            "message_id": mid,
            "seq": seq,
            "sender": {"id": sender, "nickname": who.get("nickname") or "",
                       "avatar_url": who.get("avatar_url") or ""},
            "text": d["text"],
            "client_msg_id": d["client_msg_id"],
            "at": e.timestamp,
        }  # fmt: skip
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
        read_up_to = row["read_up_to"] if up_to is None else max(row["read_up_to"], up_to)
        rows = self.messages.rows
        unread = 0
        for k in self.by_conversation.get(conversation.int, ()):
            m = rows[k]
            if m["seq"] > read_up_to and m["sender_id"] != reader and reader not in m["hidden_for"]:
                unread += 1
        row["read_up_to"] = read_up_to
        row["unread"] = unread
        data = {"conversation_id": conversation, "reader_id": reader, "up_to": up_to}
        self._deliver([reader, row["peer_id"]], "chat.read", e.timestamp, data, e.position)

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
        known = self.messages.rows
        candidates = [
            known[k]
            for k in self.by_conversation.get(conversation.int, ())
            if reader not in known[k]["hidden_for"]
        ]  # the newest of them is the newest visible (``load``)
        if not candidates:
            return None
        m = max(candidates, key=lambda c: c["seq"])
        sender = self._reader(m["sender_id"])
        return {
            "conversation_id": m["conversation_id"],
            "message_id": m["message_id"],
            "seq": m["seq"],
            "sender": {"id": m["sender_id"], "nickname": sender.get("nickname") or "",
                       "avatar_url": sender.get("avatar_url") or ""},
            "text": m["text"],
            "client_msg_id": m["client_msg_id"],
            "at": _sql_time(m["at"]),
        }  # fmt: skip

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
        return [
            *self.readers.statements(s),
            *self.books.statements(s),
            *self.loans.statements(s),
            *self.conversations.statements(s),
            *self.messages.statements(s),
            *self.heads.statements(s),
            *([Copy(ITEMS.copy_sql(s), ITEMS.types, self.items)] if self.items else []),
        ]


__all__ = ["InboxPage"]
