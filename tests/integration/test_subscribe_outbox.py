"""The notifier's tables on a real PostgreSQL (``api.adapters.subscribe.store``), in a
database of their own: inbox items and log rows are written by hand there (a stored
``Reader.Forgotten`` this code base cannot decode yet would stop the projections of the
session's database), and no projection runs on it.

- following records each item once, with the tracking position, whatever is repeated;
- claim / retry / refused / interrupted move the grants as documented;
- a ``Reader.Forgotten`` in the followed range deletes that reader's grants and unsent rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from api.adapters.subscribe import FORGOTTEN_TOPIC, Grants, Outbox, Templates
from api.bootstrap.db import make_pool, migrate
from projections.inbox import InboxProjection
from projections.versions import ensure_active_version

TEMPLATES = Templates.from_dict(
    {
        "template": [
            {"kind": "loan.requested", "template_id": "T", "data": {"thing1": "{book.title}"}},
            {"kind": "chat.message", "template_id": "C", "data": {"thing1": "{text}"}},
        ]
    }
)


@pytest.fixture(scope="module")
def own_database(server_url: str) -> Iterator[tuple[str, str]]:
    name = f"liudong_notify_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    try:
        migrate(url)
        schema = ensure_active_version(url, InboxProjection())
        yield url, schema
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pool(own_database: tuple[str, str]) -> Iterator[Any]:
    pool = make_pool(own_database[0], size=2)
    try:
        yield pool
    finally:
        pool.close()


def log_event(pool: Any, schema: str, topic: str, originator: UUID) -> int:
    """A row of the library log (its state is never decoded here); the inbox is moved to it."""
    with pool.connection() as conn:
        position = conn.execute(
            "INSERT INTO library_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, %s, '\\x00') RETURNING notification_id",
            (uuid.uuid4() if topic != FORGOTTEN_TOPIC else originator, topic),
        ).fetchone()["notification_id"]
        conn.execute(
            "UPDATE projection_tracking SET position = %s WHERE schema_name = %s "
            "AND source = 'library'",
            (position, schema),
        )
    return int(position)


def item(pool: Any, schema: str, reader: UUID, kind: str, data: dict[str, Any]) -> int:
    position = log_event(pool, schema, "domain.loan:Loan.Requested", reader)
    with pool.connection() as conn:
        conn.execute(
            f'INSERT INTO "{schema}".items (reader_id, seq, kind, at, data, source, position) '
            "VALUES (%s, %s, %s, %s, %s, 'library', %s)",
            (reader, position, kind, datetime.now(UTC), Jsonb(data), position),
        )
    return position


def loan_requested(pool: Any, schema: str, lender: UUID, title: str = "百年孤独") -> int:
    return item(pool, schema, lender, "loan.requested", {"book": {"title": title}})


def rows(pool: Any, reader: UUID) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return list(
            conn.execute(
                "SELECT * FROM subscribe_notifications WHERE reader_id = %s ORDER BY position",
                (reader,),
            ).fetchall()
        )


def test_following_records_each_item_once_and_forgetting_deletes(
    pool: Any, own_database: tuple[str, str]
) -> None:
    _, schema = own_database
    outbox, grants = Outbox(pool, TEMPLATES), Grants(pool)
    forgotten, other = uuid.uuid4(), uuid.uuid4()
    before = loan_requested(pool, schema, forgotten, "not announced")
    assert outbox.follow("library") == (0, False)  # the first look starts at the inbox
    assert rows(pool, forgotten) == []
    grants.add(forgotten, [("T", 2)])
    grants.add(other, [("T", 1)])
    at = loan_requested(pool, schema, forgotten)
    loan_requested(pool, schema, other)
    assert outbox.follow("library") == (2, False)
    assert outbox.follow("library") == (0, False)  # nothing twice
    [row] = rows(pool, forgotten)
    assert (row["position"], row["status"], row["data"]) == (
        at,
        "pending",
        {"thing1": {"value": "百年孤独"}},
    )
    assert row["position"] > before
    log_event(pool, schema, FORGOTTEN_TOPIC, forgotten)
    assert outbox.follow("library") == (0, False)
    assert rows(pool, forgotten) == [] and grants.left(forgotten) == {}
    assert len(rows(pool, other)) == 1 and grants.left(other) == {"T": 1}
    status = outbox.status(("library",))
    assert status["sources"]["library"]["lag"] == 0


def test_follow_moves_at_most_a_chunk_and_says_more_follows(
    pool: Any, own_database: tuple[str, str]
) -> None:
    _, schema = own_database
    outbox, reader = Outbox(pool, TEMPLATES), uuid.uuid4()
    outbox.follow("library")
    for _ in range(3):
        loan_requested(pool, schema, reader)
    assert outbox.follow("library", chunk=2) == (2, True)
    assert outbox.follow("library", chunk=2) == (1, False)
    assert len(rows(pool, reader)) == 3


def test_claims_use_grants_and_outcomes_move_them(pool: Any, own_database: tuple[str, str]) -> None:
    _, schema = own_database
    outbox, grants, reader = Outbox(pool, TEMPLATES), Grants(pool), uuid.uuid4()
    outbox.follow("library")
    grants.add(reader, [("T", 2)])
    first = loan_requested(pool, schema, reader)
    second = loan_requested(pool, schema, reader)
    third = loan_requested(pool, schema, reader)
    outbox.follow("library")
    claim = outbox.claim(("library", first, reader))
    assert claim is not None and claim.attempts == 1 and grants.left(reader) == {"T": 1}
    assert outbox.claim(("library", first, reader)) is None  # taken: not twice
    outbox.retry(claim, "busy", 0)
    assert grants.left(reader) == {"T": 2}  # given back
    assert [r["status"] for r in rows(pool, reader)] == ["pending"] * 3
    claim = outbox.claim(("library", first, reader))
    assert claim is not None and claim.attempts == 2
    assert outbox.interrupted(0) == 1  # its process died during the call
    assert rows(pool, reader)[0]["status"] == "failed"
    assert grants.left(reader) == {"T": 1}  # may have been delivered: stays used
    claim = outbox.claim(("library", second, reader))
    assert claim is not None
    outbox.refused(claim, "43101")
    assert grants.left(reader) == {"T": 0}
    assert outbox.claim(("library", third, reader)) is None
    assert [(r["status"], r["reason"]) for r in rows(pool, reader)] == [
        ("failed", None),
        ("refused", "43101"),
        ("skipped", "no_grant"),
    ]
    assert grants.add(reader, [("T", 5000)]) == {"T": 1000}  # capped


def test_no_message_for_a_readers_own_act(pool: Any, own_database: tuple[str, str]) -> None:
    _, schema = own_database
    outbox, sender, peer = Outbox(pool, TEMPLATES), uuid.uuid4(), uuid.uuid4()
    outbox.follow("library")
    message = {"text": "你好", "sender": {"id": str(sender), "nickname": "甲"}}
    item(pool, schema, sender, "chat.message", message)  # the sender's other devices
    item(pool, schema, peer, "chat.message", message)
    assert outbox.follow("library") == (1, False)
    assert rows(pool, sender) == [] and len(rows(pool, peer)) == 1


def test_rows_done_are_purged_after_the_retention(pool: Any, own_database: tuple[str, str]) -> None:
    _, schema = own_database
    outbox, reader = Outbox(pool, TEMPLATES), uuid.uuid4()
    outbox.follow("library")
    done, waiting = loan_requested(pool, schema, reader), loan_requested(pool, schema, reader)
    outbox.follow("library")
    outbox.skip(("library", done, reader), "online")
    with pool.connection() as conn:
        conn.execute(
            "UPDATE subscribe_notifications SET updated_at = now() - interval '31 days' "
            "WHERE reader_id = %s",
            (reader,),
        )
    assert outbox.purge(30 * 86400) == 1  # the pending one stays, however old
    assert [r["position"] for r in rows(pool, reader)] == [waiting]
