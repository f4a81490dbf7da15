"""The Chat application, in memory (``eventsourcing.popo``): given commands → when command →
then the events it recorded (read back from the notification log) or a refusal.

A refusal must raise the exact ``DomainError`` subclass and record nothing. Also here: the
retry window (de-duplication by ``client_msg_id``), snapshots, the constant cost of a send
(events read per load do not grow with the conversation), and the msgspec constraints of the
commands.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, cast
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import IntegrityError

from domain import chat_commands as cc
from domain.chat import (
    DEDUPE_WINDOW,
    SNAPSHOT_INTERVAL,
    Chat,
    Conversation,
    Room,
    _copy_to_change,
    conversation_id_for,
    message_id_for,
    room_id_for,
)
from domain.chat_errors import (
    CannotChatWithSelf,
    ConversationNotFound,
    InvalidMessage,
    InvalidRoom,
    NotAMember,
    RoomAlreadyExists,
    RoomNotFound,
)
from domain.commands import Command, Recorded
from domain.errors import ConcurrentUpdate, Conflict, DomainError, Forbidden, Invalid, NotFound
from domain.reader import reader_id_for

ANN = reader_id_for("o-ann")
BEN = reader_id_for("o-ben")
CAT = reader_id_for("o-cat")  # not in Ann and Ben's conversation
LOAN = UUID("00000000-0000-4000-8000-0000000000f1")


# -- harness ------------------------------------------------------------------------------------


@pytest.fixture
def app() -> Chat:
    return Chat(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def head(app: Chat) -> int:
    """The log position of the last recorded event (0 when nothing is recorded)."""
    return app.recorder.max_notification_id() or 0


def events_after(app: Chat, position: int) -> list[DomainEvent]:
    notifications = app.recorder.select_notifications(start=position + 1, limit=1000)
    return [cast(DomainEvent, app.mapper.to_domain_event(n)) for n in notifications]


def names(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def fields(event: DomainEvent, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(event, name) for name in names)


def when(app: Chat, command: Command) -> tuple[Any, list[DomainEvent]]:
    """Handle ``command``; return what it says it recorded and the events it did record."""
    before = head(app)
    recorded = app.handle(command)
    events = events_after(app, before)
    if events:
        assert recorded.position == head(app)
    else:
        assert recorded.position is None
    return recorded, events


def refused(app: Chat, command: Command, error: type[DomainError]) -> DomainError:
    before = head(app)
    with pytest.raises(DomainError) as info:
        app.handle(command)
    assert type(info.value) is error, f"expected {error.__name__}, got {type(info.value)!r}"
    assert head(app) == before, "a refused command recorded something"
    return info.value


def send(
    app: Chat, conversation_id: UUID, sender: UUID, text: str, client_msg_id: str
) -> cc.MessageRecorded:
    return app.send(
        cc.SendMessage(
            conversation_id=conversation_id,
            sender_id=sender,
            text=text,
            client_msg_id=client_msg_id,
        )
    )


def chatted(app: Chat, conversation_id: UUID, count: int, start: int = 0) -> None:
    """Given: ``count`` more messages, Ann and Ben taking turns."""
    for i in range(start, start + count):
        send(app, conversation_id, (ANN, BEN)[i % 2], f"message {i}", f"m-{i}")


def chatted_in_bulk(app: Chat, conversation_id: UUID, count: int, start: int = 0) -> None:
    """As ``chatted``, faster: one load and one ``save`` (which takes the same snapshots)."""
    loaded = app.conversation(conversation_id)
    for i in range(start, start + count):
        loaded.send((ANN, BEN)[i % 2], f"message {i}", f"m-{i}")
    app.save(loaded)


@pytest.fixture
def conversation(app: Chat) -> UUID:
    """Given: Ann has opened a conversation with Ben."""
    return app.handle(cc.OpenConversation(reader_id=ANN, peer_id=BEN)).id


@pytest.fixture
def room(app: Chat) -> UUID:
    """Given: an operator has created the room ``lobby``."""
    return app.handle(cc.CreateRoom(name="lobby", title="大厅")).id


# -- ids ----------------------------------------------------------------------------------------


def test_conversation_id_is_that_of_the_unordered_pair() -> None:
    assert conversation_id_for(ANN, BEN) == conversation_id_for(BEN, ANN)
    assert conversation_id_for(ANN, BEN) != conversation_id_for(ANN, CAT)
    assert conversation_id_for(ANN, BEN).version == 5


def test_room_id_comes_from_its_name() -> None:
    assert room_id_for("lobby") == room_id_for("lobby") != room_id_for("books")
    assert room_id_for("lobby") not in (conversation_id_for(ANN, BEN),)


def test_message_id_is_deterministic_per_stream_sender_and_client_msg_id() -> None:
    c1, c2 = conversation_id_for(ANN, BEN), conversation_id_for(ANN, CAT)
    assert message_id_for(c1, ANN, "x") == message_id_for(c1, ANN, "x")
    assert message_id_for(c1, ANN, "x") != message_id_for(c1, BEN, "x")
    assert message_id_for(c1, ANN, "x") != message_id_for(c2, ANN, "x")


def test_errors_hang_on_the_one_tree() -> None:
    assert issubclass(NotAMember, Forbidden)
    assert issubclass(CannotChatWithSelf, Invalid)
    assert issubclass(InvalidMessage, Invalid)
    assert issubclass(InvalidRoom, Invalid)
    assert issubclass(ConversationNotFound, NotFound)
    assert issubclass(RoomNotFound, NotFound)
    assert issubclass(RoomAlreadyExists, Conflict)
    codes = [
        e.code
        for e in (
            NotAMember,
            CannotChatWithSelf,
            InvalidMessage,
            InvalidRoom,
            ConversationNotFound,
            RoomNotFound,
            RoomAlreadyExists,
        )
    ]
    assert len(set(codes)) == len(codes)


# -- opening a conversation ---------------------------------------------------------------------


def test_open_records_opened_with_both_members_and_the_loan(app: Chat) -> None:
    recorded, events = when(app, cc.OpenConversation(reader_id=BEN, peer_id=ANN, loan_id=LOAN))

    assert recorded == Recorded(id=conversation_id_for(ANN, BEN), position=1)
    assert names(events) == ["Opened"]
    assert events[0].originator_id == recorded.id
    members, loan_id = fields(events[0], "members", "loan_id")
    assert list(members) == sorted([ANN, BEN], key=str)
    assert loan_id == LOAN
    opened = app.conversation(recorded.id)
    assert opened.members == tuple(sorted([ANN, BEN], key=str))
    assert opened.loan_id == LOAN
    assert opened.last_seq == 0
    assert opened.read_up_to(ANN) == opened.read_up_to(BEN) == 0


def test_open_without_a_loan(app: Chat) -> None:
    recorded, events = when(app, cc.OpenConversation(reader_id=ANN, peer_id=BEN))

    assert fields(events[0], "loan_id") == (None,)
    assert app.conversation(recorded.id).loan_id is None


def test_opening_again_from_either_side_returns_the_same_conversation(
    app: Chat, conversation: UUID
) -> None:
    for command in (
        cc.OpenConversation(reader_id=ANN, peer_id=BEN),
        cc.OpenConversation(reader_id=BEN, peer_id=ANN, loan_id=LOAN),
    ):
        recorded, events = when(app, command)

        assert recorded == Recorded(id=conversation, position=None)
        assert events == []
    assert app.conversation(conversation).loan_id is None  # the first opening stands


def test_opening_concurrently_is_idempotent(
    app: Chat, conversation: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other side's Opened lands between our existence check and our save.
    monkeypatch.setattr(app, "_exists", lambda _id: False)

    recorded, events = when(app, cc.OpenConversation(reader_id=BEN, peer_id=ANN))

    assert recorded == Recorded(id=conversation, position=None)
    assert events == []


def test_a_reader_cannot_open_a_conversation_with_themselves(app: Chat) -> None:
    refused(app, cc.OpenConversation(reader_id=ANN, peer_id=ANN), CannotChatWithSelf)


# -- sending ------------------------------------------------------------------------------------


def test_send_records_message_sent_with_seq_and_server_id(app: Chat, conversation: UUID) -> None:
    recorded, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="在吗？", client_msg_id="c1"
        ),
    )

    assert names(events) == ["MessageSent"]
    sent = events[0]
    assert fields(sent, "message_id", "sender_id", "text", "client_msg_id", "seq") == (
        message_id_for(conversation, ANN, "c1"),
        ANN,
        "在吗？",
        "c1",
        1,
    )
    assert recorded == cc.MessageRecorded(
        id=conversation,
        position=head(app),
        conversation_id=conversation,
        message_id=message_id_for(conversation, ANN, "c1"),
        seq=1,
        created=True,
        at=sent.timestamp,
    )
    assert app.conversation(conversation).last_seq == 1


def test_seq_counts_messages_of_both_members_and_nothing_else(
    app: Chat, conversation: UUID
) -> None:
    send(app, conversation, ANN, "one", "a")
    app.handle(cc.MarkRead(conversation_id=conversation, reader_id=BEN, up_to=1))
    second = send(app, conversation, BEN, "two", "b")
    third = send(app, conversation, ANN, "three", "c")

    assert (second.seq, third.seq) == (2, 3)
    assert app.conversation(conversation).last_seq == 3


def test_a_retried_send_returns_the_same_message_and_records_nothing(
    app: Chat, conversation: UUID
) -> None:
    first = send(app, conversation, ANN, "hello", "c1")
    send(app, conversation, BEN, "hi", "c1")  # Ben's own c1 is another message

    retried, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="hello", client_msg_id="c1"
        ),
    )

    assert events == []
    assert retried.created is False
    assert (retried.message_id, retried.seq, retried.at) == (first.message_id, 1, first.at)
    assert retried.position is None
    assert app.conversation(conversation).recent_message(first.message_id) == (1, first.at)
    assert app.conversation(conversation).recent_message(uuid4()) is None


def test_a_retry_with_other_text_still_returns_the_first_message(
    app: Chat, conversation: UUID
) -> None:
    first = send(app, conversation, ANN, "hello", "c1")

    retried, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="edited", client_msg_id="c1"
        ),
    )

    assert events == []
    assert (retried.message_id, retried.seq, retried.created) == (first.message_id, 1, False)


def test_the_same_client_msg_id_from_the_other_member_is_a_new_message(
    app: Chat, conversation: UUID
) -> None:
    first = send(app, conversation, ANN, "hello", "c1")

    other, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=BEN, text="hello", client_msg_id="c1"
        ),
    )

    assert names(events) == ["MessageSent"]
    assert other.created is True
    assert other.message_id != first.message_id
    assert other.seq == 2


def test_a_retry_older_than_the_window_records_the_same_message_id_again(
    app: Chat, conversation: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documented limit: only the last ``dedupe_window`` messages are recognised; the read
    models keep the first of two ``MessageSent`` with one ``message_id``."""
    monkeypatch.setattr(Conversation, "dedupe_window", 3)
    first = send(app, conversation, ANN, "hello", "c1")
    chatted(app, conversation, 2)
    assert send(app, conversation, ANN, "hello", "c1").created is False  # 3rd most recent
    chatted(app, conversation, 1, start=2)

    late, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="hello", client_msg_id="c1"
        ),
    )

    assert names(events) == ["MessageSent"]
    assert (late.created, late.message_id, late.seq) == (True, first.message_id, 5)
    assert len(app.conversation(conversation)._recent) == 3


