"""The shelf projection against the real PostgreSQL: pages, tracking, queries, poison events."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg.rows import dict_row

from api.bootstrap.db import make_pool
from domain import commands as c
from domain.library import Library
from domain.reader import reader_id_for
from projections.board import PositionBoard, tracked_position
from projections.runner import ReadModelRunner
from projections.shelf import ShelfProjection, ShelfQueries
from projections.source import Source
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def shelf(database_url: str, library: Library) -> Any:
    board = PositionBoard()
    runner = ReadModelRunner(
        ShelfProjection(),
        database_url,
        {"library": Source("library", library)},
        board=board,
        page_size=50,
    )
    runner.start()
    pool = make_pool(database_url, size=2)
    yield runner, ShelfQueries(pool)
    runner.stop()
    pool.close()


def _reader(library: Library, name: str) -> Any:
    rid = reader_id_for(f"shelf-test-{name}-{uuid4()}")
    library.handle(c.RegisterReader(reader_id=rid, nickname=name))
    return rid


def _wait(runner: ReadModelRunner, recorded: c.Recorded) -> None:
    # Another runner of "shelf" in this test session (the e2e server's) may hold the
    # projection's lock, so poll the tracked position as the API does.
    assert recorded.position is not None

    def poll() -> int:
        with psycopg.connect(runner.database_url, row_factory=dict_row) as conn:
            return tracked_position(conn, "shelf", "library")

    assert runner.board.wait("shelf", "library", recorded.position, timeout=10, poll=poll)


def test_publish_lend_return_is_reflected(library: Library, shelf: Any) -> None:
    runner, queries = shelf
    owner, borrower = _reader(library, "owner"), _reader(library, "borrower")
    book_id = uuid4()
    library.handle(
        c.PublishBook(
            book_id=book_id,
            owner_id=owner,
            isbn="9787536692930",
            title="三体（典藏版）",
            author="刘慈欣",
            tags=["科幻"],
        )
    )
    loan_id = uuid4()
    library.handle(
        c.RequestLoan(
            loan_id=loan_id,
            book_id=book_id,
            borrower_id=borrower,
            contact=c.Contact(phone="13800000000"),
        )
    )
    _wait(runner, library.handle(c.ApproveLoan(loan_id=loan_id, actor_id=owner)))
    book = queries.book(book_id)
    assert book["status"] == "on_loan" and book["borrower_id"] == borrower
    assert book["owner_nickname"] == "owner"
    loan = queries.loan(loan_id)
    assert loan["status"] == "approved" and loan["contact"] == {"phone": "13800000000"}
    rows, _ = queries.search_books(q="三体")
    assert book_id in [r["id"] for r in rows]
    assert queries.availability("9787536692930")["total"] >= 1
    library.handle(c.StartReturn(loan_id=loan_id, actor_id=borrower))
    _wait(runner, library.handle(c.ConfirmReturn(loan_id=loan_id, actor_id=owner)))
    assert queries.book(book_id)["status"] == "available"
    assert queries.loan(loan_id)["status"] == "returned"
    mine, _ = queries.loans_of(borrower, role="borrower")
    assert [r["id"] for r in mine] == [loan_id]


def test_catch_up_in_pages_with_tracking_in_the_same_transaction(
    database_url: str, library: Library, shelf: Any
) -> None:
    runner, queries = shelf
    owner = _reader(library, "bulk")
    last = None
    for i in range(120):  # more than two pages of 50
        last = library.handle(
            c.PublishBook(
                book_id=uuid4(),
                owner_id=owner,
                isbn="9780000000002",
                title=f"Bulk {i}",
                tags=["bulk"],
            )
        )
    _wait(runner, last)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        assert tracked_position(conn, "shelf", "library") >= last.position
    rows, cursor = queries.search_books(owner_id=owner, limit=50)
    seen = [r["id"] for r in rows]
    while cursor:
        rows, cursor = queries.search_books(owner_id=owner, limit=50, cursor=cursor)
        seen += [r["id"] for r in rows]
    assert len(seen) == len(set(seen)) == 120


def test_poison_event_stops_the_projection_and_is_recorded(
    database_url: str, library: Library
) -> None:
    class Poisoned(ShelfProjection):
        name = "poisoned"

        def apply(self, cur, schema, source, position, event):  # type: ignore[no-untyped-def]
            if getattr(event, "title", None) == "POISON":
                raise ValueError("cannot digest this book")
            super().apply(cur, schema, source, position, event)

    owner = _reader(library, "poison")
    before = library.handle(
        c.PublishBook(book_id=uuid4(), owner_id=owner, isbn="9780000000002", title="fine")
    )
    bad = library.handle(
        c.PublishBook(book_id=uuid4(), owner_id=owner, isbn="9780000000002", title="POISON")
    )
    library.handle(
        c.PublishBook(book_id=uuid4(), owner_id=owner, isbn="9780000000002", title="after")
    )
    runner = ReadModelRunner(Poisoned(), database_url, {"library": Source("library", library)})
    runner.start()
    try:
        wait_until(lambda: runner.status.state == "failed")
    finally:
        runner.stop()
    assert runner.status.failed_position == bad.position
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        assert tracked_position(conn, "poisoned", "library") == bad.position - 1
        assert tracked_position(conn, "poisoned", "library") >= before.position
        failure = conn.execute(
            "SELECT * FROM projection_failures WHERE schema_name LIKE 'poisoned_v%%'"
        ).fetchone()
    assert failure["position"] == bad.position
    assert "cannot digest" in failure["error"]
