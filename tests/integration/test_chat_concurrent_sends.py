"""Many members sending to one room (or conversation) at once, on the real PostgreSQL: every
send is accepted and recorded once, with distinct, gap-free ``seq``s and log positions.

Within a process the Chat application serialises the writes to one stream (a per-stream
lock), and the sends that wait for it are written together (one load, one save); a second
``Chat`` with its own locks stands for another process, whose conflicting saves are retried
after a back-off; with and without group commit."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import pytest

from api.bootstrap.db import eventsourcing_env
from api.bootstrap.group_commit import group_commit
from domain import chat_commands as cc
from domain.chat import Chat, Room, room_id_for
from domain.chat_errors import InvalidMessage

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


@contextlib.contextmanager
def _counting_saves(app: Chat) -> Iterator[list[int]]:
    """Count ``app``'s saves in the block: the list's one item."""
    saves = [0]
    save = app.save

    def counting_save(*args: object, **kwargs: object) -> object:
        saves[0] += 1
        return save(*args, **kwargs)  # type: ignore[arg-type]

    app.save = counting_save  # type: ignore[method-assign]
    try:
        yield saves
    finally:
        del app.save


def _send_while_the_stream_is_held(
    app: Chat, room_id: UUID, texts: list[str]
) -> tuple[list[cc.MessageRecorded | Exception], int]:
    """Send ``texts`` to the room from one thread each while this thread holds the room's
    write lock, so that all of them wait for it; then let them go. Returns each send's
    outcome (in ``texts``' order) and how many saves the application made."""

    def sender(k: int) -> cc.MessageRecorded | Exception:
        try:
            return app.send(
                cc.SendRoomMessage(
                    room_id=room_id,
                    sender_id=UUID(int=k + 1),
                    text=texts[k],
                    client_msg_id=f"held-{k}",
                )
            )
        except Exception as exc:
            return exc

    with _counting_saves(app) as saves, ThreadPoolExecutor(len(texts)) as pool:
        with app._write_lock(room_id):
            outcomes = [pool.submit(sender, k) for k in range(len(texts))]
            deadline = time.monotonic() + 10
            while len(app._combining.get(room_id, ())) < len(texts):
                assert time.monotonic() < deadline, "the sends never queued"
                time.sleep(0.001)
        results = [outcome.result(10) for outcome in outcomes]
    return results, saves[0]


def test_room_sends_waiting_for_the_stream_are_saved_together_each_with_its_own_position(
    apps: tuple[Chat, Chat],
) -> None:
    first, _ = apps
    room_id = _room(first)
    recorded, saves = _send_while_the_stream_is_held(first, room_id, [f"t{k}" for k in range(8)])
    assert saves == 1  # one load, one transaction for the eight
    assert all(isinstance(r, cc.MessageRecorded) and r.created for r in recorded)
    sends = [r for r in recorded if isinstance(r, cc.MessageRecorded)]
    assert sorted(r.seq for r in sends) == list(range(1, 9))
    # each send's position is the log position of its own event (version seq + 1)
    notifications = first.recorder.select_notifications(
        start=min(r.position or 0 for r in sends), limit=100
    )
    position_of = {n.originator_version: n.id for n in notifications if n.originator_id == room_id}
    assert all(r.position == position_of[r.seq + 1] for r in sends)
    assert [e.text for e in first.events.get(room_id) if isinstance(e, Room.MessageSent)] == [
        f"t{k}" for k in sorted(range(8), key=lambda k: sends[k].seq)
    ]


def test_a_refused_send_among_sends_saved_together_fails_alone(apps: tuple[Chat, Chat]) -> None:
    first, _ = apps
    room_id = _room(first)
    texts = ["one", "two", "   ", "four", "five"]  # a blank message is refused
    outcomes, saves = _send_while_the_stream_is_held(first, room_id, texts)
    assert saves == 1
    assert isinstance(outcomes[2], InvalidMessage)
    sends = [o for k, o in enumerate(outcomes) if k != 2]
    assert all(isinstance(r, cc.MessageRecorded) and r.created for r in sends)
    assert sorted(r.seq for r in sends) == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert first.room(room_id).last_seq == 4


def test_conversation_sends_waiting_for_the_stream_are_saved_one_by_one(
    apps: tuple[Chat, Chat],
) -> None:
    """Conversation commands may carry an ``Idempotency-Key`` (HTTP), which a save marks
    for the saving thread's request only: they are never combined (room sends are)."""
    first, _ = apps
    ann, ben = uuid4(), uuid4()
    conversation = first.handle(cc.OpenConversation(reader_id=ann, peer_id=ben)).id

    def sender(k: int) -> cc.MessageRecorded:
        return first.send(
            cc.SendMessage(
                conversation_id=conversation,
                sender_id=ann if k % 2 else ben,
                text=f"held {k}",
                client_msg_id=f"held-{k}",
            )
        )

    with _counting_saves(first) as saves, ThreadPoolExecutor(4) as pool:
        with first._write_lock(conversation):
            outcomes = [pool.submit(sender, k) for k in range(4)]
            time.sleep(0.2)  # all four wait for the lock
            assert conversation not in first._combining
        sent = [outcome.result(10) for outcome in outcomes]
    assert saves == [4]
    assert sorted(r.seq for r in sent) == [1, 2, 3, 4]
