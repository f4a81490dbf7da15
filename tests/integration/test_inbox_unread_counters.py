"""The inbox's ``unread`` counters against the real PostgreSQL: read receipts lower them by
the range they mark read (``projections.inbox.page``), whose messages may lie in earlier
pages, in the page before (not written yet when pages overlap) or in the same page, with
hidden messages in between; and the items a committed page hands to ``item_listeners``
are the rows it wrote.

Each expectation is stated from the conversation's story (the peer's messages after the
reader's read position that they did not hide), checked on a version filled event by
event (``apply``) and on versions folded in pages of 1 to 4 events, one after the other
and overlapped.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from api.bootstrap.db import make_pool
from domain import chat_commands as cc
from domain.chat import Chat
from domain.library import Library
from projections.board import PositionBoard
from projections.inbox import InboxProjection, InboxQueries
from projections.runner import ReadModelRunner
from projections.source import Source
from tests.conftest import wait_until
from tests.integration.activity import reader
from tests.integration.test_batched_projections import (
    assert_same_tables,
    fill,
    head_of,
    named,
    one_by_one,
)


@pytest.fixture(scope="module")
def sources(library: Library, chat: Chat) -> dict[str, Source]:
    return {"library": Source("library", library), "chat": Source("chat", chat)}


class Story:
    """One conversation of ``a`` and ``b``; ``checkpoints``: (stops, expected unread of
    ``a``, expected unread of ``b``) after each step worth checking."""

    def __init__(self, database_url: str, library: Library, chat: Chat) -> None:
        self.database_url = database_url
        self.chat = chat
        self.a, self.b = reader(library, "unread-a"), reader(library, "unread-b")
        self.cid = chat.handle(cc.OpenConversation(reader_id=self.a, peer_id=self.b)).id
        self.sent: dict[int, UUID] = {}
        self.checkpoints: list[tuple[dict[str, int], int, int]] = []

    def send(self, sender: UUID, n: int) -> None:
        for _ in range(n):
            message = self.chat.send(
                cc.SendMessage(
                    conversation_id=self.cid,
                    sender_id=sender,
                    text="消息",
                    client_msg_id=uuid4().hex,
                )
            )
            self.sent[message.seq] = message.message_id

    def read(self, who: UUID, up_to: int) -> None:
        self.chat.handle(cc.MarkRead(conversation_id=self.cid, reader_id=who, up_to=up_to))

    def hide(self, who: UUID, seq: int) -> None:
        self.chat.handle(
            cc.HideMessage(conversation_id=self.cid, reader_id=who, message_id=self.sent[seq])
        )

    def check(self, unread_a: int, unread_b: int) -> None:
        stops = {s: head_of(self.database_url, s) for s in ("library", "chat")}
        self.checkpoints.append((stops, unread_a, unread_b))


@pytest.fixture(scope="module")
def story(database_url: str, library: Library, chat: Chat) -> Story:
    s = Story(database_url, library, chat)
    a, b = s.a, s.b
    s.send(b, 10)  # b: 1..10
    s.hide(a, 3)  # unread, hidden: no longer counted
    s.check(9, 0)
    s.read(a, 4)  # marks 1, 2, 4 read (3 was hidden)
    s.check(6, 0)
    s.send(a, 1)  # a: 11
    s.send(b, 4)  # b: 12..15
    s.hide(a, 13)
    s.hide(a, 5)
    s.read(b, 11)
    s.check(8, 0)  # 6..10, 12, 14, 15
    s.read(a, 12)  # a range over many pages: 6..10 and 12 (5 hidden)
    s.check(2, 0)
    s.read(a, 8)  # backwards: records nothing
    s.send(a, 2)  # a: 16, 17
    s.hide(b, 17)
    s.read(a, 14)  # 14 only (13 hidden)
    s.check(1, 1)
    s.send(b, 1)  # b: 18
    s.read(a, 18)  # up to the last message: nothing left
    s.read(b, 16)
    s.check(0, 0)
    return s


def unread_of(database_url: str, schema: str, story: Story) -> tuple[int, int]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT reader_id, unread FROM {}.conversations WHERE conversation_id = %s"
            ).format(sql.Identifier(schema)),
            (story.cid,),
        ).fetchall()
    unread = {row["reader_id"]: row["unread"] for row in rows}
    return unread[story.a], unread[story.b]


def recounted(database_url: str, schema: str) -> list[tuple[Any, ...]]:
    """Every conversation row whose ``unread`` differs from a recount of its messages."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            sql.SQL(
                "SELECT c.reader_id, c.conversation_id, c.unread, (SELECT count(*) "
                "FROM {0}.messages m WHERE m.conversation_id = c.conversation_id "
                "AND m.seq > c.read_up_to AND m.sender_id <> c.reader_id "
                "AND NOT c.reader_id = ANY(m.hidden_for)) AS n FROM {0}.conversations c"
            ).format(sql.Identifier(schema))
        ).fetchall()


