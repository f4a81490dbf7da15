"""The idempotency mark (``api.adapters.eventstore``) on a real PostgreSQL: a command run
under a claimed key marks that key with its log and last position in the transaction of its
events, and only then: a refused or conflicting save leaves no mark, and nothing outside a
claim marks anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from api.adapters.eventstore import MarkingRecorder, claimed
from api.bootstrap.db import connect, eventsourcing_env
from api.bootstrap.group_commit import group_commit
from domain import commands as c
from domain.chat import Chat
from domain.errors import ConcurrentUpdate
from domain.library import Library

ISBN = "9787020002207"


@pytest.fixture(scope="module")
def library(database_url: str) -> Iterator[Library]:
    app = Library(env=eventsourcing_env(database_url, pool_size=2))
    yield app
    app.close()


def new_key(database_url: str, reader_id: UUID) -> str:
    key = f"k-{uuid4().hex}"
    with connect(database_url) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (reader_id, key, method, path, request_hash) "
            "VALUES (%s, %s, 'POST', '/t', 'h')",
            (reader_id, key),
        )
    return key


def mark(database_url: str, reader_id: UUID, key: str) -> tuple[Any, Any]:
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT committed_log, committed_position FROM idempotency_keys "
            "WHERE reader_id = %s AND key = %s",
            (reader_id, key),
        ).fetchone()
    assert row is not None
    return row["committed_log"], row["committed_position"]


def test_both_applications_use_the_marking_recorder(database_url: str, library: Library) -> None:
    chat = Chat(env=eventsourcing_env(database_url, pool_size=1))
    try:
        assert isinstance(library.recorder, MarkingRecorder)
        assert isinstance(chat.recorder, MarkingRecorder)
        assert (library.recorder.log_name, chat.recorder.log_name) == ("library", "chat")
    finally:
        chat.close()


def test_a_claimed_command_marks_its_key_with_its_position(
    database_url: str, library: Library
) -> None:
    reader = uuid4()
    key, other = new_key(database_url, reader), new_key(database_url, reader)

    with claimed(reader, key):
        recorded = library.handle(c.RegisterReader(reader_id=reader, nickname="mark"))

    assert mark(database_url, reader, key) == ("library", recorded.position)
    assert mark(database_url, reader, other) == (None, None)  # only the claimed key
    # unclaimed commands mark nothing
    library.handle(c.ChangeProfile(reader_id=reader, nickname="unclaimed"))
    assert mark(database_url, reader, other) == (None, None)


def test_the_first_save_of_a_request_keeps_its_mark(database_url: str, library: Library) -> None:
    reader = uuid4()
    key = new_key(database_url, reader)

    with claimed(reader, key):
        first = library.handle(c.RegisterReader(reader_id=reader, nickname="one"))
        library.handle(c.ChangeProfile(reader_id=reader, nickname="two"))

    assert mark(database_url, reader, key) == ("library", first.position)


def test_a_conflicting_save_leaves_no_mark(database_url: str, library: Library) -> None:
    owner = uuid4()
    library.handle(c.RegisterReader(reader_id=owner, nickname="owner"))
    book_id = uuid4()
    library.handle(c.PublishBook(book_id=book_id, owner_id=owner, isbn=ISBN, title="once", tags=[]))
    key = new_key(database_url, owner)

    with claimed(owner, key), pytest.raises(ConcurrentUpdate):
        # the same id again: the insert fails on the events table's key, and the mark with it
        library.handle(
            c.PublishBook(book_id=book_id, owner_id=owner, isbn=ISBN, title="twice", tags=[])
        )

    assert mark(database_url, owner, key) == (None, None)


def test_a_group_commit_marks_each_key_with_its_own_save(database_url: str) -> None:
    """Saves batched by group commit are inserted by the leader's thread: each key is still
    marked with the position of its own save, none with another's, none left unmarked."""
    app = Library(env=eventsourcing_env(database_url, pool_size=4))
    group = group_commit(app)
    inner = group._insert
    first_started, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def gated(events: Any, **kwargs: Any) -> Any:
        sizes.append(len(events))
        if len(sizes) == 1:  # hold the first transaction until the others have queued
            first_started.set()
            release.wait(10)
        return inner(events, **kwargs)

    group._insert = gated
    readers = [uuid4() for _ in range(3)]
    keys = [new_key(database_url, r) for r in readers]
    recorded: dict[int, c.Recorded] = {}

    def register(i: int) -> None:
        with claimed(readers[i], keys[i]):
            recorded[i] = app.handle(c.RegisterReader(reader_id=readers[i], nickname=f"g{i}"))

    try:
        first = threading.Thread(target=register, args=(0,))
        first.start()
        assert first_started.wait(10)
        others = [threading.Thread(target=register, args=(i,)) for i in (1, 2)]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 10
        while len(group._queue) < 2:
            assert time.monotonic() < deadline, "the other saves did not queue"
            time.sleep(0.01)
        release.set()
        for thread in (first, *others):
            thread.join(10)
    finally:
        release.set()
        app.close()

    assert sizes == [1, 2]  # the two queued saves shared the second transaction
    for i, reader in enumerate(readers):
        assert mark(database_url, reader, keys[i]) == ("library", recorded[i].position)
