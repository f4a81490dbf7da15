"""Set-wise pages against the real PostgreSQL: a projection that folds pages in memory
(``fold_page``) must leave exactly the rows its event-by-event ``apply`` leaves, whether pages
run one after the other or overlapped (``ReadModelRunner.catch_up``), whatever the page size;
fast decoding must equal the mapper on the real logs; and a poison event in a folded page
(found by the fold or by the write) still stops the runner at its exact position.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg import sql
from psycopg.rows import dict_row

from domain import chat_commands as cc
from domain import commands as c
from domain.chat import Chat
from domain.library import Library
from projections import ops
from projections.inbox import InboxProjection
from projections.read_model import ReadModelProjection
from projections.records import record_of
from projections.rooms import RoomsProjection
from projections.runner import ProjectionFailed, ReadModelRunner
from projections.shelf import ShelfProjection
from projections.source import Source
from projections.versions import create_version
from tests.integration.activity import reader, story
from tests.integration.chat_activity import chat_story, picture
from tests.integration.test_upcasting import insert_golden_v1

PROJECTIONS = {"shelf": ShelfProjection, "inbox": InboxProjection, "rooms": RoomsProjection}


@pytest.fixture(scope="module")
def sources(library: Library, chat: Chat) -> dict[str, Source]:
    return {"library": Source("library", library), "chat": Source("chat", chat)}


@pytest.fixture(scope="module")
def traffic(database_url: str, library: Library, chat: Chat) -> dict[str, int]:
    """Every event type of both logs, the awkward cases, and a v1 ``Book.Published``.
    Returns the log heads after it."""
    readers = [reader(library, f"fold-{i}") for i in range(4)]
    insert_golden_v1(database_url, uuid4(), readers[0])
    for i in range(4):
        story(library, f"fold{i}")
        chat_story(chat, readers, f"fold{i}")
        # a picture of those messages taken down (replayed before them: the Library first)
        library.handle(c.RemoveMedia(media_id=picture(f"fold{i}-ab", 4).id, reason="risky"))
    for source in ("library", "chat"):
        assert head_of(database_url, source) > 0
    return {s: head_of(database_url, s) for s in ("library", "chat")}


def head_of(database_url: str, source: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
                sql.Identifier(f"{source}_events")
            )
        ).fetchone()
    return int(row[0]) if row else 0


def named(base: type[ReadModelProjection], tag: str, **attrs: Any) -> ReadModelProjection:
    return type(f"{base.__name__}_{tag}", (base,), {"name": f"{tag}_{uuid4().hex[:8]}", **attrs})()


def one_by_one(base: type[ReadModelProjection], tag: str) -> ReadModelProjection:
    """The projection with ``apply`` refined (unchanged): every event goes through it."""
    projection = named(base, tag, apply=base.apply)
    assert not projection.folds_pages
    return projection


def fill(  # noqa: PLR0913
    database_url: str,
    projection: ReadModelProjection,
    sources: dict[str, Source],
    stops: dict[str, int],
    page_size: int,
    *,
    overlapped: bool,
) -> str:
    """A new version of ``projection`` filled up to ``stops``; returns its schema."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        with conn.transaction():
            schema = create_version(conn, projection, activate=False)
        runner = ReadModelRunner(projection, database_url, sources, page_size=page_size)
        try:
            for name in projection.sources:
                source, stop = sources[name], stops[name]
                if overlapped:
                    while runner.catch_up(conn, source, schema=schema, stop=stop):
                        pass
                else:
                    while runner.process_page(conn, source, schema=schema, stop=stop):
                        pass
        finally:
            runner.close()
        assert runner.fallback_pages == 0, "a folded page failed where events did not"
    return schema


def rows(conn: psycopg.Connection[Any], schema: str, table: str) -> list[dict[str, Any]]:
    return conn.execute(
        sql.SQL("SELECT * FROM {}.{} ORDER BY 1, 2").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
    ).fetchall()