def test_the_default_window_is_a_thousand_messages() -> None:
    assert DEDUPE_WINDOW == 1000
    assert Conversation.dedupe_window == Room.dedupe_window == DEDUPE_WINDOW


def test_only_members_may_send(app: Chat, conversation: UUID) -> None:
    refused(
        app,
        cc.SendMessage(conversation_id=conversation, sender_id=CAT, text="hi", client_msg_id="c1"),
        NotAMember,
    )


def test_sending_to_an_unknown_conversation_is_refused(app: Chat) -> None:
    refused(
        app,
        cc.SendMessage(
            conversation_id=conversation_id_for(ANN, CAT),
            sender_id=ANN,
            text="hi",
            client_msg_id="1",
        ),
        ConversationNotFound,
    )


@pytest.mark.parametrize("text", ["", " ", "\n\t", "字" * 2001])
def test_a_message_must_have_1_to_2000_characters_and_not_be_blank(
    app: Chat, conversation: UUID, text: str
) -> None:
    refused(
        app,
        cc.SendMessage(conversation_id=conversation, sender_id=ANN, text=text, client_msg_id="c1"),
        InvalidMessage,
    )


def test_a_message_of_2000_characters_is_accepted(app: Chat, conversation: UUID) -> None:
    recorded = send(app, conversation, ANN, "字" * 2000, "c1")

    assert recorded.created is True


