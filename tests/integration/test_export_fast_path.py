"""``liudong events export`` on the real PostgreSQL (binary keyset pages, fast decoding, a
read-ahead and a write-behind thread; or worker processes with ``--jobs``) writes, in every
format, exactly what the reference path gives: every stored row decoded by its Application's
mapper into a ``LogEvent``, written row by row as the export used to
(``tests/unit/test_export_decoding.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from api.adapters.eventlog import LogEvent, LogReader
from api.cli import main
from domain.chat import Chat
from domain.library import Library
from projections.source import Source
from tests.integration.activity import reader as new_reader
from tests.integration.activity import story
from tests.integration.chat_activity import chat_story
from tests.integration.test_upcasting import insert_golden_v1
from tests.unit.test_export_decoding import (
    reference_csv,
    reference_ndjson,
    reference_parquet,
    same,
)


@pytest.fixture(scope="module")
def logged(database_url: str, library: Library, chat: Chat) -> None:
    """Every event type of both contexts, and a v1 ``Book.Published`` stored by SQL."""
    story(library, "fast-export")
    readers = [new_reader(library, f"fast-{i}") for i in range(3)]
    chat_story(chat, readers, "fast-export")
    insert_golden_v1(database_url, uuid4(), readers[0])


def export(database_url: str, path: Path, *args: str) -> None:
    result = CliRunner().invoke(
        main, ["events", "export", "--out", str(path), *args], env={"DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output


def expected(
    database_url: str, library: Library, chat: Chat, *, include_contact: bool = False
) -> list[LogEvent]:
    """The reference: every row (read as the export used to read them) through the mapper."""
    events: list[LogEvent] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name, app in (("library", library), ("chat", chat)):
            reader = LogReader(conn, Source(name, app))
            rows = conn.execute(
                f"SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {reader.source.channel} ORDER BY notification_id"
            ).fetchall()
            events += [reader.decode_with_mapper(r, include_contact=include_contact) for r in rows]
    return events


@pytest.mark.usefixtures("logged")
@pytest.mark.parametrize(("include_contact", "jobs"), [(False, "1"), (True, "1"), (False, "2")])
def test_every_format_equals_the_mapper_path(
    database_url: str,
    library: Library,
    chat: Chat,
    tmp_path: Path,
    include_contact: bool,
    jobs: str,
) -> None:
    options = ["--jobs", jobs, *(["--include-contact"] if include_contact else [])]
    parquet, ndjson, csv = (tmp_path / f"events.{x}" for x in ("parquet", "ndjson", "csv"))
    export(database_url, parquet, "--format", "parquet", "--page-size", "7", *options)
    export(database_url, ndjson, "--page-size", "50", *options)
    export(database_url, csv, "--format", "csv", "--page-size", "3", *options)
    events = expected(database_url, library, chat, include_contact=include_contact)

    kinds = {e.event_type for e in events}
    assert {"Book.Published", "Loan.Requested", "Conversation.MessageSent", "Room.Created"} <= kinds
    table = pq.read_table(parquet)
    assert table.num_rows == len(events) > 50
    assert table.equals(reference_parquet(events))
    assert pq.ParquetFile(parquet).metadata.num_row_groups >= len(events) // 7
    assert ndjson.read_bytes() == reference_ndjson(events)
    assert csv.read_bytes() == reference_csv(events)
    golden = [
        json.loads(line)
        for line in ndjson.read_text(encoding="utf-8").splitlines()
        if "v1 golden" in line
    ]
    assert golden and all(g["data"]["language"] == "zh" for g in golden)
    assert ("13800000000" in ndjson.read_text(encoding="utf-8")) is include_contact


@pytest.mark.usefixtures("logged")
def test_worker_processes_apply_the_time_and_type_filters(
    database_url: str, library: Library, chat: Chat, tmp_path: Path
) -> None:
    events = expected(database_url, library, chat)
    times = sorted(e.recorded_at for e in events)
    since, until = times[len(times) // 3], times[2 * len(times) // 3]
    kinds = ("Book.Published", "Conversation.MessageSent")
    args = ["--since", since.isoformat(), "--until", until.isoformat()]
    for kind in kinds:
        args += ["--type", kind]
    one, two = tmp_path / "one.ndjson", tmp_path / "two.ndjson"
    export(database_url, one, "--jobs", "1", "--page-size", "5", *args)
    export(database_url, two, "--jobs", "2", "--page-size", "5", *args)

    chosen = [e for e in events if since <= e.recorded_at < until and e.event_type in kinds]
    assert chosen
    assert one.read_bytes() == two.read_bytes() == reference_ndjson(chosen)


@pytest.mark.usefixtures("logged")
def test_show_and_tail_decode_like_the_mapper(
    database_url: str, library: Library, chat: Chat
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name, app in (("library", library), ("chat", chat)):
            reader = LogReader(conn, Source(name, app))
            (page,) = list(reader.rows(page_size=1_000_000))
            for row in page:
                assert same(reader.decode(row), reader.decode_with_mapper(row))
            old_rows: list[Any] = reader.history(page[-1][1])  # text mode, as show reads
            for row in old_rows:
                assert same(reader.decode(row), reader.decode_with_mapper(row))
