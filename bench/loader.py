"""Large event logs for the rebuild and export scenarios, built through the domain.

How: events are produced by the real aggregates (``Reader``, ``Book``, ``Loan``,
``Conversation``) calling their command methods, exactly as the Applications would (the loan
transitions touch the ``Loan`` and the ``Book`` in the order ``Library`` saves them); they are
encoded with the Library / Chat Application's own mapper (``mapper.to_stored_event``) and
written with binary ``COPY`` into ``library_events`` / ``chat_events`` of a throwaway,
migrated database, under the same ``LOCK TABLE … IN EXCLUSIVE MODE`` eventsourcing takes,
so ``notification_id`` order is the order generated. Nothing is written to the read models:
that is the projections' job (the rebuild scenario).

Mix (of ``n`` events): about 70 % in the Library log — readers registering (n/200), books
published (n/100), then loan life cycles interleaved over up to 500 loans in flight (85 %
approved → returning → returned: 6 events; 10 % declined and 5 % cancelled: 2 events) — and
about 30 % in the Chat log: n/2,000 conversations between random readers, messages of 8–60
characters (Chinese and ASCII) sent by either member, a read receipt every fifth message.
"""

from __future__ import annotations

import collections
import os
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.common import log

_WORDS = [
    "书",
    "借",
    "还",
    "好",
    "谢谢",
    "明天",
    "见",
    "today",
    "ok",
    "三体",
    "红楼梦",
    "hello",
    "周末",
    "咖啡",
    "地铁站",
    "门口",
    "可以",
    "吗",
    "到了",
]


def copy_stored(conn: psycopg.Connection[Any], table: str, stored: Iterable[Any]) -> int:
    """``COPY`` stored events into ``table`` (``…_events`` or ``…_snapshots``) inside the
    caller's transaction, after locking the table as eventsourcing does for inserts, and
    ``NOTIFY`` its channel as eventsourcing does (a running server's projections follow
    LISTEN/NOTIFY only; delivered at the caller's commit)."""
    conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    if table.endswith("_events"):
        conn.execute(f"NOTIFY {table}")
    count = 0
    with (
        conn.cursor() as cur,
        cur.copy(
            f"COPY {table} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["uuid", "int8", "text", "bytea"])
        for s in stored:
            copy.write_row((s.originator_id, s.originator_version, s.topic, s.state))
            count += 1
    return count


@dataclass
class LogCounts:
    library: int = 0
    chat: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.library + self.chat


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))