@pytest.mark.parametrize("client_msg_id", ["", "x" * 65])
def test_a_client_msg_id_must_have_1_to_64_characters(
    app: Chat, conversation: UUID, client_msg_id: str
) -> None:
    refused(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="hi", client_msg_id=client_msg_id
        ),
        InvalidMessage,
    )


def racing_writer(app: Chat, monkeypatch: pytest.MonkeyPatch, times: int) -> Callable[[], int]:
    """Make the next ``times`` loads of a conversation stale: Ben sends a message between the
    load and the save. Returns a function telling how many interfering sends happened."""
    load = app.conversation
    done: list[int] = []

    def stale_load(conversation_id: UUID) -> Conversation:
        loaded = load(conversation_id)
        if len(done) < times:
            done.append(1)
            monkeypatch.setattr(app, "conversation", load)
            send(app, conversation_id, BEN, "racing", f"race-{len(done)}")
            monkeypatch.setattr(app, "conversation", stale_load)
        return loaded

    monkeypatch.setattr(app, "conversation", stale_load)
    return lambda: len(done)


def test_a_send_that_loses_a_race_is_retried_with_the_next_seq(
    app: Chat, conversation: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    races = racing_writer(app, monkeypatch, times=1)

    recorded, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="mine", client_msg_id="c1"
        ),
    )

    assert races() == 1
    assert [fields(e, "sender_id", "seq") for e in events] == [(BEN, 1), (ANN, 2)]
    assert (recorded.seq, recorded.created) == (2, True)


