"""Pictures in the domain, in memory: a message is a text, a picture or both; the event
records the picture's id and size (never bytes); old events without a picture still read;
covers and avatars refer to an uploaded picture; ``Media.Removed`` is recorded once."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from domain import chat_commands as cc
from domain import commands as c
from domain.chat import Chat, Conversation
from domain.chat_errors import InvalidMessage
from domain.library import Library
from domain.media import (
    Media,
    MediaRef,
    PictureNotFound,
    picture_id_for,
    picture_view,
)
from domain.reader import reader_id_for

ANN = reader_id_for("o-ann-media")
BEN = reader_id_for("o-ben-media")
PIC = "ab" * 32
PICTURE = MediaRef(id=PIC, width=800, height=600)


def _chat() -> tuple[Chat, Any]:
    chat = Chat(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    opened = chat.handle(cc.OpenConversation(reader_id=ANN, peer_id=BEN))
    return chat, opened.id


def _sent(chat: Chat, conversation_id: Any) -> list[Any]:
    return [
        e
        for e in chat.repository.event_store.get(conversation_id)
        if "MessageSent" in type(e).__name__
    ]


def test_a_picture_alone_records_its_id_and_size_and_no_bytes() -> None:
    chat, conversation = _chat()
    recorded = chat.send(
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, client_msg_id="p1", media=PICTURE
        )
    )
    [event] = _sent(chat, conversation)
    assert (event.text, event.media) == ("", {"id": PIC, "width": 800, "height": 600})
    assert recorded.media == {"id": PIC, "width": 800, "height": 600} and recorded.created
    stored = chat.mapper.to_stored_event(event)
    assert b"\xff\xd8" not in stored.state and b"/v1/media" not in stored.state


def test_text_and_picture_together_and_text_alone() -> None:
    chat, conversation = _chat()
    chat.send(
        cc.SendMessage(
            conversation_id=conversation,
            sender_id=ANN,
            text="看这本书",
            client_msg_id="p2",
            media=PICTURE,
        )
    )
    chat.send(
        cc.SendMessage(conversation_id=conversation, sender_id=BEN, text="好", client_msg_id="t")
    )
    both, text = _sent(chat, conversation)
    assert (both.text, both.media["id"]) == ("看这本书", PIC)
    assert (text.text, text.media) == ("好", None)


@pytest.mark.parametrize("text", ["", "   "])
def test_neither_text_nor_picture_is_refused(text: str) -> None:
    chat, conversation = _chat()
    with pytest.raises(InvalidMessage):
        chat.send(
            cc.SendMessage(
                conversation_id=conversation, sender_id=ANN, text=text, client_msg_id="x"
            )
        )
    assert _sent(chat, conversation) == []


def test_a_picture_with_a_blank_text_is_refused_and_a_malformed_id_is_not_found() -> None:
    chat, conversation = _chat()
    with pytest.raises(InvalidMessage):
        chat.send(
            cc.SendMessage(
                conversation_id=conversation,
                sender_id=ANN,
                text="  ",
                client_msg_id="b",
                media=PICTURE,
            )
        )
    bad = msgspec.structs.replace(PICTURE, id="not-a-picture")  # a Struct built in code
    with pytest.raises(PictureNotFound):
        chat.send(
            cc.SendMessage(
                conversation_id=conversation, sender_id=ANN, client_msg_id="c", media=bad
            )
        )
    assert _sent(chat, conversation) == []


def test_the_commands_refuse_a_malformed_picture_id_when_decoded() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(
            {
                "conversation_id": str(uuid4()),
                "sender_id": str(ANN),
                "client_msg_id": "x",
                "media": {"id": "../../etc/passwd"},
            },
            cc.SendMessage,
        )


def test_a_version_1_message_without_media_still_reads() -> None:
    chat, conversation = _chat()
    chat.send(
        cc.SendMessage(conversation_id=conversation, sender_id=ANN, text="hi", client_msg_id="v1")
    )
    [event] = _sent(chat, conversation)
    stored = chat.mapper.to_stored_event(event)
    state = msgspec.json.decode(stored.state)
    del state["media"]
    del state["class_version"]  # as version 1 stored it
    old = StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=msgspec.json.encode(state),
    )
    read = chat.mapper.to_domain_event(old)
    assert (read.text, read.media) == ("hi", None)
    assert Conversation.MessageSent.class_version == 2


def test_picture_view_shows_paths_and_a_removed_placeholder() -> None:
    assert picture_view(None) is None
    assert picture_view({"id": PIC, "width": 800, "height": 600}) == {
        "id": PIC,
        "url": f"/v1/media/{PIC}",
        "thumb_url": f"/v1/media/{PIC}/thumb",
        "width": 800,
        "height": 600,
        "removed": False,
    }
    gone = picture_view({"id": PIC, "width": 800, "height": 600, "removed": True})
    assert gone is not None and (gone["url"], gone["thumb_url"], gone["removed"]) == (
        None,
        None,
        True,
    )


def _library() -> Library:
    library = Library(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    library.handle(c.RegisterReader(reader_id=ANN, nickname="Ann"))
    return library


def test_a_cover_and_an_avatar_refer_to_an_uploaded_picture() -> None:
    library = _library()
    book_id = uuid4()
    url = f"/v1/media/{PIC}"
    library.handle(
        c.PublishBook(
            book_id=book_id,
            owner_id=ANN,
            isbn="9787536692930",
            title="三体",
            cover_url=url,
            cover_media_id=PIC,
        )
    )
    book = library.book(book_id)
    assert (book.cover_url, book.cover_media_id) == (url, PIC)
    library.handle(c.ReviseBook(book_id=book_id, actor_id=ANN, cover_url="", cover_media_id=""))
    book = library.book(book_id)
    assert (book.cover_url, book.cover_media_id) == ("", None)

    library.handle(c.ChangeProfile(reader_id=ANN, avatar_url=url, avatar_media_id=PIC))
    assert (library.reader(ANN).avatar_url, library.reader(ANN).avatar_media_id) == (url, PIC)
    library.handle(c.ChangeProfile(reader_id=ANN, avatar_url="https://x.example/a.png"))
    reader = library.reader(ANN)
    assert (reader.avatar_url, reader.avatar_media_id) == ("https://x.example/a.png", None)
    library.handle(c.ChangeProfile(reader_id=ANN, nickname="Annie"))  # the avatar stays
    assert library.reader(ANN).avatar_url == "https://x.example/a.png"


def test_media_removed_is_recorded_once() -> None:
    library = _library()
    first = library.handle(c.RemoveMedia(media_id=PIC, reason="risky"))
    again = library.handle(c.RemoveMedia(media_id=PIC, reason="risky"))
    assert first.id == picture_id_for(PIC) and first.position is not None
    assert again.position is None
    [removed] = list(library.repository.event_store.get(picture_id_for(PIC)))
    assert isinstance(removed, Media.Removed)
    assert (removed.media_id, removed.reason) == (PIC, "risky")