def assert_same_tables(database_url: str, tables: tuple[str, ...], left: str, right: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        for table in tables:
            a, b = rows(conn, left, table), rows(conn, right, table)
            assert a, f"{left}.{table} is empty: nothing compared"
            assert a == b, f"{left}.{table} differs from {right}.{table}"


# -- decoding ---------------------------------------------------------------------------------


def test_fast_decoding_equals_the_mapper_on_both_logs(
    database_url: str, sources: dict[str, Source], traffic: dict[str, int]
) -> None:
    seen: set[str] = set()
    with psycopg.connect(database_url) as conn:
        for name, source in sources.items():
            after = 0
            while page := source.read_rows(conn, after, 1000, traffic[name]):
                for row in page:
                    fast = source.decoder._decode_fast(row)  # the fast path, no fallback
                    stored = StoredEvent(
                        originator_id=row[1],
                        originator_version=row[2],
                        topic=row[3],
                        state=bytes(row[4]),
                    )
                    assert fast == record_of(row[0], row[3], source.decode(stored)), row
                    seen.add(fast.type)
                after = page[-1][0]
    assert seen >= {
        "Reader.Registered",
        "Reader.ProfileChanged",
        "Book.Published",
        "Book.DetailsRevised",
        "Book.Withdrawn",
        "Book.Relisted",
        "Book.Lent",
        "Book.Returned",
        "Loan.Requested",
        "Loan.Approved",
        "Loan.Declined",
        "Loan.Cancelled",
        "Loan.ReturnStarted",
        "Loan.ReturnConfirmed",
        "Conversation.Opened",
        "Conversation.MessageSent",
        "Conversation.MessagesRead",
        "Conversation.MessageHidden",
        "Room.Created",
        "Room.MessageSent",
    }


# -- folded pages equal events one by one ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_folded_pages_leave_the_rows_events_one_by_one_leave(
    database_url: str, sources: dict[str, Source], traffic: dict[str, int], name: str
) -> None:
    base = PROJECTIONS[name]
    reference = fill(
        database_url, one_by_one(base, f"{name}1"), sources, traffic, 64, overlapped=False
    )
    # every page folded (batch_min 1), one after the other, at awkward page sizes
    for size in (1, 7, 500):
        folded = fill(
            database_url,
            named(base, f"{name}f", batch_min=1),
            sources,
            traffic,
            size,
            overlapped=False,
        )
        assert_same_tables(database_url, base.tables, reference, folded)
    # overlapped pages: written while the next is folded, carrying the rows it touched
    for size in (3, 40):
        overlapped = fill(
            database_url,
            named(base, f"{name}o", batch_min=1),
            sources,
            traffic,
            size,
            overlapped=True,
        )
        assert_same_tables(database_url, base.tables, reference, overlapped)


def test_a_rebuild_creates_the_deferred_indexes_after_filling(
    database_url: str, sources: dict[str, Source], traffic: dict[str, int]
) -> None:
    projection = named(ShelfProjection, "idx")
    result = ops.rebuild(database_url, projection, sources, page_size=300)
    with psycopg.connect(database_url) as conn:
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (result.new_schema,)
            ).fetchall()
        }
    assert set(ShelfProjection.deferred_indexes) <= indexes
    assert {"books_pkey", "loans_pkey", "readers_pkey"} <= indexes


# -- poison events in folded pages ----------------------------------------------------------------


class _PoisonShelf(ShelfProjection):
    """Cannot digest books titled ``poison``: its fold (``where="fold"``) or its page's write
    (``where="write"``) fails on a page holding one, and ``apply`` on the event itself."""

    poison = ""
    where = "fold"
    batch_min = 1

    def apply(self, cur: Any, schema: Any, source: str, position: int, event: Any) -> None:
        if getattr(event, "title", None) == self.poison:
            raise ValueError("cannot digest this book")
        super().apply(cur, schema, source, position, event)

    def fold_page(self, schema: Any, source: str, events: Any, carry: Any) -> Any:
        page = super().fold_page(schema, source, events, carry)
        if any(getattr(e, "title", None) == self.poison for e in events):
            if self.where == "fold":

                def fail() -> None:
                    raise ValueError("cannot digest this page")

                page.fold = fail
            else:
                statements = page.statements
                page.statements = lambda: [*statements(), ("SELECT 1 / 0", ())]
        return page


