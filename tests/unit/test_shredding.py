"""Crypto-shredding in memory (``api.adapters.shredding``): the Library with the
``PersonalDataMapper`` over a ``MemoryKeyStore``. Stored events hold no personal value in
clear; both decoders (the mapper, the projections' fast ``RecordDecoder``) read them back;
a destroyed key reads as erased values (never an error); changed or moved ciphertext fails
authentication; a forgotten reader can no longer act or sign in."""

from __future__ import annotations

import base64
import json
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent

from api.adapters.shredding import (
    MemoryKeyStore,
    PersonalDataMapper,
    PersonalDataTampered,
    Sealed,
    SealedAsCiphertext,
    SubjectForgotten,
)
from domain import commands as c
from domain.errors import ReaderForgotten, ReaderNotFound
from domain.library import Library
from domain.reader import FORGOTTEN_NICKNAME
from projections.records import RecordDecoder
from realtime.relay import withheld

PHONE = "13912345678"


class ShreddingLibrary(Library):
    keys = MemoryKeyStore()

    def construct_mapper(self) -> Mapper[UUID]:
        return PersonalDataMapper(self.construct_transcoder(), keys=type(self).keys)


@pytest.fixture
def app() -> ShreddingLibrary:
    ShreddingLibrary.keys = MemoryKeyStore()
    return ShreddingLibrary()


def stored(app: Library) -> list[Any]:
    return list(app.recorder.select_notifications(start=1, limit=1000))


def rows(app: Library) -> list[tuple[int, Any, int, str, bytes]]:
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in stored(app)]


def a_loan(app: Library) -> tuple[UUID, UUID, UUID]:
    owner, borrower, book, loan = uuid4(), uuid4(), uuid4(), uuid4()
    app.handle(c.RegisterReader(reader_id=owner, nickname="书主"))
    app.handle(c.RegisterReader(reader_id=borrower, nickname="小林", avatar_url="https://a/x.png"))
    app.handle(c.PublishBook(book_id=book, owner_id=owner, isbn="9787536692930", title="三体"))
    app.handle(
        c.RequestLoan(
            loan_id=loan,
            book_id=book,
            borrower_id=borrower,
            note=f"打我电话 {PHONE}",
            contact=c.Contact(wechat_id="wx_lin", phone=PHONE),
        )
    )
    return owner, borrower, loan


def test_stored_events_hold_no_personal_value_in_clear(app: ShreddingLibrary) -> None:
    _, borrower, _ = a_loan(app)
    blob = b"".join(n.state for n in stored(app))
    for clear in (PHONE, "wx_lin", "小林", "https://a/x.png", "打我电话"):
        assert clear.encode() not in blob
        assert json.dumps(clear).encode() not in blob  # nor \\u-escaped
    # the owner's nickname (no avatar: "" stays), the borrower's nickname and avatar, note, contact
    assert blob.count(b'"_type_":"sealed"') == 1 + 2 + 2
    assert borrower.hex.encode() in blob  # the subject is named, the value is not


def test_the_mapper_and_the_fast_decoder_read_the_plain_values(app: ShreddingLibrary) -> None:
    _, borrower, loan_id = a_loan(app)
    loan = app.loan(loan_id)
    assert loan.contact == {"wechat_id": "wx_lin", "phone": PHONE}
    assert loan.note == f"打我电话 {PHONE}"
    assert app.reader(borrower).nickname == "小林"
    decoder = RecordDecoder(app.mapper)
    assert decoder.fast  # sealing keeps the projections' fast path
    for row in rows(app):
        assert decoder._decode_fast(row) == decoder._decode_mapper(row)  # noqa: SLF001
    requested = next(r for r in decoder.decode_all(rows(app)) if r.type == "Loan.Requested")
    assert requested.contact["phone"] == PHONE


def test_a_destroyed_key_reads_as_erased_values_never_an_error(app: ShreddingLibrary) -> None:
    owner, borrower, loan_id = a_loan(app)
    assert ShreddingLibrary.keys.destroy(borrower)
    loan = app.loan(loan_id)  # the command side still loads it
    assert loan.contact is None and loan.note == ""
    reader = app.reader(borrower)
    assert (reader.nickname, reader.avatar_url) == (FORGOTTEN_NICKNAME, "")
    assert app.reader(owner).nickname == "书主"  # others keep theirs
    decoder = RecordDecoder(app.mapper)
    records = decoder.decode_all(rows(app))
    requested = next(r for r in records if r.type == "Loan.Requested")
    assert requested.contact is None and requested.note == ""
    registered = [r for r in records if r.type == "Reader.Registered"]
    assert {r.nickname for r in registered} == {"书主", FORGOTTEN_NICKNAME}
    for row in rows(app):
        assert decoder._decode_fast(row) == decoder._decode_mapper(row)  # noqa: SLF001


def test_a_key_never_made_reads_as_erased_too() -> None:
    keys = MemoryKeyStore()
    app = type("L", (ShreddingLibrary,), {"keys": keys})()
    a_loan(app)
    notifications = stored(app)
    other = PersonalDataMapper(app.construct_transcoder(), keys=MemoryKeyStore())
    events = [other.to_domain_event(n) for n in notifications]
    assert [e.nickname for e in events if type(e).__qualname__ == "Reader.Registered"] == [
        FORGOTTEN_NICKNAME,
        FORGOTTEN_NICKNAME,
    ]


def _requested(app: Library) -> StoredEvent:
    n = next(n for n in stored(app) if n.topic.endswith("Loan.Requested"))
    return StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)