def test_a_send_that_keeps_losing_races_is_refused_as_concurrent_update(
    app: Chat, conversation: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    races = racing_writer(app, monkeypatch, times=Chat.max_attempts)

    with pytest.raises(ConcurrentUpdate) as info:
        send(app, conversation, ANN, "mine", "c1")

    assert isinstance(info.value.__cause__, IntegrityError)
    assert races() == Chat.max_attempts
    monkeypatch.undo()
    senders = {
        e.sender_id  # type: ignore[attr-defined]
        for e in events_after(app, 0)
        if type(e).__name__ == "MessageSent"
    }
    assert senders == {BEN}


# -- read receipts ------------------------------------------------------------------------------


def test_mark_read_records_messages_read(app: Chat, conversation: UUID) -> None:
    chatted(app, conversation, 3)

    recorded, events = when(app, cc.MarkRead(conversation_id=conversation, reader_id=BEN, up_to=2))

    assert recorded.id == conversation
    assert names(events) == ["MessagesRead"]
    assert fields(events[0], "reader_id", "up_to_seq") == (BEN, 2)
    assert app.conversation(conversation).read_up_to(BEN) == 2
    assert app.conversation(conversation).read_up_to(ANN) == 0


@pytest.mark.parametrize("up_to", [0, 1, 2])
def test_read_positions_never_go_backwards(app: Chat, conversation: UUID, up_to: int) -> None:
    chatted(app, conversation, 3)
    app.handle(cc.MarkRead(conversation_id=conversation, reader_id=BEN, up_to=2))

    recorded, events = when(
        app, cc.MarkRead(conversation_id=conversation, reader_id=BEN, up_to=up_to)
    )

    assert events == []
    assert recorded == Recorded(id=conversation, position=None)
    assert app.conversation(conversation).read_up_to(BEN) == 2


def test_reading_beyond_the_last_message_reads_up_to_it(app: Chat, conversation: UUID) -> None:
    chatted(app, conversation, 3)

    _, events = when(app, cc.MarkRead(conversation_id=conversation, reader_id=ANN, up_to=99))

    assert fields(events[0], "up_to_seq") == (3,)
    _, again = when(app, cc.MarkRead(conversation_id=conversation, reader_id=ANN, up_to=99))
    assert again == []


def test_reading_an_empty_conversation_records_nothing(app: Chat, conversation: UUID) -> None:
    _, events = when(app, cc.MarkRead(conversation_id=conversation, reader_id=ANN, up_to=5))

    assert events == []


def test_only_members_may_mark_read(app: Chat, conversation: UUID) -> None:
    chatted(app, conversation, 1)

    refused(app, cc.MarkRead(conversation_id=conversation, reader_id=CAT, up_to=1), NotAMember)
    with pytest.raises(NotAMember):
        app.conversation(conversation).read_up_to(CAT)


def test_marking_read_in_an_unknown_conversation_is_refused(app: Chat) -> None:
    refused(
        app,
        cc.MarkRead(conversation_id=uuid4(), reader_id=ANN, up_to=1),
        ConversationNotFound,
    )


# -- hiding -------------------------------------------------------------------------------------


def test_hide_records_message_hidden_for_one_side(app: Chat, conversation: UUID) -> None:
    message_id = send(app, conversation, BEN, "oops", "c1").message_id

    recorded, events = when(
        app, cc.HideMessage(conversation_id=conversation, reader_id=ANN, message_id=message_id)
    )

    assert recorded.id == conversation
    assert names(events) == ["MessageHidden"]
    assert fields(events[0], "reader_id", "message_id") == (ANN, message_id)


def test_only_members_may_hide(app: Chat, conversation: UUID) -> None:
    message_id = send(app, conversation, BEN, "oops", "c1").message_id

    refused(
        app,
        cc.HideMessage(conversation_id=conversation, reader_id=CAT, message_id=message_id),
        NotAMember,
    )


def test_hiding_in_an_unknown_conversation_is_refused(app: Chat) -> None:
    refused(
        app,
        cc.HideMessage(conversation_id=uuid4(), reader_id=ANN, message_id=uuid4()),
        ConversationNotFound,
    )


# -- rooms --------------------------------------------------------------------------------------


def test_create_room_records_created(app: Chat) -> None:
    recorded, events = when(app, cc.CreateRoom(name="lobby", title="大厅"))

    assert recorded == Recorded(id=room_id_for("lobby"), position=1)
    assert names(events) == ["Created"]
    assert fields(events[0], "name", "title") == ("lobby", "大厅")
    created = app.room(recorded.id)
    assert (created.name, created.title, created.last_seq) == ("lobby", "大厅", 0)


def test_creating_a_room_again_with_the_same_title_is_idempotent(app: Chat, room: UUID) -> None:
    recorded, events = when(app, cc.CreateRoom(name="lobby", title="大厅"))

    assert recorded == Recorded(id=room, position=None)
    assert events == []


def test_creating_a_room_again_with_another_title_is_refused(app: Chat, room: UUID) -> None:
    refused(app, cc.CreateRoom(name="lobby", title="Lobby"), RoomAlreadyExists)


def test_creating_a_room_concurrently_is_idempotent(
    app: Chat, room: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "_exists", lambda _id: False)

    recorded, events = when(app, cc.CreateRoom(name="lobby", title="大厅"))

    assert recorded == Recorded(id=room, position=None)
    assert events == []


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("", "t"),
        ("-lobby", "t"),
        ("Lobby", "t"),
        ("大厅", "t"),
        ("a" * 65, "t"),
        ("ok", ""),
        ("ok", "  "),
        ("ok", "t" * 101),
    ],
)
def test_a_room_needs_a_slug_name_and_a_title(app: Chat, name: str, title: str) -> None:
    refused(app, cc.CreateRoom(name=name, title=title), InvalidRoom)


