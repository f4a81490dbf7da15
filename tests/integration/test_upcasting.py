"""Old event shapes keep working: ``Book.Published`` version 1 (stored before ``language``
existed, without ``class_version``) is upcast on read by the aggregate, a rebuilt read model
and the export alike."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

import psycopg
from click.testing import CliRunner
from eventsourcing.persistence import StoredEvent
from psycopg.rows import dict_row

from api.cli import main
from domain import commands as c
from domain.library import Library
from projections import ops
from projections.registry import sources_from_apps
from projections.shelf import ShelfProjection
from tests.integration.activity import reader

TOPIC = "domain.book:Book.Published"

# Exactly what eventsourcing's JSONTranscoder stored for a v1 Book.Published (captured
# before version 2): no "language", no "class_version".
V1_STATE = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2024-05-04T08:30:00.123456+00:00"},'
    '"originator_topic":"domain.book:Book",'
    '"owner_id":{"_type_":"uuid_hex","_data_":"%s"},'
    '"isbn":"9787536692930","title":"三体（v1 golden）","author":"刘慈欣",'
    '"publisher":"重庆出版社","tags":["科幻"],"cover_url":"","summary":"a v1 event"}'
)


def insert_golden_v1(database_url: str, book_id: UUID, owner_id: UUID) -> None:
    """Insert the literal v1 bytes with SQL, bypassing today's code entirely."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO library_events (originator_id, originator_version, topic, state) "
            "VALUES (%s, 1, %s, %s)",
            (book_id, TOPIC, (V1_STATE % owner_id.hex).encode()),
        )


def insert_transcoded_v1(library: Library, book_id: UUID, owner_id: UUID, isbn: str) -> None:
    """A v1-shaped state dict encoded by the app's own transcoder, through the recorder."""
    from datetime import UTC, datetime

    state: dict[str, Any] = {
        "timestamp": datetime.now(UTC),
        "originator_topic": "domain.book:Book",
        "owner_id": owner_id,
        "isbn": isbn,
        "title": "An English v1 book",
        "author": "Anon",
        "publisher": "",
        "tags": [],
        "cover_url": "",
        "summary": "",
    }
    library.recorder.insert_events(
        [
            StoredEvent(
                originator_id=book_id,
                originator_version=1,
                topic=TOPIC,
                state=library.mapper.transcoder.encode(state),
            ),
        ]
    )


def test_v1_published_events_are_upcast_everywhere(
    database_url: str, library: Library, tmp_path: Any
) -> None:
    owner = reader(library, "v1-owner")
    borrower = reader(library, "v1-borrower")
    golden, english = uuid4(), uuid4()
    insert_golden_v1(database_url, golden, owner)
    insert_transcoded_v1(library, english, owner, isbn="9780140449136")

    # the aggregate
    book = library.book(golden)
    assert (book.title, book.isbn, book.language) == ("三体（v1 golden）", "9787536692930", "zh")
    assert library.book(english).language == "en"  # group 0: English (domain.isbn, one rule)
    # … and it keeps working: new events on an old stream
    library.handle(c.ReviseBook(book_id=golden, actor_id=owner, summary="revised in v2"))
    loan = uuid4()
    library.handle(c.RequestLoan(loan_id=loan, book_id=golden, borrower_id=borrower))
    library.handle(c.ApproveLoan(loan_id=loan, actor_id=owner))
    # Published (v1), DetailsRevised, RequestReceived, Lent
    assert library.book(golden).status == "on_loan" and library.book(golden).version == 4

    # a rebuilt read model
    projection: Any = type("Shelf", (ShelfProjection,), {"name": f"upcast_{uuid4().hex[:8]}"})()
    result = ops.rebuild(database_url, projection, sources_from_apps(library), page_size=200)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute(
            f"SELECT * FROM {result.new_schema}.books WHERE id = %s", (golden,)
        ).fetchone()
    assert row is not None
    assert (row["title"], row["status"], row["borrower_id"], row["summary"]) == (
        "三体（v1 golden）",
        "on_loan",
        borrower,
        "revised in v2",
    )
    assert row["published_at"].isoformat() == "2024-05-04T08:30:00.123456+00:00"

    # the export
    out = tmp_path / "published.ndjson"
    env = {"DATABASE_URL": database_url}
    exported = CliRunner().invoke(
        main,
        ["events", "export", "--out", str(out), "--type", "Book.Published", "--context", "library"],
        env=env,
    )
    assert exported.exit_code == 0, exported.output
    rows = {r["aggregate_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows[str(golden)]["data"]["language"] == "zh"
    assert rows[str(english)]["data"]["language"] == "en"
    assert "class_version" not in rows[str(golden)]["data"]
    shown = CliRunner().invoke(main, ["events", "show", str(golden)], env=env)
    assert shown.exit_code == 0 and "language: zh" in shown.output


def test_new_published_events_are_stored_as_version_3(database_url: str, library: Library) -> None:
    owner = reader(library, "v2-owner")
    book_id = uuid4()
    library.handle(
        c.PublishBook(book_id=book_id, owner_id=owner, isbn="9787020002207", title="红楼梦")
    )

    with psycopg.connect(database_url) as conn:
        (topic, state) = conn.execute(
            "SELECT topic, state FROM library_events WHERE originator_id = %s", (book_id,)
        ).fetchone()
    stored = json.loads(bytes(state))
    assert topic == TOPIC
    assert (stored["class_version"], stored["language"]) == (3, "zh")
    assert stored["cover_media_id"] is None
    assert library.book(book_id).language == "zh"
