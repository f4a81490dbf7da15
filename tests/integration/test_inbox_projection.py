"""The inbox projection against the real PostgreSQL: per-reader gap-free seq over two logs,
who gets which item, conversations, unread counts, read receipts, hidden messages, and the
after-commit hook.

The projection runs here under its own name (``inbox_it``), so a live server of the e2e
tests in the same session (which runs the real ``inbox``) does not hold its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from api.bootstrap.db import make_pool
from domain import chat_commands as cc
from domain import commands as c
from domain.chat import Chat, Conversation, conversation_id_for
from domain.library import Library
from domain.media import MediaRef
from domain.reader import reader_id_for
from projections.board import PositionBoard
from projections.inbox import InboxProjection, InboxQueries
from projections.runner import ReadModelRunner
from projections.source import Source
from tests.conftest import wait_until

NAME = "inbox_it"


class _Inbox(InboxProjection):
    name = NAME


class Harness:
    def __init__(
        self,
        library: Library,
        chat: Chat,
        projection: _Inbox,
        runner: ReadModelRunner,
        queries: InboxQueries,
    ) -> None:
        self.library = library
        self.chat = chat
        self.projection = projection
        self.runner = runner
        self.q = queries

    def lib(self, command: c.Command) -> c.Recorded:
        recorded = self.library.handle(command)
        self.wait("library", recorded)
        return recorded

    def talk(self, command: c.Command) -> Any:
        recorded = self.chat.handle(command)
        self.wait("chat", recorded)
        return recorded

    def wait(self, source: str, recorded: c.Recorded) -> None:
        if recorded.position is not None:
            self.runner.wake()
            assert self.runner.board.wait(NAME, source, recorded.position, timeout=15)

    def reader(self, name: str) -> UUID:
        rid = reader_id_for(f"inbox-test-{name}-{uuid4()}")
        self.lib(c.RegisterReader(reader_id=rid, nickname=name))
        return rid

    def book(self, owner: UUID, title: str = "活着") -> UUID:
        book_id = uuid4()
        self.lib(c.PublishBook(book_id=book_id, owner_id=owner, isbn="9787506365437", title=title))
        return book_id

    def feed(self, reader: UUID, after: int = 0) -> list[dict[str, Any]]:
        items, _ = self.q.items(reader, after=after, limit=1000)
        return items

    def kinds(self, reader: UUID) -> list[str]:
        return [i["kind"] for i in self.feed(reader)]


@pytest.fixture(scope="module")
def inbox(database_url: str, library: Library, chat: Chat) -> Iterator[Harness]:
    projection = _Inbox()
    runner = ReadModelRunner(
        projection,
        database_url,
        {"library": Source("library", library), "chat": Source("chat", chat)},
        board=PositionBoard(),
        page_size=50,
        idle_wait=0.2,
    )
    runner.start()
    pool = make_pool(database_url, size=4)
    yield Harness(library, chat, projection, runner, InboxQueries(pool, schema=NAME))
    runner.stop()
    pool.close()


def assert_gap_free(h: Harness, reader: UUID) -> list[dict[str, Any]]:
    items = h.feed(reader)
    assert [i["seq"] for i in items] == list(range(1, len(items) + 1))
    assert h.q.head(reader) == len(items)
    return items


# -- loans ----------------------------------------------------------------------------------------


def test_loan_events_reach_the_right_parties(inbox: Harness) -> None:
    h = inbox
    lender, borrower = h.reader("lender"), h.reader("borrower")
    book = h.book(lender, "许三观卖血记")
    loan = uuid4()
    h.lib(
        c.RequestLoan(
            loan_id=loan,
            book_id=book,
            borrower_id=borrower,
            note="想读",
            contact=c.Contact(wechat_id="wx-b", phone="13800000000"),
        )
    )
    assert h.kinds(borrower) == []
    [requested] = h.feed(lender)
    assert requested["kind"] == "loan.requested" and requested["seq"] == 1
    data = requested["data"]
    assert data["loan_id"] == str(loan) and data["status"] == "requested"
    assert data["book"] == {"id": str(book), "title": "许三观卖血记"}
    assert data["borrower"]["id"] == str(borrower) and data["borrower"]["nickname"] == "borrower"
    assert data["lender"]["id"] == str(lender)
    assert data["note"] == "想读"
    assert data["contact"] == {"wechat_id": "wx-b", "phone": "13800000000"}

    h.lib(c.ApproveLoan(loan_id=loan, actor_id=lender))
    h.lib(c.StartReturn(loan_id=loan, actor_id=borrower))
    h.lib(c.ConfirmReturn(loan_id=loan, actor_id=lender))
    assert h.kinds(lender) == ["loan.requested", "loan.returning"]
    assert h.kinds(borrower) == ["loan.approved", "loan.returned"]
    # contact details never reach the borrower's feed
    assert all("contact" not in i["data"] for i in h.feed(borrower))

    declined, cancelled = uuid4(), uuid4()
    h.lib(c.RequestLoan(loan_id=declined, book_id=book, borrower_id=borrower))
    h.lib(c.DeclineLoan(loan_id=declined, actor_id=lender, reason="在读"))
    h.lib(c.RequestLoan(loan_id=cancelled, book_id=book, borrower_id=borrower))
    h.lib(c.CancelLoan(loan_id=cancelled, actor_id=borrower))
    lender_items = assert_gap_free(h, lender)
    borrower_items = assert_gap_free(h, borrower)
    assert [i["kind"] for i in lender_items] == [
        "loan.requested",
        "loan.returning",
        "loan.requested",
        "loan.requested",
        "loan.cancelled",
    ]
    assert [i["kind"] for i in borrower_items] == [
        "loan.approved",
        "loan.returned",
        "loan.declined",
        "loan.cancelled",
    ]
    assert borrower_items[2]["data"]["reason"] == "在读"
    assert lender_items[-1]["data"]["loan_id"] == str(cancelled)


def test_book_title_and_nickname_follow_revisions(inbox: Harness) -> None:
    h = inbox
    lender, borrower = h.reader("old-name"), h.reader("b")
    book = h.book(lender, "Old title")
    h.lib(c.ReviseBook(book_id=book, actor_id=lender, title="New title"))
    h.lib(c.ChangeProfile(reader_id=borrower, nickname="new-name"))
    h.lib(c.RequestLoan(loan_id=uuid4(), book_id=book, borrower_id=borrower))
    [item] = h.feed(lender)
    assert item["data"]["book"]["title"] == "New title"
    assert item["data"]["borrower"]["nickname"] == "new-name"


# -- chat -----------------------------------------------------------------------------------------


def test_messages_reach_both_members_with_unread_and_read_receipts(inbox: Harness) -> None:
    h = inbox
    a, b = h.reader("alice"), h.reader("bob")
    opened = h.talk(cc.OpenConversation(reader_id=a, peer_id=b))
    cid = opened.id
    assert cid == conversation_id_for(b, a)
    assert h.q.is_member(cid, a) and h.q.is_member(cid, b)
    assert not h.q.is_member(cid, uuid4())
    [row] = h.q.conversations(a)[0]
    assert row["peer_id"] == b and row["peer_nickname"] == "bob" and row["last_message"] is None

    sent = [
        h.talk(
            cc.SendMessage(
                conversation_id=cid, sender_id=a, text=f"你好 {i}", client_msg_id=f"a{i}"
            )
        )
        for i in range(3)
    ]
    h.talk(cc.SendMessage(conversation_id=cid, sender_id=b, text="hi", client_msg_id="b0"))
    for reader in (a, b):
        items = assert_gap_free(h, reader)
        assert [i["kind"] for i in items] == ["chat.message"] * 4
        assert [i["data"]["seq"] for i in items] == [1, 2, 3, 4]
    first = h.feed(b)[0]["data"]
    assert first == {
        "conversation_id": str(cid),
        "message_id": str(sent[0].message_id),
        "seq": 1,
        "sender": {"id": str(a), "nickname": "alice", "avatar_url": ""},
        "text": "你好 0",
        "client_msg_id": "a0",
        "at": first["at"],
        "media": None,
    }
    assert h.q.unread(b) == 3 and h.q.unread(a) == 1
    b_row = h.q.conversation(cid, b)
    assert b_row["unread"] == 3 and b_row["last_seq"] == 4
    assert b_row["last_message"]["text"] == "hi" and b_row["last_message"]["sender"]["id"] == str(b)

    h.talk(cc.MarkRead(conversation_id=cid, reader_id=b, up_to=2))
    assert h.q.unread(b) == 1 and h.q.conversation(cid, b)["read_up_to"] == 2
    receipt = h.feed(a)[-1]
    assert receipt["kind"] == "chat.read"
    assert receipt["data"] == {"conversation_id": str(cid), "reader_id": str(b), "up_to": 2}
    assert h.feed(b)[-1]["kind"] == "chat.read"  # b's other devices clear their badge
    h.talk(cc.MarkRead(conversation_id=cid, reader_id=b, up_to=99))  # capped at last_seq
    assert h.q.unread(b) == 0 and h.q.unread(a) == 1

    # history pages: newest first, before= cursor
    page, before = h.q.messages(cid, a, limit=3)
    assert [m["seq"] for m in page] == [4, 3, 2] and before == 2
    page, before = h.q.messages(cid, a, before_seq=before, limit=3)
    assert [m["seq"] for m in page] == [1] and before is None
    assert page[0]["sender_nickname"] == "alice"
    found = h.q.message_by_client_id(cid, a, "a1")
    assert found is not None and found["message_id"] == sent[1].message_id
    assert h.q.message_by_client_id(cid, b, "a1") is None


def test_hidden_messages_disappear_for_that_reader_only(inbox: Harness) -> None:
    h = inbox
    a, b = h.reader("hider"), h.reader("peer")
    cid = h.talk(cc.OpenConversation(reader_id=a, peer_id=b)).id
    h.talk(cc.SendMessage(conversation_id=cid, sender_id=a, text="one", client_msg_id="1"))
    h.talk(cc.SendMessage(conversation_id=cid, sender_id=b, text="two", client_msg_id="2"))
    last = h.talk(cc.SendMessage(conversation_id=cid, sender_id=b, text="three", client_msg_id="3"))
    assert h.q.unread(a) == 2
    head_b = h.q.head(b)

    h.talk(cc.HideMessage(conversation_id=cid, reader_id=a, message_id=last.message_id))
    assert [m["text"] for m in h.q.messages(cid, a)[0]] == ["two", "one"]
    assert [m["text"] for m in h.q.messages(cid, b)[0]] == ["three", "two", "one"]
    row = h.q.conversation(cid, a)
    assert row["unread"] == 1  # the hidden one was unread
    assert row["last_message"]["text"] == "two" and row["last_message"]["seq"] == 2
    assert h.q.conversation(cid, b)["last_message"]["text"] == "three"
    assert h.feed(a)[-1]["kind"] == "chat.hidden"
    assert h.q.head(b) == head_b  # nothing for the peer

    head_a = h.q.head(a)
    h.talk(cc.HideMessage(conversation_id=cid, reader_id=a, message_id=last.message_id))
    h.talk(cc.HideMessage(conversation_id=cid, reader_id=a, message_id=uuid4()))  # unknown
    assert h.q.head(a) == head_a  # idempotent, unknown ids ignored
    h.talk(cc.MarkRead(conversation_id=cid, reader_id=a, up_to=3))
    assert h.q.unread(a) == 0
    assert_gap_free(h, a)
    assert_gap_free(h, b)


def test_a_retry_beyond_the_window_shows_once(
    inbox: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = inbox
    monkeypatch.setattr(Conversation, "dedupe_window", 1)
    a, b = h.reader("retry-a"), h.reader("retry-b")
    cid = h.talk(cc.OpenConversation(reader_id=a, peer_id=b)).id
    first = h.talk(cc.SendMessage(conversation_id=cid, sender_id=a, text="x", client_msg_id="m1"))
    h.talk(cc.SendMessage(conversation_id=cid, sender_id=a, text="y", client_msg_id="m2"))
    again = h.talk(cc.SendMessage(conversation_id=cid, sender_id=a, text="x", client_msg_id="m1"))
    assert again.created and again.message_id == first.message_id and again.seq == 3
    assert [m["seq"] for m in h.q.messages(cid, b)[0]] == [2, 1]
    assert h.kinds(b) == ["chat.message", "chat.message"]
    assert h.q.unread(b) == 2


def test_conversation_list_is_most_recent_first_in_pages(inbox: Harness) -> None:
    h = inbox
    me = h.reader("popular")
    peers = [h.reader(f"p{i}") for i in range(5)]
    cids = [h.talk(cc.OpenConversation(reader_id=p, peer_id=me, loan_id=None)).id for p in peers]
    h.talk(
        cc.SendMessage(conversation_id=cids[1], sender_id=peers[1], text="bump", client_msg_id="x")
    )
    rows, cursor = h.q.conversations(me, limit=2)
    seen = [r["conversation_id"] for r in rows]
    while cursor:
        rows, cursor = h.q.conversations(me, cursor=cursor, limit=2)
        seen += [r["conversation_id"] for r in rows]
    assert seen == [cids[1], cids[4], cids[3], cids[2], cids[0]]
    assert h.q.unread(me) == 1


# -- per-reader seq under load, and the hook ------------------------------------------------------


def test_seq_is_gap_free_per_reader_under_many_events_from_both_logs(inbox: Harness) -> None:
    h = inbox
    pages: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def listener(source: str, first: int, last: int) -> None:
        with lock:
            pages.append((source, first, last))

    h.projection.listeners.append(listener)
    try:
        lender = h.reader("hub")
        borrowers = [h.reader(f"spoke{i}") for i in range(6)]
        # a book each: one book's requests serialize on the book (``Book.RequestReceived``)
        books = {b: h.book(lender) for b in borrowers}
        convs = {
            b: h.chat.handle(cc.OpenConversation(reader_id=b, peer_id=lender)).id for b in borrowers
        }
        errors: list[BaseException] = []
        rounds = 15

        def borrower_work(b: UUID) -> None:
            try:
                for i in range(rounds):
                    loan = uuid4()
                    h.library.handle(c.RequestLoan(loan_id=loan, book_id=books[b], borrower_id=b))
                    h.chat.handle(
                        cc.SendMessage(
                            conversation_id=convs[b],
                            sender_id=b,
                            text=f"msg {i}",
                            client_msg_id=f"{b}:{i}",
                        )
                    )
                    h.library.handle(c.CancelLoan(loan_id=loan, actor_id=b))
                    h.chat.handle(
                        cc.SendMessage(
                            conversation_id=convs[b],
                            sender_id=lender,
                            text=f"re {i}",
                            client_msg_id=f"re:{b}:{i}",
                        )
                    )
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=borrower_work, args=(b,)) for b in borrowers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        h.runner.wake()
        lib_head = int(h.library.recorder.max_notification_id())  # type: ignore[attr-defined]
        chat_head = int(h.chat.recorder.max_notification_id())  # type: ignore[attr-defined]
        assert h.runner.board.wait(NAME, "library", lib_head, timeout=30)
        assert h.runner.board.wait(NAME, "chat", chat_head, timeout=30)

        # lender: per round and borrower, requested + cancelled + 2 messages
        lender_items = assert_gap_free(h, lender)
        assert len(lender_items) == len(borrowers) * rounds * 4
        for b in borrowers:
            items = assert_gap_free(h, b)
            assert len(items) == rounds * 3  # cancelled + 2 messages
            mine = [i["data"]["seq"] for i in items if i["kind"] == "chat.message"]
            assert mine == list(range(1, 2 * rounds + 1))  # in conversation order
        assert h.q.unread(lender) == len(borrowers) * rounds

        # the hook saw every page, and the pages' items are readable by position
        def covered() -> bool:
            with lock:
                return any(s == "chat" and last >= chat_head for s, _, last in pages)

        wait_until(covered)
        with lock:
            chat_pages = [(f, la) for s, f, la in pages if s == "chat"]
        relayed = [
            item
            for first, last in chat_pages
            for item in h.q.items_for_positions("chat", first, last)
            if item["reader_id"] == lender
        ]
        expected = [i for i in lender_items if i["kind"] == "chat.message"]
        assert sorted({i["seq"] for i in relayed}) == [i["seq"] for i in expected]
        sample = relayed[-1]
        assert set(sample) == {"reader_id", "seq", "kind", "at", "data", "source", "position"}
    finally:
        h.projection.listeners.remove(listener)


def test_a_failing_listener_does_not_stop_the_others(inbox: Harness) -> None:
    h = inbox
    seen: list[tuple[str, int, int]] = []

    def broken(source: str, first: int, last: int) -> None:
        raise RuntimeError("relay down")

    h.projection.listeners[:0] = [broken]
    h.projection.listeners.append(lambda *page: seen.append(page))
    try:
        a, b = h.reader("l1"), h.reader("l2")
        recorded = h.talk(cc.OpenConversation(reader_id=a, peer_id=b))
        wait_until(lambda: any(s == "chat" and f <= recorded.position <= la for s, f, la in seen))
        assert h.runner.status.state == "running"
    finally:
        del h.projection.listeners[:]


# -- pictures ---------------------------------------------------------------------------------


def _picture() -> MediaRef:
    return MediaRef(id=uuid4().hex * 2, width=800, height=600)


def test_a_removed_picture_shows_a_placeholder_and_the_members_are_told(inbox: Harness) -> None:
    h = inbox
    a, b = h.reader("pic-a"), h.reader("pic-b")
    cid = h.talk(cc.OpenConversation(reader_id=a, peer_id=b)).id
    picture = _picture()
    sent = h.talk(
        cc.SendMessage(conversation_id=cid, sender_id=a, client_msg_id="p", media=picture)
    )
    [item] = [i for i in h.feed(b) if i["kind"] == "chat.message"]
    assert item["data"]["text"] == "" and item["data"]["media"] == {
        "id": picture.id,
        "url": f"/v1/media/{picture.id}",
        "thumb_url": f"/v1/media/{picture.id}/thumb",
        "width": 800,
        "height": 600,
        "removed": False,
    }
    h.lib(c.RemoveMedia(media_id=picture.id, reason="risky"))
    for reader in (a, b):
        [removed] = [i for i in assert_gap_free(h, reader) if i["kind"] == "media.removed"]
        assert removed["data"] == {
            "media_id": picture.id,
            "reason": "risky",
            "messages": [{"conversation_id": str(cid), "message_id": str(sent.message_id)}],
        }
    [row], _ = h.q.messages(cid, b)
    assert row["media"]["removed"] is True and row["media"]["url"] is None
    conversation = h.q.conversation(cid, b)
    assert conversation is not None
    assert conversation["last_message"]["media"]["removed"] is True
    assert conversation["last_message"]["media"]["thumb_url"] is None


def test_a_message_projected_after_its_pictures_removal_is_shown_removed(inbox: Harness) -> None:
    """A rebuild replays the Library log before the Chat log: the removal comes first."""
    h = inbox
    a, b = h.reader("late-a"), h.reader("late-b")
    cid = h.talk(cc.OpenConversation(reader_id=a, peer_id=b)).id
    picture = _picture()
    h.lib(c.RemoveMedia(media_id=picture.id, reason="risky"))
    h.talk(
        cc.SendMessage(
            conversation_id=cid, sender_id=a, text="看", client_msg_id="late", media=picture
        )
    )
    [item] = [i for i in h.feed(b) if i["kind"] == "chat.message"]
    assert item["data"]["media"]["removed"] is True and item["data"]["media"]["url"] is None
    [row], _ = h.q.messages(cid, b)
    assert row["media"]["removed"] is True