def test_anyone_may_send_in_a_room_with_seq_and_dedupe(app: Chat, room: UUID) -> None:
    recorded, events = when(
        app, cc.SendRoomMessage(room_id=room, sender_id=CAT, text="大家好", client_msg_id="r1")
    )

    assert names(events) == ["MessageSent"]
    assert type(events[0]) is Room.MessageSent
    assert fields(events[0], "message_id", "sender_id", "text", "client_msg_id", "seq") == (
        message_id_for(room, CAT, "r1"),
        CAT,
        "大家好",
        "r1",
        1,
    )
    assert (recorded.id, recorded.conversation_id, recorded.seq) == (room, room, 1)
    assert recorded.at == events[0].timestamp

    again, none = when(
        app, cc.SendRoomMessage(room_id=room, sender_id=CAT, text="大家好", client_msg_id="r1")
    )
    assert none == []
    assert (again.message_id, again.seq, again.created) == (recorded.message_id, 1, False)
    second = app.send(
        cc.SendRoomMessage(room_id=room, sender_id=ANN, text="hi", client_msg_id="r1")
    )
    assert second.seq == 2


def test_room_messages_are_checked_like_conversation_messages(app: Chat, room: UUID) -> None:
    refused(
        app,
        cc.SendRoomMessage(room_id=room, sender_id=ANN, text=" ", client_msg_id="r1"),
        InvalidMessage,
    )


