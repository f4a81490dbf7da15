"""``liudong events export|show|tail`` against the real PostgreSQL, through click's CliRunner."""

from __future__ import annotations

import csv
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from api.cli import main
from domain import chat_commands as cc
from domain import commands as c
from domain.chat import Chat
from domain.library import Library
from tests.integration.activity import reader


def run(database_url: str, *args: str) -> Result:
    result = CliRunner().invoke(main, ["events", *args], env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    return result


class Story:
    """One lending story with a chat, and the ids to look for in exports."""

    def __init__(self, library: Library, chat: Chat) -> None:
        self.tag = uuid4().hex[:8]
        self.started = datetime.now(UTC)
        self.owner, self.borrower = reader(library, "exp-owner"), reader(library, "exp-borr")
        self.book = uuid4()
        library.handle(
            c.PublishBook(
                book_id=self.book,
                owner_id=self.owner,
                isbn="9787536692930",
                title=f"export {self.tag}",
            )
        )
        self.loan = uuid4()
        library.handle(
            c.RequestLoan(
                loan_id=self.loan,
                book_id=self.book,
                borrower_id=self.borrower,
                note="想读",
                contact=c.Contact(phone="13912345678", wechat_id="wx-1"),
            )
        )
        library.handle(c.ApproveLoan(loan_id=self.loan, actor_id=self.owner))
        opened = chat.handle(
            cc.OpenConversation(reader_id=self.borrower, peer_id=self.owner, loan_id=self.loan)
        )
        self.conversation = opened.id
        chat.handle(
            cc.SendMessage(
                conversation_id=self.conversation,
                sender_id=self.borrower,
                text=f"你好 {self.tag}",
                client_msg_id="m1",
            )
        )
        self.ids = {
            str(x) for x in (self.owner, self.borrower, self.book, self.loan, self.conversation)
        }
        self.finished = datetime.now(UTC)


@pytest.fixture(scope="module")
def stories(library: Library, chat: Chat) -> tuple[Story, Story]:
    first = Story(library, chat)
    time.sleep(0.01)  # two distinct instants between the stories, for --since
    second = Story(library, chat)
    return first, second


def ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def mine(rows: list[dict[str, Any]], story: Story) -> list[dict[str, Any]]:
    return [r for r in rows if r["aggregate_id"] in story.ids]


def test_export_ndjson_both_contexts_without_contact(
    database_url: str, stories: tuple[Story, Story], tmp_path: Path
) -> None:
    out = tmp_path / "events.ndjson"
    result = run(database_url, "export", "--format", "ndjson", "--out", str(out))

    rows = ndjson(out)
    assert "exported" in result.output and "events/s" in result.output
    ours = mine(rows, stories[0])
    kinds = [r["event_type"] for r in ours]
    assert {
        "Reader.Registered",
        "Book.Published",
        "Loan.Requested",
        "Loan.Approved",
        "Book.Lent",
        "Conversation.Opened",
        "Conversation.MessageSent",
    } <= set(kinds)
    assert {r["context"] for r in ours} == {"library", "chat"}
    (requested,) = [r for r in ours if r["event_type"] == "Loan.Requested"]
    assert "contact" not in requested["data"] and requested["data"]["note"] == "想读"
    assert requested["aggregate_id"] == str(stories[0].loan) and requested["aggregate_version"] == 1
    assert datetime.fromisoformat(requested["recorded_at"]) >= stories[0].started
    assert "13912345678" not in out.read_text(encoding="utf-8")
    positions = [r["position"] for r in rows if r["context"] == "library"]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_export_includes_contact_only_when_asked(
    database_url: str, stories: tuple[Story, Story], tmp_path: Path
) -> None:
    out = tmp_path / "with-contact.ndjson"
    run(database_url, "export", "--out", str(out), "--type", "Loan.Requested", "--include-contact")

    rows = ndjson(out)
    assert {r["event_type"] for r in rows} == {"Loan.Requested"}
    (requested,) = mine(rows, stories[1])
    assert requested["data"]["contact"] == {"phone": "13912345678", "wechat_id": "wx-1"}


def test_export_csv(database_url: str, stories: tuple[Story, Story], tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    run(database_url, "export", "--format", "csv", "--out", str(out), "--context", "library")

    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "context",
        "position",
        "recorded_at",
        "aggregate_id",
        "aggregate_version",
        "event_type",
        "data",
    ]
    assert {r["context"] for r in rows} == {"library"}
    (published,) = [
        r
        for r in rows
        if r["aggregate_id"] == str(stories[0].book) and r["event_type"] == "Book.Published"
    ]
    data = json.loads(published["data"])
    assert data["title"] == f"export {stories[0].tag}" and data["owner_id"] == str(stories[0].owner)
    assert all("13912345678" not in r["data"] for r in rows)


def test_export_parquet_reads_back_in_duckdb_and_pyarrow(
    database_url: str, stories: tuple[Story, Story], tmp_path: Path
) -> None:
    out = tmp_path / "events.parquet"
    reference = tmp_path / "events.ndjson"
    run(database_url, "export", "--format", "parquet", "--out", str(out), "--page-size", "50")
    run(database_url, "export", "--out", str(reference))

    counts = dict(
        (kind, n)
        for n, kind in duckdb.sql(f"SELECT count(*), event_type FROM '{out}' GROUP BY 2").fetchall()
    )
    expected: dict[str, int] = {}
    for row in ndjson(reference):
        expected[row["event_type"]] = expected.get(row["event_type"], 0) + 1
    assert counts == expected
    table = pq.read_table(out)
    assert table.column_names == [
        "context",
        "position",
        "recorded_at",
        "aggregate_id",
        "aggregate_version",
        "event_type",
        "data",
    ]
    assert str(table.schema.field("recorded_at").type) == "timestamp[us, tz=UTC]"
    assert pq.ParquetFile(out).metadata.num_row_groups > 1  # one per page: bounded memory
    titles = duckdb.sql(
        f"SELECT json_extract_string(data, '$.title') FROM '{out}' "
        f"WHERE event_type = 'Book.Published' AND aggregate_id = '{stories[1].book}'"
    ).fetchall()
    assert titles == [(f"export {stories[1].tag}",)]


def test_export_since_until_and_type_filters(
    database_url: str, stories: tuple[Story, Story], tmp_path: Path
) -> None:
    first, second = stories
    out = tmp_path / "since.ndjson"
    run(database_url, "export", "--out", str(out), "--since", first.finished.isoformat())
    rows = ndjson(out)
    assert not mine(rows, first) and mine(rows, second)
    assert all(datetime.fromisoformat(r["recorded_at"]) >= first.finished for r in rows)

    out = tmp_path / "until.ndjson"
    run(
        database_url,
        "export",
        "--out",
        str(out),
        "--since",
        first.started.isoformat(),
        "--until",
        first.finished.isoformat(),
        "--type",
        "Book.Published",
        "--type",
        "Conversation.MessageSent",
    )
    rows = ndjson(out)
    assert {r["event_type"] for r in rows} == {"Book.Published", "Conversation.MessageSent"}
    assert mine(rows, first) and not mine(rows, second)
    (message,) = [r for r in mine(rows, first) if r["context"] == "chat"]
    assert message["data"]["text"] == f"你好 {first.tag}"


def test_show_an_aggregate_history(database_url: str, stories: tuple[Story, Story]) -> None:
    story = stories[0]
    book = run(database_url, "show", str(story.book)).output
    assert f"Book {story.book} (library log, 3 events)" in book
    assert book.index("Book.Published") < book.index("Book.RequestReceived")
    assert book.index("Book.RequestReceived") < book.index("Book.Lent")
    assert f"title: export {story.tag}" in book

    loan = run(database_url, "show", str(story.loan)).output
    assert "Loan.Requested" in loan and "13912345678" not in loan
    assert "13912345678" in run(database_url, "show", str(story.loan), "--include-contact").output

    conversation = run(database_url, "show", str(story.conversation)).output
    assert "(chat log" in conversation and "Conversation.MessageSent" in conversation

    missing = CliRunner().invoke(
        main, ["events", "show", str(uuid4())], env={"DATABASE_URL": database_url}
    )
    assert missing.exit_code != 0 and "no events" in missing.output


def test_tail_prints_events_as_they_commit(
    database_url: str, library: Library, stories: tuple[Story, Story]
) -> None:
    export = CliRunner().invoke(
        main,
        ["events", "export", "--out", "-", "--context", "library"],
        env={"DATABASE_URL": database_url},
    )
    head = max(json.loads(line)["position"] for line in export.stdout.splitlines())
    results: list[Result] = []
    tail = threading.Thread(
        target=lambda: results.append(
            CliRunner().invoke(
                main,
                [
                    "events",
                    "tail",
                    "--context",
                    "library",
                    "--from-position",
                    str(head),
                    "--count",
                    "2",
                ],
                env={"DATABASE_URL": database_url},
            )
        )
    )
    tail.start()
    owner = reader(library, "tail")  # Reader.Registered
    book: UUID = uuid4()
    library.handle(
        c.PublishBook(book_id=book, owner_id=owner, isbn="9787536692930", title="tail me")
    )
    tail.join(30)
    assert not tail.is_alive()
    (result,) = results
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert "Reader.Registered" in lines[0] and str(owner) in lines[0]
    assert "Book.Published" in lines[1] and "title=tail me" in lines[1]


def test_show_time_travel(database_url: str, stories: tuple[Story, Story]) -> None:
    story = stories[0]
    then = run(database_url, "show", str(story.book), "--version", "1").output
    assert "state at v1" in then and "status: available" in then and "language: zh" in then
    now = run(database_url, "show", str(story.book), "--at", story.finished.isoformat()).output
    assert "state at v3" in now and "status: on_loan" in now  # Published, RequestReceived, Lent
    assert f"borrower_id: {story.borrower}" in now
    loan = run(database_url, "show", str(story.loan), "--version", "1").output
    assert "status: requested" in loan and "13912345678" not in loan
    too_early = CliRunner().invoke(
        main,
        ["events", "show", str(story.book), "--at", "2000-01-01T00:00:00Z"],
        env={"DATABASE_URL": database_url},
    )
    assert too_early.exit_code != 0 and "did not exist yet" in too_early.output
