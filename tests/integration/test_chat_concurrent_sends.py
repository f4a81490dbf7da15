"""Many members sending to one room (or conversation) at once, on the real PostgreSQL: every
send is accepted and recorded once, with distinct, gap-free ``seq``s and log positions.

Within a process the Chat application serialises the writes to one stream (a per-stream
lock); a second ``Chat`` with its own locks stands for another process, whose conflicting
saves are retried after a back-off; with and without group commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest

from api.bootstrap.db import eventsourcing_env
from api.bootstrap.group_commit import group_commit
from domain import chat_commands as cc
from domain.chat import Chat, Room, room_id_for

THREADS = 16
SENDS_PER_THREAD = 6


@pytest.fixture(scope="module", params=["one_by_one", "group_commit"])
def apps(database_url: str, request: pytest.FixtureRequest) -> Iterator[tuple[Chat, Chat]]:
    """Two Chat applications on the session database; the second one has its own write
    locks, as another process would. Each saving one by one, or each through its own group
    commit, as the server does (``LIUDONG_GROUP_COMMIT``)."""
    first = Chat(env=eventsourcing_env(database_url, pool_size=THREADS))
    second = Chat(env=eventsourcing_env(database_url, pool_size=THREADS))
    second._write_locks = tuple(threading.RLock() for _ in range(4))  # type: ignore[misc]
    if request.param == "group_commit":
        group_commit(first)
        group_commit(second)
    yield first, second
    first.close()
    second.close()


def _room(app: Chat) -> UUID:
    name = f"race-{uuid4().hex[:10]}"
    app.handle(cc.CreateRoom(name=name, title="Race"))
    return room_id_for(name)


def _send_all(apps: list[Chat], room_id: UUID) -> list[cc.MessageRecorded]:
    barrier = threading.Barrier(THREADS)

    def sender(k: int) -> list[cc.MessageRecorded]:
        app = apps[k % len(apps)]
        barrier.wait()
        return [
            app.send(
                cc.SendRoomMessage(
                    room_id=room_id,
                    sender_id=UUID(int=k + 1),
                    text=f"hello {k}/{i}",
                    client_msg_id=f"m-{k}-{i}",
                )
            )
            for i in range(SENDS_PER_THREAD)
        ]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(sender, range(THREADS)))
    return [recorded for batch in results for recorded in batch]


def _assert_all_recorded(app: Chat, room_id: UUID, recorded: list[cc.MessageRecorded]) -> None:
    total = THREADS * SENDS_PER_THREAD
    assert len(recorded) == total
    assert all(r.created for r in recorded)
    assert sorted(r.seq for r in recorded) == list(range(1, total + 1))
    positions = [r.position for r in recorded]
    assert None not in positions and len(set(positions)) == total
    assert len({r.message_id for r in recorded}) == total
    # the stream holds exactly those messages, in seq order, each once
    sent = [e for e in app.events.get(room_id) if isinstance(e, Room.MessageSent)]
    assert [e.seq for e in sent] == list(range(1, total + 1))
    assert {e.message_id for e in sent} == {r.message_id for r in recorded}
    room = app.room(room_id)
    assert room.last_seq == total


def test_concurrent_room_sends_in_one_process_are_all_recorded_gap_free(
    apps: tuple[Chat, Chat],
) -> None:
    first, _ = apps
    room_id = _room(first)
    recorded = _send_all([first], room_id)
    _assert_all_recorded(first, room_id, recorded)


def test_concurrent_room_sends_from_two_processes_are_all_recorded_gap_free(
    apps: tuple[Chat, Chat],
) -> None:
    first, second = apps
    room_id = _room(first)
    recorded = _send_all([first, second], room_id)
    _assert_all_recorded(second, room_id, recorded)


def test_concurrent_sends_to_one_conversation_are_all_recorded(apps: tuple[Chat, Chat]) -> None:
    first, second = apps
    ann, ben = uuid4(), uuid4()
    conversation = first.handle(cc.OpenConversation(reader_id=ann, peer_id=ben)).id
    barrier = threading.Barrier(8)

    def sender(k: int) -> list[int]:
        app, who = (first, ann) if k % 2 else (second, ben)
        barrier.wait()
        return [
            app.send(
                cc.SendMessage(
                    conversation_id=conversation,
                    sender_id=who,
                    text=f"hi {k}/{i}",
                    client_msg_id=f"c-{k}-{i}",
                )
            ).seq
            for i in range(5)
        ]

    with ThreadPoolExecutor(8) as pool:
        seqs = [seq for batch in pool.map(sender, range(8)) for seq in batch]
    assert sorted(seqs) == list(range(1, 41))
    assert first.conversation(conversation).last_seq == 40