def test_sending_to_an_unknown_room_is_refused(app: Chat, conversation: UUID) -> None:
    refused(
        app,
        cc.SendRoomMessage(
            room_id=room_id_for("nowhere"), sender_id=ANN, text="hi", client_msg_id="1"
        ),
        RoomNotFound,
    )
    # A conversation is not a room, nor a room a conversation.
    refused(
        app,
        cc.SendRoomMessage(room_id=conversation, sender_id=ANN, text="hi", client_msg_id="1"),
        RoomNotFound,
    )


def test_a_room_is_not_a_conversation(app: Chat, room: UUID) -> None:
    refused(
        app,
        cc.SendMessage(conversation_id=room, sender_id=ANN, text="hi", client_msg_id="1"),
        ConversationNotFound,
    )


# -- snapshots ----------------------------------------------------------------------------------


def replayed(app: Chat, aggregate_id: UUID) -> Any:
    """The aggregate rebuilt from all its events, ignoring snapshots."""
    return project_aggregate(None, app.events.get(aggregate_id))


def test_snapshots_are_taken_every_100_versions_and_used_to_load(
    app: Chat, conversation: UUID
) -> None:
    chatted(app, conversation, 250)
    app.handle(cc.MarkRead(conversation_id=conversation, reader_id=BEN, up_to=240))
    assert app.snapshots is not None

    versions = [s.originator_version for s in app.snapshots.get(conversation)]

    assert SNAPSHOT_INTERVAL == 100
    assert versions == [100, 200]
    loaded: object = app.repository.get(conversation)
    assert isinstance(loaded, Conversation)
    assert (loaded.version, loaded.last_seq, loaded.read_up_to(BEN)) == (252, 250, 240)
    assert vars(loaded) == vars(replayed(app, conversation))


