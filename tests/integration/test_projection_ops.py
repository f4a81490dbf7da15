"""Operating projections against the real PostgreSQL: rebuild (identical, live, atomic
switch), status figures, poison → failed → skip / retry → the runner continues, the CLI.

Each test uses a shelf projection under its own name, so it never competes for the advisory
lock with another test's (or the e2e server's) ``shelf`` runner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.rows import dict_row

from api.cli import main
from domain import commands as c
from domain.library import Library
from projections import ops
from projections.board import tracked_position
from projections.read_model import ReadModelProjection
from projections.registry import sources_from_apps
from projections.runner import ReadModelRunner
from projections.shelf import ShelfProjection
from projections.versions import active_schema, create_version, ensure_active_version
from tests.conftest import wait_until
from tests.integration.activity import reader, story


def shelf_named(prefix: str) -> ShelfProjection:
    cls = type(f"Shelf_{prefix}", (ShelfProjection,), {"name": f"{prefix}_{uuid4().hex[:8]}"})
    return cls()  # type: ignore[no-any-return]


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as connection:
        yield connection


def table_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> list[dict[str, Any]]:
    return conn.execute(
        sql.SQL("SELECT * FROM {}.{} ORDER BY id").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
    ).fetchall()


def assert_identical(
    conn: psycopg.Connection[Any], projection: ReadModelProjection, left: str, right: str
) -> None:
    for table in projection.tables:
        a, b = table_rows(conn, left, table), table_rows(conn, right, table)
        assert a, f"{left}.{table} is empty: nothing compared"
        assert a == b, f"{left}.{table} differs from {right}.{table}"


def head(conn: psycopg.Connection[Any], library: Library) -> int:
    return ops.log_head(conn, sources_from_apps(library)["library"])


def caught_up(
    conn: psycopg.Connection[Any], projection: ReadModelProjection, library: Library
) -> bool:
    return tracked_position(conn, projection.name, "library") >= head(conn, library)


def runner_for(
    projection: ReadModelProjection, database_url: str, library: Library, **kwargs: Any
) -> ReadModelRunner:
    return ReadModelRunner(
        projection, database_url, sources_from_apps(library), idle_wait=0.2, **kwargs
    )


# -- rebuild --------------------------------------------------------------------------------------


def test_a_rebuilt_version_is_identical_row_for_row(
    database_url: str, library: Library, conn: psycopg.Connection[Any]
) -> None:
    projection = shelf_named("ident")
    for i in range(3):
        story(library, f"ident{i}")
    live = runner_for(projection, database_url, library, page_size=37)
    live.start()
    try:
        wait_until(lambda: caught_up(conn, projection, library), timeout=30)
    finally:
        live.stop()
    old = active_schema(conn, projection.name)

    result = ops.rebuild(
        database_url, projection, sources_from_apps(library), page_size=101, keep_old=True
    )

    assert result.old_schema == old and result.new_schema != old
    assert active_schema(conn, projection.name) == result.new_schema
    assert result.positions == {"library": tracked_position(conn, projection.name, "library")}
    # the whole log, page by page (ids may have gaps: count the events)
    assert result.events == conn.execute("SELECT count(*) AS n FROM library_events").fetchone()["n"]
    assert_identical(conn, projection, old, result.new_schema)
    # reads (the views) now come from the new version
    views = table_rows(conn, projection.name, "books")
    assert views == table_rows(conn, result.new_schema, "books")


def test_rebuild_while_the_runner_runs_and_commands_keep_arriving(
    database_url: str, library: Library, conn: psycopg.Connection[Any]
) -> None:
    projection = shelf_named("live")
    story(library, "live-before")
    live = runner_for(projection, database_url, library, page_size=20)
    live.start()
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            try:
                story(library, f"live{n}")
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)
                return
            n += 1

    writer = threading.Thread(target=keep_writing, daemon=True)
    try:
        wait_until(lambda: caught_up(conn, projection, library), timeout=30)
        old = active_schema(conn, projection.name)
        writer.start()
        result = ops.rebuild(database_url, projection, sources_from_apps(library), page_size=50)
        assert live.status.state == "running"
        assert result.dropped_old
        assert (
            conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (old,)
            ).fetchone()
            is None
        )
        assert (
            conn.execute(
                "SELECT count(*) AS n FROM projection_versions WHERE projection = %s",
                (projection.name,),
            ).fetchone()["n"]
            == 1
        )
        last = story(library, "live-after-switch")
        stop.set()
        writer.join(30)
        assert not errors, errors
        assert last.position is not None
        # the live runner followed the new version and keeps it current
        wait_until(lambda: caught_up(conn, projection, library), timeout=30)
        assert active_schema(conn, projection.name) == result.new_schema
        assert tracked_position(conn, projection.name, "library") > result.positions["library"]
    finally:
        stop.set()
        live.stop()
    # no event lost or doubled: the live-maintained version equals a fresh rebuild
    fresh = ops.rebuild(database_url, projection, sources_from_apps(library), keep_old=True)
    assert fresh.old_schema == result.new_schema
    assert_identical(conn, projection, result.new_schema, fresh.new_schema)


def test_only_one_rebuild_at_a_time(database_url: str, library: Library) -> None:
    projection = shelf_named("once")
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ops.rebuild_lock_key(projection.name),))
        with pytest.raises(ops.RebuildInProgress):
            ops.rebuild(database_url, projection, sources_from_apps(library))


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_lag_then_catches_up(
    database_url: str, library: Library, conn: psycopg.Connection[Any]
) -> None:
    projection = shelf_named("lag")
    sources = sources_from_apps(library)
    (missing,) = ops.status(database_url, [projection], sources)
    assert missing.state == "missing" and missing.version is None
    ensure_active_version(database_url, projection)
    first = runner_for(projection, database_url, library)
    first.start()
    wait_until(lambda: caught_up(conn, projection, library), timeout=30)
    first.stop()
    story(library, "lagging")

    (behind,) = ops.status(database_url, [projection], sources)

    assert behind.state == "stopped" and behind.holder is None
    (src,) = behind.sources
    assert src.source == "library" and src.head == head(conn, library)
    assert src.lag_events == src.head - src.position >= 20
    assert src.lag_seconds > 0
    assert behind.version == 1 and behind.schema == f"{projection.name}_v1"

    second = runner_for(projection, database_url, library)
    second.start()
    try:
        wait_until(lambda: caught_up(conn, projection, library), timeout=30)
        (current,) = ops.status(database_url, [projection], sources)
        assert current.state == "running"
        assert current.holder and f"liudong projection {projection.name}"[:63] in current.holder
        (src,) = current.sources
        assert (src.lag_events, src.lag_seconds) == (0, 0.0)
        assert src.position == src.head and src.last_event_at is not None
        as_json = current.to_dict()
        assert json.loads(json.dumps(as_json))["sources"][0]["lag_events"] == 0
    finally:
        second.stop()
    # a version newer than the active one is reported as a rebuild
    with psycopg.connect(database_url, row_factory=dict_row) as c2, c2.transaction():
        pending = create_version(c2, projection, activate=False)
    (rebuilding,) = ops.status(database_url, [projection], sources)
    assert rebuilding.rebuild is not None and rebuilding.rebuild.schema == pending
    assert rebuilding.rebuild.positions == {"library": 0} and not rebuilding.rebuilding


# -- poison, skip, retry --------------------------------------------------------------------------


class _Poisoned(ShelfProjection):
    """Cannot digest books titled ``poison_title``; ``broken`` toggles a fixable fault."""

    poison_title = ""
    broken_title = ""
    broken = True

    def apply(self, cur: Any, schema: Any, source: str, position: int, event: Any) -> None:
        title = getattr(event, "title", None)
        if title == self.poison_title:
            raise ValueError("cannot digest this book")
        if title == self.broken_title and self.broken:
            raise RuntimeError("temporarily broken")
        super().apply(cur, schema, source, position, event)


def test_poison_event_fails_loudly_then_skip_lets_the_runner_continue(
    database_url: str, library: Library, conn: psycopg.Connection[Any]
) -> None:
    tag = uuid4().hex[:8]
    cls = type(
        "Poisoned",
        (_Poisoned,),
        {
            "name": f"poison_{tag}",
            "poison_title": f"POISON {tag}",
            "broken_title": f"FIX {tag}",
        },
    )
    projection: _Poisoned = cls()
    owner = reader(library, "poison-owner")

    def publish(title: str) -> c.Recorded:
        return library.handle(
            c.PublishBook(book_id=uuid4(), owner_id=owner, isbn="9780000000002", title=title)
        )

    publish("fine")
    bad = publish(projection.poison_title)
    after = publish("after")
    live = runner_for(projection, database_url, library, retry_interval=0.2)
    live.start()
    sources = sources_from_apps(library)
    try:
        wait_until(lambda: live.status.state == "failed", timeout=30)
        (st,) = ops.status(database_url, [projection], sources)
        assert st.state == "failed"
        (failure,) = st.failures
        assert (failure.source, failure.position) == ("library", bad.position)
        assert "cannot digest this book" in failure.error
        assert st.sources[0].position == bad.position - 1 and st.sources[0].lag_events > 0
        with pytest.raises(ops.NothingToSkip):
            ops.skip(
                database_url,
                projection.name,
                "library",
                after.position,  # type: ignore[arg-type]
                reason="not failed",
                by="test",
            )

        skipped = CliRunner().invoke(
            main,
            [
                "projections",
                "skip",
                projection.name,
                str(bad.position),
                "--source",
                "library",
                "--reason",
                "test poison",
                "--by",
                "pytest",
            ],
            env={"DATABASE_URL": database_url},
        )
        assert skipped.exit_code == 0, skipped.output

        assert bad.position is not None and after.position is not None
        wait_until(lambda: live.status.state == "running", timeout=10)
        wait_until(lambda: caught_up(conn, projection, library), timeout=30)
        row = conn.execute(
            "SELECT skipped_at, skipped_by, skip_reason FROM projection_failures "
            "WHERE schema_name = %s AND position = %s",
            (st.schema, bad.position),
        ).fetchone()
        assert row["skipped_at"] is not None
        assert (row["skipped_by"], row["skip_reason"]) == ("pytest", "test poison")
        titles = {r["title"] for r in table_rows(conn, projection.name, "books")}
        assert "after" in titles and projection.poison_title not in titles
        (st,) = ops.status(database_url, [projection], sources)
        assert st.state == "running" and not st.failures

        # a fixable fault: fix it, then retry (the event is applied, not skipped)
        fixable = publish(projection.broken_title)
        wait_until(lambda: live.status.state == "failed", timeout=30)
        assert live.status.failed_position == fixable.position
        projection.broken = False
        assert ops.retry(database_url, projection.name) == 1
        wait_until(lambda: caught_up(conn, projection, library), timeout=30)
        titles = {r["title"] for r in table_rows(conn, projection.name, "books")}
        assert projection.broken_title in titles
        assert live.status.state == "running"
    finally:
        live.stop()


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_status_and_rebuild(
    database_url: str, library: Library, conn: psycopg.Connection[Any]
) -> None:
    story(library, "cli")
    env = {"DATABASE_URL": database_url}
    rebuilt = CliRunner().invoke(
        main, ["projections", "rebuild", "shelf", "--page-size", "200"], env=env
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt shelf:" in rebuilt.output and "events/s" in rebuilt.output

    shown = CliRunner().invoke(main, ["projections", "status", "--json"], env=env)

    assert shown.exit_code == 0, shown.output
    by_name = {p["name"]: p for p in json.loads(shown.output)}
    shelf = by_name["shelf"]
    assert shelf["schema"] == active_schema(conn, "shelf")
    assert shelf["sources"][0]["source"] == "library"
    assert shelf["sources"][0]["head"] == head(conn, library)
    text = CliRunner().invoke(main, ["projections", "status"], env=env)
    assert text.exit_code == 0 and "shelf" in text.output and "lag" in text.output
    unknown = CliRunner().invoke(main, ["projections", "rebuild", "nope"], env=env)
    assert unknown.exit_code != 0 and "known" in unknown.output


def test_switching_versions_whatever_order_their_rows_are_stored_in(
    conn: psycopg.Connection[dict[str, Any]],
) -> None:
    """The one-active unique index is checked per row: the switch must not meet the new
    version's row (made active) before the old one (still active). A no-op update of the
    old row stores its new tuple after the new version's, so a scan meets the new row
    first (a rebuild failed so, now and then, on a busy table)."""
    from projections.versions import switch_to

    projection = shelf_named("order")
    with conn.transaction():
        first = create_version(conn, projection, activate=True)
        second = create_version(conn, projection, activate=False)
    conn.execute("UPDATE projection_versions SET active = active WHERE schema_name = %s", (first,))
    with conn.transaction():
        switch_to(conn, projection, second)
    assert active_schema(conn, projection.name) == second
    with conn.transaction():
        switch_to(conn, projection, first)  # and back
    assert active_schema(conn, projection.name) == first