def _with_state(event: StoredEvent, state: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        event.originator_id, event.originator_version, event.topic, json.dumps(state).encode()
    )


def test_changed_ciphertext_fails_authentication(app: ShreddingLibrary) -> None:
    a_loan(app)
    event = _requested(app)
    state = json.loads(event.state)
    version, subject, field, token = state["contact"]["_data_"].split(".", 3)
    blob = bytearray(base64.urlsafe_b64decode(token))
    blob[-1] ^= 0x01
    state["contact"]["_data_"] = ".".join(
        (version, subject, field, base64.urlsafe_b64encode(bytes(blob)).decode())
    )
    with pytest.raises(MapperDeserialisationError) as caught:
        app.mapper.to_domain_event(_with_state(event, state))
    assert isinstance(caught.value.__cause__, PersonalDataTampered)
    decoder = RecordDecoder(app.mapper)
    n = _with_state(event, state)
    with pytest.raises(MapperDeserialisationError):
        decoder.decode((1, n.originator_id, n.originator_version, n.topic, n.state))


@pytest.mark.parametrize(
    "damage",
    [
        lambda v, s, f, t: (v, s[:-1] + "g", f, t),  # a subject that is not hex
        lambda v, s, f, t: (v, s[:31], f, t),  # too short for a UUID
        lambda v, s, f, t: (v, s, f, t[:-1]),  # base64 without its padding
        lambda v, s, f, t: (v, s, f, t[:8]),  # too short for nonce and tag
        lambda v, s, f, t: ("v2", s, f, t),
    ],
)
def test_malformed_sealed_values_are_tampered_not_misread(damage: Any) -> None:
    """Decoding parses a subject once and base64 without ``base64``'s wrappers: what is
    malformed still raises ``PersonalDataTampered``, what is sound still opens."""
    keys = MemoryKeyStore()
    sealed = SealedAsCiphertext(keys)
    subject = uuid4()
    good = sealed.encode(Sealed(subject, "note", "打我电话"))
    assert sealed.decode(good) == sealed.decode(good) == "打我电话"  # the 2nd: subject known
    bad = ".".join(damage(*good.split(".", 3)))
    with pytest.raises(PersonalDataTampered):
        sealed.decode(bad)


def test_ciphertext_moved_to_another_field_or_reader_fails(app: ShreddingLibrary) -> None:
    owner, borrower, _ = a_loan(app)
    event = _requested(app)
    state = json.loads(event.state)
    # the contact's ciphertext presented as the note: the field is bound in the tag
    version, subject, _field, token = state["contact"]["_data_"].split(".", 3)
    state["note"] = {"_type_": "sealed", "_data_": f"{version}.{subject}.note.{token}"}
    with pytest.raises(MapperDeserialisationError):
        app.mapper.to_domain_event(_with_state(event, state))
    # presented as the owner's (whose key exists): the reader is bound too
    state = json.loads(event.state)
    state["contact"]["_data_"] = state["contact"]["_data_"].replace(borrower.hex, owner.hex)
    with pytest.raises(MapperDeserialisationError):
        app.mapper.to_domain_event(_with_state(event, state))
    # and garbage
    state["contact"]["_data_"] = "v1.not-a-uuid.contact.@@@"
    with pytest.raises(MapperDeserialisationError):
        app.mapper.to_domain_event(_with_state(event, state))


def test_nothing_is_sealed_for_a_forgotten_reader(app: ShreddingLibrary) -> None:
    reader = uuid4()
    app.handle(c.RegisterReader(reader_id=reader, nickname="甲"))
    ShreddingLibrary.keys.destroy(reader)
    with pytest.raises(SubjectForgotten):
        ShreddingLibrary.keys.key_for(reader)


def test_a_forgotten_reader_is_neutral_cannot_act_nor_sign_in_again(
    app: ShreddingLibrary,
) -> None:
    owner, borrower, _ = a_loan(app)
    recorded = app.handle(c.ForgetReader(reader_id=borrower))
    assert recorded.position is not None
    last = stored(app)[-1]
    assert last.topic == "domain.reader:Reader.Forgotten"
    assert app.handle(c.ForgetReader(reader_id=borrower)).position is None  # once
    with pytest.raises(ReaderForgotten):
        app.handle(c.RegisterReader(reader_id=borrower, nickname="又来了"))
    with pytest.raises(ReaderNotFound):
        app.handle(c.ChangeProfile(reader_id=borrower, nickname="新名"))
    book = uuid4()
    app.handle(c.PublishBook(book_id=book, owner_id=owner, isbn="9780140449136", title="X"))
    with pytest.raises(ReaderNotFound):
        app.handle(c.RequestLoan(loan_id=uuid4(), book_id=book, borrower_id=borrower))
    reader = app.reader(borrower, forgotten=True)
    assert (reader.nickname, reader.avatar_url, reader.forgotten) == (FORGOTTEN_NICKNAME, "", True)


def test_the_relay_withholds_personal_fields_of_items() -> None:
    item = {
        "reader_id": uuid4(),
        "seq": 3,
        "kind": "loan.requested",
        "at": "2026-01-01T00:00:00+00:00",
        "data": {"loan_id": "x", "note": "call me", "contact": {"phone": PHONE}},
    }
    public, personal = withheld(item)
    assert personal and public["data"] == {"loan_id": "x"}
    assert item["data"]["contact"] == {"phone": PHONE}  # the item itself is untouched
    chat = {**item, "kind": "chat.message", "data": {"text": "hi"}}
    assert withheld(chat) == (chat, False)