def test_a_retry_is_recognised_after_loading_from_a_snapshot(app: Chat, conversation: UUID) -> None:
    first = send(app, conversation, ANN, "hello", "c1")
    chatted(app, conversation, 150)  # snapshot at version 100 holds c1 in its window

    retried, events = when(
        app,
        cc.SendMessage(
            conversation_id=conversation, sender_id=ANN, text="hello", client_msg_id="c1"
        ),
    )

    assert events == []
    assert (retried.message_id, retried.seq, retried.at) == (first.message_id, 1, first.at)


def test_rooms_are_snapshotted_too(app: Chat, room: UUID) -> None:
    for i in range(120):
        app.handle(
            cc.SendRoomMessage(room_id=room, sender_id=ANN, text=f"m{i}", client_msg_id=str(i))
        )
    assert app.snapshots is not None

    assert [s.originator_version for s in app.snapshots.get(room)] == [100]
    loaded = app.room(room)
    assert (loaded.name, loaded.last_seq) == ("lobby", 120)
    assert vars(loaded) == vars(replayed(app, room))


def test_a_snapshot_already_stored_is_not_an_error(app: Chat, conversation: UUID) -> None:
    chatted(app, conversation, 99)  # version 100: snapshot taken by the send

    app.take_snapshot(conversation, version=100)

    assert app.snapshots is not None
    assert [s.originator_version for s in app.snapshots.get(conversation)] == [100]


# -- constant cost ------------------------------------------------------------------------------


class ReadCounter:
    """Counts the stored events and snapshots the application reads (by wrapping the
    ``get`` of its event store and snapshot store)."""

    def __init__(self, app: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events = 0
        self.snapshots = 0
        assert app.snapshots is not None
        monkeypatch.setattr(app.events, "get", self._wrap(app.events.get, "events"))
        monkeypatch.setattr(app.snapshots, "get", self._wrap(app.snapshots.get, "snapshots"))

    def _wrap(self, get: Callable[..., Any], counter: str) -> Callable[..., Iterator[Any]]:
        def counting_get(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for item in get(*args, **kwargs):
                setattr(self, counter, getattr(self, counter) + 1)
                yield item

        return counting_get

    def measure(self, action: Callable[[], Any]) -> tuple[int, int]:
        """(events read, snapshots read) by ``action``."""
        self.events = self.snapshots = 0
        action()
        return self.events, self.snapshots


def test_loading_and_sending_cost_the_same_at_message_1000_as_at_message_10(
    app: Chat, conversation: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = ReadCounter(app, monkeypatch)

    def load() -> object:
        return app.repository.get(conversation)

    chatted(app, conversation, 10)
    at_10 = counter.measure(load)
    chatted_in_bulk(app, conversation, 990, start=10)
    at_1000 = counter.measure(load)

    # Opened + 10 messages, no snapshot yet; then the snapshot of version 1000 + 1 event.
    assert at_10 == (11, 0)
    assert at_1000 == (1, 1)

    # The worst case over a whole snapshot interval, for a load and for a complete send
    # (a send at a multiple of 100 also reads to take the snapshot).
    worst_load = worst_send = 0
    for i in range(1000, 1000 + SNAPSHOT_INTERVAL):
        worst_load = max(worst_load, sum(counter.measure(load)))
        worst_send = max(
            worst_send,
            sum(counter.measure(partial(send, app, conversation, ANN, "x", f"w-{i}"))),
        )
    assert worst_load <= SNAPSHOT_INTERVAL + 1
    assert worst_send <= 2 * (SNAPSHOT_INTERVAL + 1)
    assert app.conversation(conversation).last_seq == 1100


# -- commands (msgspec) -------------------------------------------------------------------------


CHAT_STRUCTS = [
    cc.OpenConversation,
    cc.SendMessage,
    cc.MarkRead,
    cc.HideMessage,
    cc.CreateRoom,
    cc.SendRoomMessage,
]


@pytest.mark.parametrize("command", CHAT_STRUCTS, ids=lambda t: t.__name__)
def test_every_command_is_frozen_strict_keyword_only_and_handled(command: type[Command]) -> None:
    config = command.__struct_config__
    assert config.frozen
    assert config.forbid_unknown_fields
    kinds = {p.kind for p in inspect.signature(command).parameters.values()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}
    assert command in Chat.__dict__["handle"].dispatcher.registry


def test_message_recorded_is_frozen_and_keyword_only() -> None:
    assert cc.MessageRecorded.__struct_config__.frozen
    kinds = {p.kind for p in inspect.signature(cc.MessageRecorded).parameters.values()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}


def test_commands_decode_from_json() -> None:
    conversation_id = conversation_id_for(ANN, BEN)
    body = b'{"conversation_id": "%s", "sender_id": "%s", "text": "hi", "client_msg_id": "c1"}' % (
        str(conversation_id).encode(),
        str(ANN).encode(),
    )

    command = msgspec.json.decode(body, type=cc.SendMessage)

    assert command == cc.SendMessage(
        conversation_id=conversation_id, sender_id=ANN, text="hi", client_msg_id="c1"
    )


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        # an empty text is the aggregate's to refuse (unless a picture comes with it)
        (cc.SendMessage, {"text": "x", "client_msg_id": "c", "media": {"id": "nope"}}),
        (cc.SendMessage, {"text": "x" * 2001, "client_msg_id": "c"}),
        (cc.SendMessage, {"text": "x", "client_msg_id": ""}),
        (cc.SendMessage, {"text": "x", "client_msg_id": "c" * 65}),
        (cc.SendMessage, {"text": "x", "client_msg_id": "c", "seq": 3}),
        (cc.MarkRead, {"up_to": -1}),
        (cc.CreateRoom, {"name": "Not A Slug", "title": "t"}),
        (cc.CreateRoom, {"name": "ok", "title": ""}),
        (cc.SendRoomMessage, {"text": "x" * 2001, "client_msg_id": "c"}),
    ],
)
def test_commands_enforce_the_contract_limits(kind: type[Command], body: dict[str, Any]) -> None:
    ids = {
        "conversation_id": str(uuid4()),
        "room_id": str(uuid4()),
        "sender_id": str(ANN),
        "reader_id": str(ANN),
    }
    wanted = {f for f in kind.__struct_fields__ if f in ids}

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**{f: ids[f] for f in wanted}, **body}, type=kind)


