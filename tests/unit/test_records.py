"""Fast decoding for projections (``projections.records``) against eventsourcing's mapper, in
memory: every event type of both contexts decodes to the same values (the mapper's domain
event, as a ``Record``), v1 ``Book.Published`` is upcast the same way, and anything the fast
path does not know goes to the mapper (or fails as it fails)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Cipher, Compressor, StoredEvent

from domain import chat_commands as cc
from domain import commands as c
from domain.book import Book
from domain.chat import Chat
from domain.library import Library
from projections.read_model import ReadModelProjection
from projections.records import RecordDecoder, event_type, record_of
from projections.rooms import RoomsProjection
from projections.shelf import ShelfProjection

V1_PUBLISHED = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2024-05-04T08:30:00.123456+00:00"},'
    '"originator_topic":"domain.book:Book",'
    '"owner_id":{"_type_":"uuid_hex","_data_":"%s"},'
    '"isbn":"9787536692930","title":"三体（v1 golden）","author":"刘慈欣",'
    '"publisher":"重庆出版社","tags":["科幻"],"cover_url":"","summary":"a v1 event"}'
)


def rows_of(app: Any) -> list[tuple[int, Any, int, str, bytes]]:
    return [
        (n.id, n.originator_id, n.originator_version, n.topic, n.state)
        for n in app.recorder.select_notifications(start=1, limit=10_000)
    ]


def library_log() -> Library:
    library = Library()
    owner, borrower = uuid4(), uuid4()
    library.handle(c.RegisterReader(reader_id=owner, nickname="主人"))
    library.handle(c.RegisterReader(reader_id=borrower, nickname="b", avatar_url="https://a"))
    library.handle(c.ChangeProfile(reader_id=borrower, nickname="借书人"))
    book, other = uuid4(), uuid4()
    library.handle(
        c.PublishBook(
            book_id=book, owner_id=owner, isbn="9787536692930", title="三体", tags=["科幻", "经典"]
        )
    )
    library.handle(
        c.PublishBook(book_id=other, owner_id=owner, isbn="9780140449136", title="Odyssey")
    )
    library.handle(c.ReviseBook(book_id=book, actor_id=owner, title="三体 I", tags=["新"]))
    library.handle(c.WithdrawBook(book_id=other, actor_id=owner))
    library.handle(c.RelistBook(book_id=other, actor_id=owner))
    for decision in ("approve", "decline", "cancel"):
        loan = uuid4()
        library.handle(
            c.RequestLoan(
                loan_id=loan,
                book_id=book,
                borrower_id=borrower,
                note="想读",
                contact=c.Contact(phone="138"),
            )
        )
        if decision == "approve":
            library.handle(c.ApproveLoan(loan_id=loan, actor_id=owner))
            library.handle(c.StartReturn(loan_id=loan, actor_id=borrower))
            library.handle(c.ConfirmReturn(loan_id=loan, actor_id=owner))
        elif decision == "decline":
            library.handle(c.DeclineLoan(loan_id=loan, actor_id=owner, reason="在读"))
        else:
            library.handle(c.CancelLoan(loan_id=loan, actor_id=borrower))
    golden = uuid4()
    library.recorder.insert_events(
        [
            StoredEvent(
                originator_id=golden,
                originator_version=1,
                topic="domain.book:Book.Published",
                state=(V1_PUBLISHED % owner.hex).encode(),
            )
        ]
    )
    return library


def chat_log() -> Chat:
    chat = Chat()
    a, b = uuid4(), uuid4()
    cid = chat.handle(cc.OpenConversation(reader_id=a, peer_id=b, loan_id=uuid4())).id
    sent = chat.send(
        cc.SendMessage(conversation_id=cid, sender_id=a, text="你好", client_msg_id="1")
    )
    chat.handle(cc.MarkRead(conversation_id=cid, reader_id=b, up_to=1))
    chat.handle(cc.HideMessage(conversation_id=cid, reader_id=b, message_id=sent.message_id))
    room = chat.handle(cc.CreateRoom(name="lobby", title="大厅")).id
    chat.send(cc.SendRoomMessage(room_id=room, sender_id=b, text="hi", client_msg_id="2"))
    return chat


LIBRARY_TYPES = {
    "Reader.Registered",
    "Reader.ProfileChanged",
    "Book.Published",
    "Book.DetailsRevised",
    "Book.Withdrawn",
    "Book.Relisted",
    "Book.Lent",
    "Book.Returned",
    "Book.RequestReceived",
    "Book.RequestClosed",
    "Loan.Requested",
    "Loan.Approved",
    "Loan.Declined",
    "Loan.Cancelled",
    "Loan.ReturnStarted",
    "Loan.ReturnConfirmed",
}
CHAT_TYPES = {
    "Conversation.Opened",
    "Conversation.MessageSent",
    "Conversation.MessagesRead",
    "Conversation.MessageHidden",
    "Room.Created",
    "Room.MessageSent",
}


@pytest.mark.parametrize(("make", "types"), [(library_log, LIBRARY_TYPES), (chat_log, CHAT_TYPES)])
def test_fast_path_equals_the_mapper_for_every_event_type(make: Any, types: set[str]) -> None:
    app = make()
    decoder = RecordDecoder(app.mapper)
    assert decoder.fast
    rows = rows_of(app)
    for row in rows:
        fast = decoder._decode_fast(row)  # the fast path itself, no fallback
        slow = record_of(row[0], row[3], app.mapper.to_domain_event(_stored(row)))
        assert fast == slow, row
        assert decoder.decode(row) == slow
        assert type(fast.originator_id) is UUID and type(fast.timestamp) is datetime
    assert {decoder.decode(row).type for row in rows} == types


def _stored(row: tuple[int, Any, int, str, bytes]) -> StoredEvent:
    return StoredEvent(originator_id=row[1], originator_version=row[2], topic=row[3], state=row[4])


def test_v1_published_is_upcast_like_the_aggregate_does() -> None:
    library = library_log()
    decoder = RecordDecoder(library.mapper)
    (v1,) = [r for r in rows_of(library) if b"golden" in r[4]]
    record = decoder.decode(v1)
    assert record.type == "Book.Published" and record.language == "zh"
    assert "class_version" not in record.data
    assert record.timestamp == datetime(2024, 5, 4, 8, 30, 0, 123456, tzinfo=UTC)
    assert (record.title, record.tags, record.originator_version) == (
        "三体（v1 golden）",
        ["科幻"],
        1,
    )
    assert library.book(v1[1]).language == "zh"  # what the aggregate says
    current = [r for r in rows_of(library) if r[3].endswith("Book.Published") and r is not v1]
    assert decoder.decode(current[0]).data["language"] == "zh"  # v2+: stored, not computed
    assert record.cover_media_id is None  # v3's field, upcast from v1 too
    assert Book.Published.class_version == 3


def test_records_read_like_events() -> None:
    library = library_log()
    record = RecordDecoder(library.mapper).decode(rows_of(library)[0])
    assert record.nickname == "主人" and record.data["avatar_url"] == ""
    assert event_type(record) == "Reader.Registered"
    with pytest.raises(AttributeError):
        _ = record.no_such_field
    assert getattr(record, "title", None) is None
    assert "Reader.Registered" in repr(record)


def test_what_the_fast_path_does_not_know_goes_to_the_mapper() -> None:
    library = library_log()
    decoder = RecordDecoder(library.mapper)
    row = rows_of(library)[0]
    # JSON msgspec refuses but the standard library accepts
    nan = row[4].replace(b'"nickname":"', b'"score":NaN,"nickname":"')
    odd = (row[0], row[1], row[2], row[3], nan)
    with pytest.raises(Exception):  # noqa: B017, PT011
        decoder._decode_fast(odd)
    record = decoder.decode(odd)
    assert record.data["score"] != record.data["score"]  # NaN, as the mapper decodes it
    assert record.nickname == "主人"
    # a tag no transcoding is registered for: the mapper's error
    unknown = (
        row[4]
        .replace(b'"uuid_hex"', b'"no_such_type"', 1)
        .replace(b'"datetime_iso"', b'"no_such_type"', 1)
    )
    with pytest.raises(Exception) as fast_error:  # noqa: PT011
        decoder.decode((row[0], row[1], row[2], row[3], unknown))
    with pytest.raises(Exception) as mapper_error:  # noqa: PT011
        library.mapper.to_domain_event(_stored((row[0], row[1], row[2], row[3], unknown)))
    assert type(fast_error.value) is type(mapper_error.value)


class _Zlib(Compressor):
    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data)

    def decompress(self, data: bytes) -> bytes:
        return zlib.decompress(data)


class _Reverse(Cipher):
    def __init__(self, environment: Any = None) -> None:
        pass

    def encrypt(self, plaintext: bytes) -> bytes:
        return plaintext[::-1]

    def decrypt(self, ciphertext: bytes) -> bytes:
        return ciphertext[::-1]


@pytest.mark.parametrize("option", ["compressor", "cipher"])
def test_a_compressed_or_encrypted_log_is_decoded_by_the_mapper(option: str) -> None:
    library = library_log()
    domain_events = _domain_events(library)
    setattr(library.mapper, option, _Zlib() if option == "compressor" else _Reverse())
    events = [library.mapper.to_stored_event(e) for e in domain_events]
    decoder = RecordDecoder(library.mapper)
    assert not decoder.fast
    for i, stored in enumerate(events, 1):
        row = (i, stored.originator_id, stored.originator_version, stored.topic, stored.state)
        assert decoder.decode(row) == record_of(
            i, stored.topic, library.mapper.to_domain_event(stored)
        )


def _domain_events(library: Library) -> list[Any]:
    return [library.mapper.to_domain_event(_stored(r)) for r in rows_of(library)]


def test_decoding_only_the_types_a_projection_reads_keeps_the_last_event() -> None:
    library = library_log()
    rows = rows_of(library)
    decoder = RecordDecoder(library.mapper)
    only = decoder.decode_all(rows[:-1], frozenset({"Loan.Requested"}))
    assert [r.type for r in only[:-1]] == ["Loan.Requested"] * 3
    assert only[-1].position == rows[-2][0]  # the page's last event, whatever its type
    assert decoder.decode_all(rows) == [decoder.decode(r) for r in rows]


def test_pages_are_folded_unless_a_subclass_refines_apply() -> None:
    assert ShelfProjection().folds_pages and RoomsProjection().folds_pages
    named = type("Named", (ShelfProjection,), {"name": "x"})()
    assert named.folds_pages

    class Refined(ShelfProjection):
        def apply(self, *args: Any) -> None:
            super().apply(*args)

    assert not Refined().folds_pages and Refined().decode_types is None

    class Both(Refined):
        def fold_page(self, *args: Any) -> Any:
            return super().fold_page(*args)

    assert Both().folds_pages

    class Plain(ReadModelProjection):
        name = "plain"
        sources = ("library",)
        ddl = ""
        tables = ()

        def apply(self, *args: Any) -> None:
            pass

    assert not Plain().folds_pages