@pytest.mark.parametrize(("size", "overlapped"), [(1, False), (2, False), (3, True), (4, True)])
def test_read_receipts_lower_unread_by_the_range_they_mark_read(
    database_url: str, sources: dict[str, Source], story: Story, size: int, overlapped: bool
) -> None:
    for stops, unread_a, unread_b in story.checkpoints:
        reference = fill(
            database_url, one_by_one(InboxProjection, "unr1"), sources, stops, 64, overlapped=False
        )
        assert unread_of(database_url, reference, story) == (unread_a, unread_b)
        folded = fill(
            database_url,
            named(InboxProjection, "unrf", batch_min=1),
            sources,
            stops,
            size,
            overlapped=overlapped,
        )
        assert unread_of(database_url, folded, story) == (unread_a, unread_b)
        assert_same_tables(database_url, ("conversations", "messages", "items"), reference, folded)
        assert [r for r in recounted(database_url, folded) if r[2] != r[3]] == []


# -- the items a committed page hands over ----------------------------------------------------


def test_item_listeners_get_the_rows_the_page_committed(
    database_url: str, library: Library, chat: Chat, sources: dict[str, Source]
) -> None:
    projection = named(InboxProjection, "handoff")
    assert isinstance(projection, InboxProjection)
    pages: list[tuple[str, int, int, Any]] = []
    lock = threading.Lock()

    def listener(source: str, first: int, last: int, items: Any) -> None:
        with lock:
            pages.append((source, first, last, items))

    projection.item_listeners.append(listener)
    runner = ReadModelRunner(
        projection, database_url, sources, board=PositionBoard(), page_size=5, idle_wait=0.05
    )
    pool = make_pool(database_url, size=2, name="handoff-test")
    runner.start()
    try:
        a, b = reader(library, "handoff-a"), reader(library, "handoff-b")
        cid = chat.handle(cc.OpenConversation(reader_id=a, peer_id=b)).id
        for i in range(12):
            chat.send(
                cc.SendMessage(
                    conversation_id=cid,
                    sender_id=(a, b)[i % 2],
                    text=f"m{i}",
                    client_msg_id=f"h{i}",
                )
            )
        chat.handle(cc.MarkRead(conversation_id=cid, reader_id=a, up_to=5))
        head = head_of(database_url, "chat")
        runner.wake()
        assert runner.board.wait(projection.name, "chat", head, timeout=30)

        def covered() -> bool:
            with lock:
                return any(s == "chat" and last >= head for s, _, last, _ in pages)

        wait_until(covered)
        queries = InboxQueries(pool, schema=projection.name)
        with lock:
            handed = [(s, f, la, items) for s, f, la, items in pages if items is not None]
        assert handed, "no page handed its items over"
        for source, first, last, items in handed:
            stored = queries.items_for_positions(source, first, last)
            assert [(i["position"], i["seq"]) for i in items] == [
                (i["position"], i["seq"]) for i in stored
            ]  # the relay's order (readers with the same seq for one event in any order)
            assert [_as_committed(i) for i in sorted(items, key=_identity)] == [
                _as_committed(i) for i in sorted(stored, key=_identity)
            ]
        assert any(i["kind"] == "chat.read" for *_, items in handed for i in items)
    finally:
        runner.stop()
        pool.close()
        projection.item_listeners.clear()


def _as_committed(item: dict[str, Any]) -> dict[str, Any]:
    """An item without what may change after its page committed: the contact of a loan
    request is cleared when the loan ends (a later page)."""
    if item["kind"] != "loan.requested":
        return item
    return {**item, "data": {k: v for k, v in item["data"].items() if k != "contact"}}


def _identity(item: dict[str, Any]) -> tuple[int, int, str]:
    return item["position"], item["seq"], str(item["reader_id"])


class _Page:
    def __init__(self, schema: str, source: str, positions: list[int], items: list[Any]) -> None:
        self.schema = sql.Identifier(schema)
        self.source = source
        self.events = [type("E", (), {"position": p})() for p in positions]
        self.items = items


def test_a_page_not_what_committed_hands_nothing_over() -> None:
    projection = InboxProjection()
    projection.item_listeners.append(lambda *page: None)
    item = (uuid4(), 1, "chat.read", None, b'\x01{"up_to": 1}', "chat", 12)
    # the page that committed
    projection._keep(_Page("inbox_v1", "chat", [10, 12], [item]))
    assert projection._committed_items("chat", 9, 12) == [
        {
            "reader_id": item[0],
            "seq": 1,
            "kind": "chat.read",
            "at": None,
            "data": {"up_to": 1},
            "source": "chat",
            "position": 12,
        },
    ]
    assert projection._committed_items("chat", 9, 12) is None  # handed over once
    # written event by event instead (its folded write failed): apply drops it
    projection._keep(_Page("inbox_v1", "chat", [13, 15], [item]))
    ignored = type("Ignored", (), {})()  # an event type the inbox ignores: no statement
    projection.apply(None, sql.Identifier("inbox_v1"), "chat", 14, ignored)  # type: ignore[arg-type]
    assert projection._committed_items("chat", 13, 15) is None
    # another version folded the same range (a rebuild in this process): ambiguous
    projection._keep(_Page("inbox_v1", "chat", [16, 18], [item]))
    projection._keep(_Page("inbox_v2", "chat", [16, 18], [item]))
    assert projection._committed_items("chat", 16, 18) is None
    # a page whose events start before the committed range is not that page
    projection._keep(_Page("inbox_v1", "chat", [19, 21], [item]))
    assert projection._committed_items("chat", 20, 21) is None
