"""``liudong replay --until T --schema NAME`` against the real PostgreSQL, through click's
CliRunner: the read models as they were at T, in a schema of their own, with the live
versions and the registry untouched (``projections.replay``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from psycopg.rows import dict_row

from api.cli import main
from domain import chat_commands as cc
from domain import commands as c
from domain.chat import Chat
from domain.library import Library
from projections.replay import ReplayFailed, SchemaRefused, check_schema_name
from projections.replay import replay as run_replay
from projections.shelf import ShelfProjection
from projections.source import Source
from tests.integration.activity import reader

SCHEMAS = (
    "analyst_t1",
    "analyst_all",
    "analyst_all_inbox",
    "analyst_all_rooms",
    "analyst_empty",
    "analyst_other",
    "analyst_poison",
    "ref_t1",
    "ref_t2",
)


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn
        for schema in SCHEMAS:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def replay(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["replay", *args], env={"DATABASE_URL": database_url})


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def instant() -> datetime:
    time.sleep(0.02)
    now = datetime.now(UTC)
    time.sleep(0.02)
    return now


@dataclass
class Timeline:
    owner: UUID
    borrower: UUID
    lent: UUID  # b1: revised, then lent under loan1 before t1; returned after t1
    requested: UUID  # b2: loan2 requested before t1, declined after
    withdrawn: UUID  # b3: withdrawn before t1, relisted after
    late: UUID  # b4: published after t1
    loan1: UUID
    loan2: UUID
    conversation: UUID
    library_cut: int  # the library log's head at t1
    chat_cut: int
    t1: datetime
    t2: datetime  # after everything


def publish(library: Library, owner: UUID, title: str) -> UUID:
    book = uuid4()
    library.handle(c.PublishBook(book_id=book, owner_id=owner, isbn="9787536692930", title=title))
    return book


@pytest.fixture(scope="module")
def timeline(library: Library, chat: Chat) -> Timeline:
    owner, borrower = reader(library, "replay-owner"), reader(library, "replay-borrower")
    b1, b2, b3 = (publish(library, owner, f"回放 {i}") for i in (1, 2, 3))
    library.handle(c.ReviseBook(book_id=b1, actor_id=owner, title="回放 1 修订"))
    loan1, loan2 = uuid4(), uuid4()
    library.handle(c.RequestLoan(loan_id=loan1, book_id=b1, borrower_id=borrower, note="想读"))
    library.handle(c.ApproveLoan(loan_id=loan1, actor_id=owner))
    library.handle(c.RequestLoan(loan_id=loan2, book_id=b2, borrower_id=borrower))
    library.handle(c.WithdrawBook(book_id=b3, actor_id=owner))
    conversation = chat.handle(
        cc.OpenConversation(reader_id=borrower, peer_id=owner, loan_id=loan1)
    ).id
    chat.handle(
        cc.SendMessage(
            conversation_id=conversation, sender_id=borrower, text="在吗", client_msg_id="m1"
        )
    )
    library_cut = int(library.recorder.max_notification_id() or 0)
    chat_cut = int(chat.recorder.max_notification_id() or 0)
    t1 = instant()
    # after the cut
    library.handle(c.StartReturn(loan_id=loan1, actor_id=borrower))
    library.handle(c.ConfirmReturn(loan_id=loan1, actor_id=owner))
    library.handle(c.DeclineLoan(loan_id=loan2, actor_id=owner, reason="在读"))
    library.handle(c.RelistBook(book_id=b3, actor_id=owner))
    library.handle(c.ReviseBook(book_id=b1, actor_id=owner, title="回放 1 再修订"))
    library.handle(c.ChangeProfile(reader_id=owner, nickname="改名了", avatar_url=""))
    late = publish(library, owner, "回放 4")
    reader(library, "replay-late")
    chat.handle(
        cc.SendMessage(conversation_id=conversation, sender_id=owner, text="在", client_msg_id="m2")
    )
    t2 = instant()
    return Timeline(
        owner,
        borrower,
        b1,
        b2,
        b3,
        late,
        loan1,
        loan2,
        conversation,
        library_cut,
        chat_cut,
        t1,
        t2,
    )


def reference(database_url: str, library: Library, schema: str, stop: int) -> None:
    """A fresh shelf projection of the library log up to position ``stop`` (a cut by
    position, where the replay cuts by time): what the replay must equal."""
    projection, source = ShelfProjection(), Source("library", library)
    ident = sql.Identifier(schema)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        with conn.transaction():
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            conn.execute(sql.SQL(projection.ddl.replace("{schema}", "{0}")).format(ident))
        after = 0
        while page := source.read(after, 500, stop):
            with conn.transaction(), conn.cursor() as cur:
                for notification in page:
                    event = source.decode(notification)
                    projection.apply(cur, ident, "library", notification.id, event)
            after = page[-1].id


def rows(db: psycopg.Connection[Any], schema: str, table: str) -> list[dict[str, Any]]:
    return db.execute(
        sql.SQL("SELECT * FROM {}.{} ORDER BY id").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
    ).fetchall()


def by_id(db: psycopg.Connection[Any], schema: str, table: str) -> dict[UUID, dict[str, Any]]:
    return {r["id"]: r for r in rows(db, schema, table)}


def registry(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT projection, version, schema_name, active FROM projection_versions "
        "ORDER BY schema_name"
    ).fetchall()


def live_schemas(db: psycopg.Connection[Any]) -> set[str]:
    return {
        r["nspname"]
        for r in db.execute("SELECT nspname FROM pg_namespace").fetchall()
        if not r["nspname"].startswith(("analyst_", "ref_", "pg_temp", "pg_toast_temp"))
    }


# -- the replay ---------------------------------------------------------------------------------


def test_replay_until_t1_equals_a_projection_of_the_events_up_to_the_cut(
    database_url: str,
    library: Library,
    db: psycopg.Connection[Any],
    timeline: Timeline,
) -> None:
    versions_before, schemas_before = registry(db), live_schemas(db)

    result = ok(
        replay(
            database_url,
            "--until",
            timeline.t1.isoformat(),
            "--schema",
            "analyst_t1",
            "--page-size",
            "7",
        )
    )

    reference(database_url, library, "ref_t1", timeline.library_cut)
    for table in ("readers", "books", "loans"):
        assert rows(db, "analyst_t1", table) == rows(db, "ref_t1", table), table
    books, loans = by_id(db, "analyst_t1", "books"), by_id(db, "analyst_t1", "loans")
    lent = books[timeline.lent]
    assert (lent["status"], lent["title"]) == ("on_loan", "回放 1 修订")
    assert (lent["borrower_id"], lent["loan_id"]) == (timeline.borrower, timeline.loan1)
    assert books[timeline.requested]["status"] == "available"
    assert books[timeline.withdrawn]["status"] == "withdrawn"
    assert timeline.late not in books
    assert loans[timeline.loan1]["status"] == "approved"
    assert loans[timeline.loan1]["returned_at"] is None
    assert loans[timeline.loan2]["status"] == "requested"
    owner = db.execute(
        "SELECT nickname FROM analyst_t1.readers WHERE id = %s", (timeline.owner,)
    ).fetchone()
    assert owner is not None and owner["nickname"].startswith("replay-owner")
    # how far it read, and where it stopped
    (info,) = db.execute("SELECT * FROM analyst_t1.replay_info").fetchall()
    assert (info["projection"], info["source"]) == ("shelf", "library")
    assert info["position"] == timeline.library_cut
    assert info["cut_position"] > timeline.library_cut
    assert info["cut_event_at"] > timeline.t1 >= info["last_event_at"]
    assert info["until"] == timeline.t1
    assert (
        info["events"]
        == db.execute(
            "SELECT count(*) AS n FROM library_events WHERE notification_id <= %s",
            (timeline.library_cut,),
        ).fetchone()["n"]
    )
    assert info["finished_at"] is not None
    # the summary
    assert "replayed shelf" in result.output and "events/s" in result.output
    assert "analyst_t1" in result.output
    assert f"stopped before position {info['cut_position']:,}" in result.output
    assert f"books {len(books):,}" in result.output
    # nothing live moved
    assert registry(db) == versions_before
    assert live_schemas(db) == schemas_before


def test_replace_rebuilds_a_replay_and_a_later_time_sees_later_events(
    database_url: str, library: Library, db: psycopg.Connection[Any], timeline: Timeline
) -> None:
    # --replace also creates a schema that does not exist yet
    db.execute("DROP SCHEMA IF EXISTS analyst_t1 CASCADE")
    ok(
        replay(
            database_url, "--until", timeline.t1.isoformat(), "--schema", "analyst_t1", "--replace"
        )
    )

    refused = replay(database_url, "--until", timeline.t2.isoformat(), "--schema", "analyst_t1")
    assert refused.exit_code != 0
    assert "exists" in refused.output and "--replace" in refused.output
    assert by_id(db, "analyst_t1", "books")[timeline.lent]["status"] == "on_loan"

    ok(
        replay(
            database_url, "--until", timeline.t2.isoformat(), "--schema", "analyst_t1", "--replace"
        )
    )

    books, loans = by_id(db, "analyst_t1", "books"), by_id(db, "analyst_t1", "loans")
    assert books[timeline.lent]["status"] == "available"
    assert books[timeline.lent]["title"] == "回放 1 再修订"
    assert books[timeline.withdrawn]["status"] == "available"
    assert timeline.late in books
    assert loans[timeline.loan1]["status"] == "returned"
    assert loans[timeline.loan2]["status"] == "declined"
    assert loans[timeline.loan2]["decline_reason"] == "在读"
    (info,) = db.execute("SELECT * FROM analyst_t1.replay_info").fetchall()
    assert info["until"] == timeline.t2
    stop = info["position"]
    reference(database_url, library, "ref_t2", stop)
    for table in ("readers", "books", "loans"):
        assert rows(db, "analyst_t1", table) == rows(db, "ref_t2", table), table


def test_replay_before_anything_is_empty(
    database_url: str, db: psycopg.Connection[Any], timeline: Timeline
) -> None:
    result = ok(
        replay(database_url, "--until", "2000-01-01T00:00:00Z", "--schema", "analyst_empty")
    )

    for table in ("readers", "books", "loans"):
        assert rows(db, "analyst_empty", table) == []
    (info,) = db.execute("SELECT * FROM analyst_empty.replay_info").fetchall()
    assert info["position"] == 0 and info["events"] == 0
    assert info["cut_position"] is not None and info["finished_at"] is not None
    assert "0 events" in result.output


def test_replay_all_projections_into_schemas_of_their_own(
    database_url: str, library: Library, db: psycopg.Connection[Any], timeline: Timeline
) -> None:
    versions_before = registry(db)
    naive = timeline.t1.replace(tzinfo=None).isoformat()
    refused = replay(database_url, "--until", naive, "--schema", "analyst_all")
    assert refused.exit_code == 2 and "no timezone" in refused.output  # domain.instants' rule
    utc = timeline.t1.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"

    result = ok(
        replay(database_url, "--until", utc, "--schema", "analyst_all", "--projection", "all")
    )

    reference(database_url, library, "ref_t1", timeline.library_cut)
    for table in ("readers", "books", "loans"):
        assert rows(db, "analyst_all", table) == rows(db, "ref_t1", table), table
    books = by_id(db, "analyst_all", "books")
    assert books[timeline.lent]["status"] == "on_loan" and timeline.late not in books
    items = db.execute(
        "SELECT kind, data FROM analyst_all_inbox.items WHERE reader_id = %s ORDER BY seq",
        (timeline.borrower,),
    ).fetchall()
    kinds = [i["kind"] for i in items]
    assert "loan.approved" in kinds
    assert "loan.returned" not in kinds and "loan.declined" not in kinds
    messages = db.execute(
        "SELECT text FROM analyst_all_inbox.messages WHERE conversation_id = %s ORDER BY seq",
        (timeline.conversation,),
    ).fetchall()
    assert [m["text"] for m in messages] == ["在吗"]
    infos = db.execute(
        "SELECT source, position FROM analyst_all_inbox.replay_info ORDER BY source"
    ).fetchall()
    assert [(i["source"], i["position"]) for i in infos] == [
        ("chat", timeline.chat_cut),
        ("library", timeline.library_cut),
    ]
    assert db.execute("SELECT to_regclass('analyst_all_rooms.rooms') IS NOT NULL AS y").fetchone()[
        "y"
    ]
    assert "analyst_all_inbox" in result.output and "analyst_all_rooms" in result.output
    assert registry(db) == versions_before


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "shelf",
        "inbox",
        "rooms",
        "public",
        "shelf_v1",
        "inbox_v12",
        "anything_v3",
        "information_schema",
        "pg_catalog",
        "Analyst",
        "a-b",
        "a b",
        "1abc",
        "",
        "x" * 64,
    ],
)
def test_live_and_invalid_schema_names_are_refused(
    database_url: str, db: psycopg.Connection[Any], name: str
) -> None:
    versions_before, schemas_before = registry(db), live_schemas(db)

    result = replay(database_url, "--until", "2030-01-01T00:00:00Z", "--schema", name, "--replace")

    assert result.exit_code == 2, result.output  # a usage error, before any work
    assert "--schema" in result.output
    assert registry(db) == versions_before and live_schemas(db) == schemas_before


def test_the_active_version_schema_is_refused_by_the_registry_too(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    # whatever the registry holds, a version's schema matches *_v<digits>
    for row in registry(db):
        with pytest.raises(SchemaRefused, match="live|version"):
            check_schema_name(row["schema_name"])


def test_a_schema_a_replay_did_not_make_is_never_replaced(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("DROP SCHEMA IF EXISTS analyst_other CASCADE")
    db.execute("CREATE SCHEMA analyst_other")
    db.execute("CREATE TABLE analyst_other.precious (x int)")
    db.execute("INSERT INTO analyst_other.precious VALUES (42)")

    result = replay(
        database_url, "--until", "2030-01-01T00:00:00Z", "--schema", "analyst_other", "--replace"
    )

    assert result.exit_code == 1, result.output
    assert "not made by a replay" in result.output
    assert db.execute("SELECT x FROM analyst_other.precious").fetchone()["x"] == 42


def test_invalid_until_is_refused(database_url: str) -> None:
    result = replay(database_url, "--until", "yesterday", "--schema", "analyst_bad")

    assert result.exit_code == 2
    assert "--until" in result.output


class Poisoned(ShelfProjection):
    """The shelf, unable to apply the withdrawal of one book."""

    def __init__(self, book: UUID) -> None:
        super().__init__()
        self.book = book

    def apply(self, cur: Any, schema: Any, source: str, position: int, event: Any) -> None:
        kind = getattr(event, "type", None) or type(event).__qualname__  # a Record or an event
        if kind == "Book.Withdrawn" and event.originator_id == self.book:
            raise LookupError("poison")
        super().apply(cur, schema, source, position, event)


def test_a_poison_event_stops_the_replay_loudly(
    database_url: str, library: Library, db: psycopg.Connection[Any], timeline: Timeline
) -> None:
    (withdrawn_at,) = [
        n.id
        for n in Source("library", library).read(0, 1_000_000)
        if n.originator_id == timeline.withdrawn and "Withdrawn" in n.topic
    ]

    with pytest.raises(ReplayFailed) as failed:
        run_replay(
            database_url,
            [Poisoned(timeline.withdrawn)],
            {"library": Source("library", library)},
            until=timeline.t2,
            schema="analyst_poison",
            page_size=1000,
        )

    assert failed.value.position == withdrawn_at
    assert "LookupError: poison" in str(failed.value)
    (info,) = db.execute("SELECT * FROM analyst_poison.replay_info").fetchall()
    assert info["position"] < withdrawn_at and info["finished_at"] is None
    # every event before it is there
    books = by_id(db, "analyst_poison", "books")
    assert books[timeline.withdrawn]["status"] == "available"
    assert books[timeline.lent]["status"] == "on_loan"