def _registrations(n: int, rng: random.Random) -> tuple[list[Any], list[Any]]:
    """Readers registering (n/200) and books published (n/100): ``(readers, books)``
    aggregates with their pending events."""
    from domain.book import Book
    from domain.reader import Reader

    readers = [
        Reader(
            id=uuid.UUID(int=rng.getrandbits(128), version=4), nickname=f"读者{i}", avatar_url=""
        )
        for i in range(max(20, n // 200))
    ]
    books = [
        Book(
            id=uuid.UUID(int=rng.getrandbits(128), version=4),
            owner_id=rng.choice(readers).id,
            isbn="9787536692930",
            title=f"三体 第{i}册",
            author="刘慈欣",
            publisher="重庆出版社",
            tags=["科幻", "小说"],
            cover_url="",
            summary="文化大革命如火如荼进行的同时……",
        )
        for i in range(max(20, n // 100))
    ]
    return readers, books


def _loan_events(
    n: int, readers: list[uuid.UUID], books: list[Any], rng: random.Random
) -> Iterator[Any]:
    """About ``n`` Loan / Book events over ``books`` (published aggregates), in an order the
    Library could have saved them: up to 500 loans in flight, each a life cycle."""
    from domain.loan import Loan

    rng.shuffle(books)
    free = collections.deque(books)  # returned books queue up behind the others
    active: list[tuple[Any, Any]] = []  # (loan, book)
    produced = 0
    while produced < n or active:
        if produced < n and free and len(active) < 500:
            book = free.popleft()
            borrower = rng.choice(readers)
            while borrower == book.owner_id:
                borrower = rng.choice(readers)
            loan = Loan(
                id=uuid.UUID(int=rng.getrandbits(128), version=4),
                book_id=book.id,
                borrower_id=borrower,
                lender_id=book.owner_id,
                note="想读",
                contact={"phone": "13800000000"},
            )
            active.append((loan, book))
            yield from loan.collect_events()
            produced += 1
            continue
        index = rng.randrange(len(active))
        loan, book = active[index]
        done = False
        if loan.status == "requested":
            roll = rng.random()
            if roll < 0.10:
                loan.decline(loan.lender_id, "不好意思")
                done = True
            elif roll < 0.15:
                loan.cancel(loan.borrower_id)
                done = True
            else:
                loan.approve(loan.lender_id)
                book.lend(loan.id, loan.borrower_id)
        elif loan.status == "approved":
            loan.start_return(loan.borrower_id)
        else:
            loan.confirm_return(loan.lender_id)
            book.take_back(loan.id)
            done = True
        for event in (*loan.collect_events(), *book.collect_events()):
            produced += 1
            yield event
        if done:
            active[index] = active[-1]
            active.pop()
            free.append(book)


def _chat_events(n: int, readers: list[uuid.UUID], rng: random.Random) -> Iterator[Any]:
    """About ``n`` Chat domain events over ``n/2,000`` conversations of ``readers``."""
    from domain.chat import Conversation

    conversations: list[Any] = []
    seen: set[uuid.UUID] = set()
    produced = 0
    while len(conversations) < max(2, n // 2000):
        a, b = rng.sample(readers, 2)
        conversation = Conversation.open(a, b)
        if conversation.id in seen:
            continue
        seen.add(conversation.id)
        conversations.append(conversation)
        yield from conversation.collect_events()
        produced += 1
    sent = 0
    while produced < n:
        conversation = rng.choice(conversations)
        first, second = conversation.members
        sender = rng.choice((first, second))
        sent += 1
        conversation.send(sender, _text(rng), f"c{sent}")
        if sent % 5 == 0:
            conversation.mark_read(second if sender == first else first, conversation.last_seq)
        for event in conversation.collect_events():
            produced += 1
            yield event


def _write(
    database_url: str, table: str, events: Iterator[Any], mapper: Any, chunk: int = 20_000
) -> int:
    """Encode ``events`` with ``mapper`` and COPY them, ``chunk`` per transaction."""
    written = 0
    with psycopg.connect(database_url) as conn:
        batch: list[Any] = []
        for event in events:
            batch.append(mapper.to_stored_event(event))
            if len(batch) >= chunk:
                with conn.transaction():
                    written += copy_stored(conn, table, batch)
                batch = []
        if batch:
            with conn.transaction():
                written += copy_stored(conn, table, batch)
    return written


def _shard(
    job: tuple[str, str, int, int, list[uuid.UUID], list[tuple[uuid.UUID, uuid.UUID]]],
) -> tuple[str, int]:
    """One worker process: ``("loans", …)`` or ``("chat", …)``; returns (table, written)."""
    from api.bootstrap.db import eventsourcing_env
    from domain.book import Book
    from domain.chat import Chat
    from domain.library import Library

    kind, database_url, n, seed, readers, books = job
    rng = random.Random(seed)
    env = eventsourcing_env(database_url, pool_size=1)
    if kind == "chat":
        app: Any = Chat(env=env)
        try:
            return "chat_events", _write(
                database_url, "chat_events", _chat_events(n, readers, rng), app.mapper
            )
        finally:
            app.close()
    app = Library(env=env)
    try:
        aggregates = []
        for book_id, owner_id in books:  # the published books, as the repository would give them
            book = Book(
                id=book_id,
                owner_id=owner_id,
                isbn="9787536692930",
                title="三体",
                author="刘慈欣",
                publisher="",
                tags=[],
                cover_url="",
                summary="",
            )
            book.collect_events()
            aggregates.append(book)
        events = _loan_events(n, readers, aggregates, rng)
        return "library_events", _write(database_url, "library_events", events, app.mapper)
    finally:
        app.close()


def generate_log(database_url: str, n: int, seed: int = 5, workers: int | None = None) -> LogCounts:
    """Fill ``library_events`` and ``chat_events`` of ``database_url`` with about ``n``
    events (70 % / 30 %); returns how many went into each.

    Readers and books are written first (this process); the loan life cycles (over disjoint
    halves of the books) and the chat log are then generated by worker processes in
    parallel, each COPYing its own chunks: every aggregate's events stay in order."""
    import multiprocessing

    from api.bootstrap.db import eventsourcing_env
    from domain.library import Library

    rng = random.Random(seed)
    started = time.monotonic()
    counts = LogCounts()
    lib_n = int(n * 0.7)
    readers, books = _registrations(lib_n, rng)
    library = Library(env=eventsourcing_env(database_url, pool_size=1))
    try:
        events = (e for agg in (*readers, *books) for e in agg.collect_events())
        counts.library += _write(database_url, "library_events", events, library.mapper)
    finally:
        library.close()
    reader_ids = [r.id for r in readers]
    loan_n = lib_n - counts.library
    shards = max(1, (workers or os.cpu_count() or 2))
    jobs: list[Any] = [
        (
            "loans",
            database_url,
            loan_n // shards,
            seed + 1 + k,
            reader_ids,
            [(b.id, b.owner_id) for b in books[k::shards]],
        )
        for k in range(shards)
    ]
    jobs.append(("chat", database_url, n - lib_n, seed + 100, reader_ids, []))
    with multiprocessing.get_context("spawn").Pool(min(len(jobs), shards + 1)) as pool:
        for table, written in pool.imap_unordered(_shard, jobs):
            if table == "library_events":
                counts.library += written
            else:
                counts.chat += written
            log(f"log: a worker wrote {written:,} events to {table}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) library_events")
        conn.execute("VACUUM (ANALYZE) chat_events")
    counts.seconds = time.monotonic() - started
    return counts


def raw_read(
    database_url: str,
    tables: tuple[str, ...] = ("library_events", "chat_events"),
    itersize: int = 10_000,
) -> tuple[int, float]:
    """Read every row of ``tables`` in ``notification_id`` order with a server-side cursor
    (all columns, fetched into Python); returns ``(rows, seconds)``."""
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(database_url) as conn:
        for table in tables:
            with conn.cursor(name=f"raw_{table}") as cur:
                cur.itersize = itersize
                cur.execute(
                    f"SELECT notification_id, originator_id, originator_version, topic, state "
                    f"FROM {table} ORDER BY notification_id"
                )
                while batch := cur.fetchmany(itersize):
                    rows += len(batch)
    return rows, time.perf_counter() - started


def big_log(ctx: Any) -> tuple[str, LogCounts]:
    """The run's large log (generated once, shared by rebuild and export): ``(url, counts)``.

    Its size is 1,000,000 events (10,000 with ``--quick``); the database is dropped when the
    run ends."""
    if "big_log" not in ctx.cache:
        from bench.common import throwaway_database

        n = ctx.size(1_000_000, 10_000)
        url = ctx.stack.enter_context(throwaway_database(ctx.svc.server_url, "log"))
        log(f"generating a log of {n:,} events through the domain (bench.loader)")
        counts = generate_log(url, n)
        log(
            f"log: {counts.library:,} library + {counts.chat:,} chat events in "
            f"{counts.seconds:.1f} s ({counts.total / counts.seconds:,.0f} events/s)"
        )
        ctx.cache["big_log"] = (url, counts)
    return ctx.cache["big_log"]  # type: ignore[no-any-return]