def test_message_recorded_is_a_recorded_and_encodes_to_json(app: Chat, conversation: UUID) -> None:
    recorded = send(app, conversation, ANN, "hi", "c1")

    assert isinstance(recorded, Recorded)
    encoded = msgspec.json.decode(msgspec.json.encode(recorded))
    assert encoded["message_id"] == str(recorded.message_id)
    assert encoded["conversation_id"] == encoded["id"] == str(conversation)
    assert (encoded["seq"], encoded["created"]) == (1, True)
    assert encoded["at"].endswith("Z")


def test_an_unknown_command_is_a_type_error(app: Chat) -> None:
    with pytest.raises(TypeError):
        app.handle(Command())


def test_a_copy_of_a_kept_stream_changes_without_changing_the_kept_one() -> None:
    """``Chat`` loads a stream it wrote last from a copy of the one it kept: a command on the
    copy (new message, retry window, read position) leaves the kept stream as it was."""
    ann, ben = uuid4(), uuid4()
    kept = Conversation.open(ann, ben)
    kept.send(ann, "first", "c1")
    kept.collect_events()
    copied = _copy_to_change(kept)
    copied.send(ben, "second", "c2")
    copied.mark_read(ann, 2)
    assert (kept.last_seq, len(kept._recent), kept.pending_events) == (1, 1, [])
    assert kept._read == {str(ann): 0, str(ben): 0}
    assert (copied.last_seq, len(copied._recent), len(copied.pending_events)) == (2, 2, 2)
    assert copied._read[str(ann)] == 2
    assert kept.send(ben, "second", "c2").seq == 2  # its window never saw the copy's send