@pytest.mark.parametrize("where", ["fold", "write"])
def test_a_poison_event_in_an_overlapped_page_stops_at_its_position(
    database_url: str, library: Library, sources: dict[str, Source], where: str
) -> None:
    owner = reader(library, f"poison-{where}")
    for i in range(12):
        library.handle(
            c.PublishBook(
                book_id=uuid4(), owner_id=owner, isbn="9780000000002", title=f"before {i}"
            )
        )
    title = f"POISON {where} {uuid4().hex[:8]}"
    bad = library.handle(
        c.PublishBook(book_id=uuid4(), owner_id=owner, isbn="9780000000002", title=title)
    )
    for i in range(12):
        library.handle(
            c.PublishBook(book_id=uuid4(), owner_id=owner, isbn="9780000000002", title=f"after {i}")
        )
    assert bad.position is not None
    projection = named(_PoisonShelf, f"pz{where}", poison=title, where=where)
    assert projection.folds_pages
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        with conn.transaction():
            schema = create_version(conn, projection, activate=False)
        runner = ReadModelRunner(projection, database_url, sources, page_size=5)
        with pytest.raises(ProjectionFailed, match="cannot digest this book"):
            while runner.catch_up(conn, sources["library"], schema=schema):
                pass
        runner.close()
        assert runner.status.failed_position == bad.position
        tracked = conn.execute(
            "SELECT position FROM projection_tracking WHERE schema_name = %s", (schema,)
        ).fetchone()
        assert tracked["position"] == bad.position - 1
        failure = conn.execute(
            "SELECT position, error FROM projection_failures WHERE schema_name = %s", (schema,)
        ).fetchone()
        assert failure["position"] == bad.position and "cannot digest" in failure["error"]
    # everything before it was applied, exactly as event by event
    reference = fill(
        database_url,
        one_by_one(ShelfProjection, "pzref"),
        sources,
        {"library": bad.position - 1},
        64,
        overlapped=False,
    )
    assert_same_tables(database_url, ShelfProjection.tables, reference, schema)


def test_an_overlapped_page_sees_the_heads_the_page_being_written_created(
    database_url: str, library: Library, chat: Chat, sources: dict[str, Source]
) -> None:
    """A conversation read from the table (not met before in this catch-up) whose member got
    their first item in the page still being written: that head is carried, not re-created."""
    r, x, y = (reader(library, f"heads-{i}") for i in range(3))
    c2 = chat.handle(cc.OpenConversation(reader_id=r, peer_id=y)).id
    projection = named(InboxProjection, "heads", batch_min=1)
    reference = one_by_one(InboxProjection, "headsref")
    stops = {s: head_of(database_url, s) for s in ("library", "chat")}
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        with conn.transaction():
            schema = create_version(conn, projection, activate=False)
        runner = ReadModelRunner(projection, database_url, sources, page_size=2)
        try:
            for name in ("library", "chat"):
                while runner.catch_up(conn, sources[name], schema=schema, stop=stops[name]):
                    pass
            c1 = chat.handle(cc.OpenConversation(reader_id=r, peer_id=x)).id  # page N-1 …
            chat.send(cc.SendMessage(conversation_id=c1, sender_id=x, text="1", client_msg_id="1"))
            chat.send(cc.SendMessage(conversation_id=c2, sender_id=y, text="2", client_msg_id="2"))
            stops["chat"] = head_of(database_url, "chat")  # … and page N
            while runner.catch_up(conn, sources["chat"], schema=schema, stop=stops["chat"]):
                pass
        finally:
            runner.close()
        assert runner.fallback_pages == 0
    expected = fill(database_url, reference, sources, stops, 64, overlapped=False)
    assert_same_tables(database_url, InboxProjection.tables, expected, schema)
