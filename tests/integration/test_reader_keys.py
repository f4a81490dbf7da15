"""The data keys in PostgreSQL (``PostgresKeyStore``, table ``reader_keys``) as the Library and
Chat Applications use them: made once per reader, never in an event, destroyed for good (a
tombstone), and forgotten at once by every key store of the process."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
import pytest

from api.adapters.shredding import PersonalDataMapper, SubjectForgotten
from api.bootstrap.db import eventsourcing_env
from domain import chat_commands as cc
from domain import commands as c
from domain.chat import Chat
from domain.reader import FORGOTTEN_NICKNAME


def test_keys_are_made_once_kept_apart_from_events_and_destroyed_for_good(
    library: Any, database_url: str
) -> None:
    chat = Chat(env=eventsourcing_env(database_url, pool_size=1))
    try:
        assert isinstance(library.mapper, PersonalDataMapper)
        assert isinstance(chat.mapper, PersonalDataMapper)
        ada, bob = uuid4(), uuid4()
        library.handle(c.RegisterReader(reader_id=ada, nickname="阿达"))
        library.handle(c.RegisterReader(reader_id=bob, nickname="小波"))
        conversation = chat.handle(cc.OpenConversation(reader_id=ada, peer_id=bob)).id
        chat.send(
            cc.SendMessage(
                conversation_id=conversation,
                sender_id=ada,
                text="我的电话 13911112222",
                client_msg_id="k1",
            )
        )
        with psycopg.connect(database_url) as conn:
            (key,) = conn.execute(
                "SELECT data_key FROM reader_keys WHERE reader_id = %s", (ada,)
            ).fetchone()
            assert len(key) == 32
            for table in ("library_events", "chat_events"):
                states = b"".join(
                    bytes(r[0])
                    for r in conn.execute(f"SELECT state FROM {table}")  # noqa: S608
                )
                assert bytes(key) not in states and b"13911112222" not in states
        # the Chat's store had the key cached; the Library's destroys it
        assert chat.mapper.keys.find(ada) == bytes(key)
        assert library.mapper.keys.destroy(ada)
        assert chat.mapper.keys.find(ada) is None
        assert library.reader(ada, forgotten=True).nickname == FORGOTTEN_NICKNAME
        assert library.reader(bob).nickname == "小波"
        with pytest.raises(SubjectForgotten):
            library.mapper.keys.key_for(ada)
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT data_key, destroyed_at FROM reader_keys WHERE reader_id = %s", (ada,)
            ).fetchone()
        assert row[0] is None and row[1] is not None  # the tombstone
        # a new process (no cache) reads the erased values too
        fresh = Chat(env=eventsourcing_env(database_url, pool_size=1))
        try:
            (message,) = [
                e
                for e in fresh.events.get(conversation)
                if type(e).__qualname__ == "Conversation.MessageSent"
            ]
            assert message.text == ""
        finally:
            fresh.close()
    finally:
        chat.close()


def test_a_page_of_events_has_its_keys_looked_up_in_one_query(
    library: Any, database_url: str
) -> None:
    """``SealedAsCiphertext.prefetch`` (what the projections' decoder calls before a page):
    the subjects of the page's sealed values get their keys with one query; a destroyed key
    is known as such, a subject without a key stays unknown (``find`` asks again)."""
    from api.adapters.shredding import PostgresKeyStore, SealedAsCiphertext

    ada, bob, nobody = uuid4(), uuid4(), uuid4()
    library.handle(c.RegisterReader(reader_id=ada, nickname="阿达"))
    library.handle(c.RegisterReader(reader_id=bob, nickname="小波"))
    assert library.mapper.keys.destroy(bob)
    with psycopg.connect(database_url) as conn:
        states = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT state FROM library_events WHERE originator_id = ANY(%s)", ([ada, bob],)
            )
        ]
        (ada_key,) = conn.execute(
            "SELECT data_key FROM reader_keys WHERE reader_id = %s", (ada,)
        ).fetchone()
    queries: list[str] = []

    def transaction() -> Any:
        queries.append("transaction")
        return library.recorder.datastore.transaction(commit=True)

    keys = PostgresKeyStore(transaction)
    sealed = SealedAsCiphertext(keys)
    sealed.prefetch([*states, f'"v1.{nobody.hex}.nickname.x"'.encode()])
    assert queries == ["transaction"]
    assert keys.find(ada) == bytes(ada_key)
    assert keys.find(bob) is None
    assert queries == ["transaction"]  # both answered from the prefetch
    assert keys.find(nobody) is None
    assert queries == ["transaction", "transaction"]  # no row: not cached by the prefetch
    sealed.prefetch(states)  # all cached: no query
    assert len(queries) == 2
