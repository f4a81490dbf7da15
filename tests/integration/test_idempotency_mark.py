"""The idempotency mark (``api.adapters.eventstore``) on a real PostgreSQL: a command run
under a claimed key marks that key with its log and last position in the transaction of its
events, and only then: a refused or conflicting save leaves no mark, and nothing outside a
claim marks anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from api.adapters.eventstore import MarkingRecorder, claimed
from api.bootstrap.db import connect, eventsourcing_env
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
