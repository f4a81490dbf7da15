"""Regression test for the ordering-gap bug class: a follower of the notification log that
reads "after the last id I saw" must never skip an event, with concurrent writers.

eventsourcing's default insert mode takes a table lock so commit order equals insert order
(the DB-function mode of 9.5.6 does not, see docs/DESIGN notes); this test would catch a
regression to an unsafe mode.
"""

from __future__ import annotations

import threading
from uuid import uuid4

import psycopg

from api.bootstrap.db import eventsourcing_env
from domain import commands as c
from domain.library import Library
from domain.reader import reader_id_for

WRITERS = 6
COMMANDS_PER_WRITER = 60


def test_follower_never_skips_an_event_with_concurrent_writers(database_url: str) -> None:
    apps = [Library(env=eventsourcing_env(database_url, pool_size=2)) for _ in range(WRITERS)]
    follower = Library(env=eventsourcing_env(database_url, pool_size=1))
    start = int(follower.recorder.max_notification_id() or 0)
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def follow() -> None:
        position = start
        while True:
            finished = done.is_set()
            page = follower.recorder.select_notifications(
                start=position, limit=7, inclusive_of_start=False
            )
            for n in page:
                seen.append(n.id)
                position = n.id
            if finished and not page:
                return

    def write(app: Library, n: int) -> None:
        try:
            owner = reader_id_for(f"gap-writer-{n}-{uuid4()}")
            app.handle(c.RegisterReader(reader_id=owner, nickname=f"w{n}"))
            for i in range(COMMANDS_PER_WRITER):
                app.handle(
                    c.PublishBook(
                        book_id=uuid4(), owner_id=owner, isbn="9780000000002", title=f"w{n}-{i}"
                    )
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=write, args=(app, n)) for n, app in enumerate(apps)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join(60)
    assert not errors, errors
    with psycopg.connect(database_url) as conn:
        committed = [
            row[0]
            for row in conn.execute(
                "SELECT notification_id FROM library_events WHERE notification_id > %s "
                "ORDER BY notification_id",
                (start,),
            )
        ]
    assert len(committed) == WRITERS * (COMMANDS_PER_WRITER + 1)
    assert seen == committed  # every event, once, in order
    for app in [*apps, follower]:
        app.close()
