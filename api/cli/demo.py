"""``liudong demo …``: load real data through the same command path a client uses.

(One module a little over 500 lines: the seeding plan, its driver and its summary serve this
command group only.)

``liudong demo seed FILE`` reads book rows from a catalog CSV (douban, goodbooks-10k or the
generic layout, read by ``api.adapters.catalog.read_catalog_csv``), imports them into the ISBN catalog,
then drives the Library exactly as the mini-program would:

1. readers log in: dev openId ``DevLoginProvider.open_id_for("demo-<i>")`` →
   ``reader_id_for`` → ``RegisterReader`` (nickname as ``POST /v1/auth/login`` gives it);
2. every valid row becomes one copy on a reader's shelf: ``PublishBook`` with only the ISBN
   sent and every other field filled from the catalog, as ``POST /v1/books`` does (rows
   repeating an ISBN are several copies, as on a real shelf);
3. a share of the books (``--borrow-ratio``) is asked for by a random other reader
   (``RequestLoan``); the owner approves, declines, or the borrower cancels; some approved
   loans are given back (``StartReturn`` + ``ConfirmReturn``), some are half-way back
   (``StartReturn`` only), the rest stay on loan; some requests stay pending.

Every step is a ``container.library.handle(command)``. Choices (owners, borrowers, outcomes,
notes) are deterministic for a given ``--seed``; aggregate ids are random, so seeding twice
into one database adds a second set of books (readers are registered idempotently).

At the end the command waits for the shelf projection to include the last event and reports
how long that catch-up took, then prints a summary as lines and as one JSON line.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import click
import psycopg

from api.adapters.catalog import (
    CatalogEntry,
    CatalogImportError,
    PublishRefused,
    Rejection,
    detect_format,
    publish_command,
    read_catalog_csv,
)
from api.adapters.wechat import DevLoginProvider, default_nickname
from api.bootstrap.settings import Settings, SettingsError
from domain import commands as c
from domain.errors import DomainError
from domain.reader import reader_id_for

__all__ = ["SeedPlan", "SeedSummary", "demo", "seed_library"]

demo = click.Group(
    "demo",
    help="Demo data: load real book lists through the same commands the mini-program sends.",
)

# Loan outcomes: cumulative probabilities drawn once per requested book.
_PENDING, _DECLINED, _CANCELLED = 0.10, 0.25, 0.40  # the rest (60 %) is approved
# Of the approved loans: returned and confirmed, or return started only; the rest stay lent.
_RETURNED, _RETURNING = 0.55, 0.70

_NOTES = (
    "想借来周末看，下周一还。",
    "这本书找了好久，可以借我看看吗？",
    "朋友推荐的，想读一读。",
    "我会好好爱护的，谢谢！",
    "可以在图书馆门口交接吗？",
    "Would love to borrow this one, thanks!",
    "Reading group pick this month — could I borrow it?",
    "",
)
_DECLINE_REASONS = (
    "这周自己在看，下次吧。",
    "已经答应借给别人了。",
    "Sorry, I'm reading it now.",
    "",
)
_CATALOG_BATCH = 1000


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class SeedPlan:
    """What to seed. ``books=None``: every valid row of the file."""

    path: Path
    readers: int = 200
    books: int | None = None
    borrow_ratio: float = 0.3
    seed: int = 42
    progress: bool = True
    catchup_timeout: float = 600.0


@dataclass
class SeedSummary:
    """What ``seed_library`` did (``to_json`` is the JSON line the CLI prints).

    Times are wall-clock seconds. ``commands_seconds`` is the readers + books + loans phases
    (``handle_seconds`` the part spent inside ``Library.handle``; the rest is mostly the
    catalog look-up of each publish); ``books_per_second`` is books published over the books
    phase, ``commands_per_second`` commands sent over ``commands_seconds``;
    ``elapsed_seconds`` runs from reading the file to the shelf having caught up (starting
    the container is not counted); ``projection_catchup_seconds`` is the wait, after the
    last command, until the shelf projection included its event (``None``: timed out)."""

    file: str
    format: str
    seed: int
    rows_read: int = 0
    rows_used: int = 0
    catalog_isbns: int = 0
    readers: int = 0
    readers_created: int = 0
    readers_existing: int = 0
    books_published: int = 0
    rejected_rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    loans_requested: int = 0
    loans_approved: int = 0
    loans_returned: int = 0
    loans_returning: int = 0
    loans_declined: int = 0
    loans_cancelled: int = 0
    loans_pending: int = 0
    books_on_loan: int = 0
    commands_total: int = 0
    commands_refused: dict[str, int] = field(default_factory=dict)
    last_position: int | None = None
    catalog_seconds: float = 0.0
    readers_seconds: float = 0.0
    publish_seconds: float = 0.0
    loans_seconds: float = 0.0
    commands_seconds: float = 0.0
    handle_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    books_per_second: float = 0.0
    commands_per_second: float = 0.0
    projection_catchup_seconds: float | None = None

    def to_json(self) -> str:
        fields = {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return json.dumps(fields, ensure_ascii=False)

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{k}: {v:,}" for k, v in self.rejected.items())
        refused = ", ".join(f"{k}: {v:,}" for k, v in self.commands_refused.items())
        catchup = (
            "timed out"
            if self.projection_catchup_seconds is None
            else f"{self.projection_catchup_seconds:.2f} s"
        )
        return [
            f"file:               {self.file} ({self.format} layout, seed {self.seed})",
            f"rows:               {self.rows_read:,} read, {self.rows_used:,} used, "
            f"{self.catalog_isbns:,} ISBNs imported into the catalog",
            f"readers:            {self.readers:,} ({self.readers_created:,} created, "
            f"{self.readers_existing:,} already registered)",
            f"books published:    {self.books_published:,}",
            f"rejected rows:      {self.rejected_rows:,}" + (f" ({rejected})" if rejected else ""),
            f"loans requested:    {self.loans_requested:,}",
            f"  approved:         {self.loans_approved:,} (returned {self.loans_returned:,}, "
            f"returning {self.loans_returning:,}, on loan {self.books_on_loan:,})",
            f"  declined:         {self.loans_declined:,}",
            f"  cancelled:        {self.loans_cancelled:,}",
            f"  pending:          {self.loans_pending:,}",
            f"commands:           {self.commands_total:,}"
            + (f" (refused: {refused})" if refused else ""),
            f"time:               {self.elapsed_seconds:.2f} s "
            f"(catalog {self.catalog_seconds:.2f} s, commands {self.commands_seconds:.2f} s: "
            f"readers {self.readers_seconds:.2f}, books {self.publish_seconds:.2f}, "
            f"loans {self.loans_seconds:.2f}; {self.handle_seconds:.2f} s in Library.handle)",
            f"throughput:         {self.books_per_second:,.1f} books/s, "
            f"{self.commands_per_second:,.1f} commands/s",
            f"projection catch-up: {catchup} (shelf at position {self.last_position})",
        ]


@dataclass
class _Loan:
    loan_id: UUID
    book_id: UUID
    owner_id: UUID
    borrower_id: UUID
    outcome: str  # pending | declined | cancelled | returned | returning | lent


class _Driver:
    """Sends commands, counting them and remembering the last recorded position."""

    def __init__(self, handle: Callable[[c.Command], c.Recorded], summary: SeedSummary) -> None:
        self._handle = handle
        self.summary = summary
        self.refused: Counter[str] = Counter()
        self.last: c.Recorded | None = None
        self.seconds = 0.0

    def send(self, command: c.Command) -> c.Recorded | None:
        started = time.perf_counter()
        try:
            recorded = self._handle(command)
        except DomainError as exc:
            self.refused[f"{type(command).__name__}:{exc.code}"] += 1
            return None
        finally:
            self.seconds += time.perf_counter() - started
            self.summary.commands_total += 1
        if recorded.position is not None:
            self.last = recorded
        return recorded


def _read_rows(path: Path) -> tuple[str, Generator[CatalogEntry | Rejection, None, None]]:
    """The file's layout (for the summary) and its rows, read by ``read_catalog_csv``."""
    fmt: str
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            fmt = detect_format(next(csv.reader(f), []))
    except (UnicodeDecodeError, csv.Error):
        fmt = "unknown"  # read_catalog_csv reports the problem with a better message

    def rows() -> Generator[CatalogEntry | Rejection, None, None]:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            yield from read_catalog_csv(stream, name=str(path))

    return fmt, rows()


def _bar(progress: bool, total: int, desc: str, unit: str = "cmd") -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(
        total=total, desc=desc, unit=unit, disable=not progress, leave=False, file=sys.stderr
    )


def seed_library(container: Any, plan: SeedPlan) -> SeedSummary:
    """Run the seeding described in the module docstring on ``container`` (an
    ``api.bootstrap.container.Container``). Raises ``CatalogImportError`` for an unreadable CSV."""
    run_started = time.perf_counter()
    rng = random.Random(plan.seed)
    fmt, items = _read_rows(plan.path)
    summary = SeedSummary(file=str(plan.path), format=fmt, seed=plan.seed)
    rejected: Counter[str] = Counter()

    # 1. the rows and the catalog
    t0 = time.perf_counter()
    entries: list[CatalogEntry] = []
    for item in items:
        if plan.books is not None and len(entries) >= plan.books:
            break
        summary.rows_read += 1
        if isinstance(item, Rejection):
            rejected[item.reason] += 1
        else:
            entries.append(item)
    items.close()
    summary.rows_used = len(entries)
    isbns: set[str] = set()
    for i in range(0, len(entries), _CATALOG_BATCH):
        batch = entries[i : i + _CATALOG_BATCH]
        container.catalog.upsert_many(batch)
        isbns.update(e.isbn for e in batch)
    summary.catalog_isbns = len(isbns)
    summary.catalog_seconds = time.perf_counter() - t0

    driver = _Driver(container.library.handle, summary)

    # 2. readers, through the login path
    readers: list[UUID] = []
    t_readers = time.perf_counter()
    with _bar(plan.progress, plan.readers, "readers") as bar:
        for i in range(plan.readers):
            name = f"demo-{i}"
            open_id = DevLoginProvider.open_id_for(name)
            reader_id = reader_id_for(open_id)
            nickname = default_nickname(f"dev:{name}", open_id)
            recorded = driver.send(c.RegisterReader(reader_id=reader_id, nickname=nickname))
            if recorded is not None:
                readers.append(reader_id)
                if recorded.position is None:
                    summary.readers_existing += 1
                else:
                    summary.readers_created += 1
            bar.update()
    summary.readers = len(readers)
    summary.readers_seconds = time.perf_counter() - t_readers

    # 3. books: ISBN only, the rest from the catalog
    books: list[tuple[UUID, UUID]] = []  # (book_id, owner_id)
    t_publish = time.perf_counter()
    with _bar(plan.progress, len(entries), "books", "book") as bar:
        for entry in entries:
            owner_id = readers[rng.randrange(len(readers))]
            try:
                command = publish_command(
                    container.catalog,
                    entry.isbn,
                    {},
                    book_id=uuid4(),
                    owner_id=owner_id,
                )
            except PublishRefused as exc:
                rejected[exc.code] += 1
            else:
                if driver.send(command) is None:
                    rejected["publish refused"] += 1
                else:
                    books.append((command.book_id, owner_id))
            bar.update()
    summary.publish_seconds = time.perf_counter() - t_publish
    summary.books_published = len(books)

    # 4. borrowing, in rounds: requests, then answers, then returns
    loans = _plan_loans(rng, books, readers, plan.borrow_ratio)
    steps = sum(
        1 + {"pending": 0, "returned": 3, "returning": 2, "lent": 1}.get(loan.outcome, 1)
        for loan in loans
    )
    t_loans = time.perf_counter()
    with _bar(plan.progress, steps, "loans") as bar:
        requested: list[_Loan] = []
        for loan in loans:
            recorded = driver.send(
                c.RequestLoan(
                    loan_id=loan.loan_id,
                    book_id=loan.book_id,
                    borrower_id=loan.borrower_id,
                    note=rng.choice(_NOTES),
                )
            )
            bar.update()
            if recorded is not None:
                requested.append(loan)
        summary.loans_requested = len(requested)

        answered = requested[:]
        rng.shuffle(answered)
        approved: list[_Loan] = []
        for loan in answered:
            if loan.outcome == "pending":
                summary.loans_pending += 1
                continue
            if loan.outcome == "declined":
                reason = rng.choice(_DECLINE_REASONS)
                ok = driver.send(
                    c.DeclineLoan(loan_id=loan.loan_id, actor_id=loan.owner_id, reason=reason)
                )
                summary.loans_declined += ok is not None
            elif loan.outcome == "cancelled":
                ok = driver.send(c.CancelLoan(loan_id=loan.loan_id, actor_id=loan.borrower_id))
                summary.loans_cancelled += ok is not None
            else:
                ok = driver.send(c.ApproveLoan(loan_id=loan.loan_id, actor_id=loan.owner_id))
                if ok is not None:
                    summary.loans_approved += 1
                    approved.append(loan)
            bar.update()

        rng.shuffle(approved)
        giving_back: list[_Loan] = []
        for loan in approved:
            if loan.outcome in ("returned", "returning"):
                back = c.StartReturn(loan_id=loan.loan_id, actor_id=loan.borrower_id)
                if driver.send(back) is not None:
                    giving_back.append(loan)
                bar.update()
        for loan in giving_back:
            if loan.outcome == "returned":
                confirm = c.ConfirmReturn(loan_id=loan.loan_id, actor_id=loan.owner_id)
                if driver.send(confirm) is not None:
                    summary.loans_returned += 1
                bar.update()
            else:
                summary.loans_returning += 1
        bar.update(max(0, steps - bar.n))
    summary.loans_seconds = time.perf_counter() - t_loans
    summary.books_on_loan = summary.loans_approved - summary.loans_returned

    summary.rejected = dict(rejected.most_common())
    summary.rejected_rows = sum(rejected.values())
    summary.commands_refused = dict(driver.refused.most_common())
    summary.commands_seconds = (
        summary.readers_seconds + summary.publish_seconds + summary.loans_seconds
    )
    summary.handle_seconds = driver.seconds
    summary.books_per_second = _rate(summary.books_published, summary.publish_seconds)
    summary.commands_per_second = _rate(summary.commands_total, summary.commands_seconds)

    # 5. the shelf catches up
    summary.last_position = driver.last.position if driver.last else None
    summary.projection_catchup_seconds = _catch_up(container, driver.last, plan)
    summary.elapsed_seconds = time.perf_counter() - run_started
    return summary


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def _plan_loans(
    rng: random.Random, books: list[tuple[UUID, UUID]], readers: list[UUID], ratio: float
) -> list[_Loan]:
    if len(readers) < 2 or not books:
        return []
    count = min(len(books), round(len(books) * ratio))
    loans = []
    for book_id, owner_id in rng.sample(books, count):
        borrower_id = owner_id
        while borrower_id == owner_id:
            borrower_id = readers[rng.randrange(len(readers))]
        r = rng.random()
        if r < _PENDING:
            outcome = "pending"
        elif r < _DECLINED:
            outcome = "declined"
        elif r < _CANCELLED:
            outcome = "cancelled"
        else:
            r2 = rng.random()
            outcome = "returned" if r2 < _RETURNED else "returning" if r2 < _RETURNING else "lent"
        loans.append(_Loan(uuid4(), book_id, owner_id, borrower_id, outcome))
    return loans


def _catch_up(container: Any, last: c.Recorded | None, plan: SeedPlan) -> float | None:
    """Seconds until the shelf includes ``last``; ``None`` if ``plan.catchup_timeout`` passed
    (or the projection stopped on a failure)."""
    from api.bootstrap.container import ReadModelLag

    started = time.perf_counter()
    if last is None:
        return 0.0
    deadline = started + plan.catchup_timeout
    while True:
        try:
            container.wait_for_shelf(last)
            return round(time.perf_counter() - started, 3)
        except ReadModelLag:
            failed = [r for r in container.runners if r.status.state == "failed"]
            if failed or time.perf_counter() >= deadline:
                for runner in failed:
                    click.echo(
                        f"projection {runner.projection.name} failed: {runner.status.error}",
                        err=True,
                    )
                return None


# --------------------------------------------------------------------------- CLI


@demo.command("seed")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option(
    "--readers",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Readers to register (dev logins demo-0 … demo-N-1).",
)
@click.option(
    "--books",
    type=click.IntRange(min=0),
    default=None,
    help="Books to publish: the first N valid rows.  [default: every row]",
)
@click.option(
    "--borrow-ratio",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Share of the books someone asks to borrow.",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Random seed: owners, borrowers and loan outcomes.",
)
@click.option(
    "--catchup-timeout",
    type=click.FloatRange(min=0.0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the shelf projection at the end.",
)
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
def seed_command(  # noqa: PLR0913
    file: Path,
    readers: int,
    books: int | None,
    borrow_ratio: float,
    seed: int,
    catchup_timeout: float,
    no_progress: bool,
) -> None:
    """Seed readers, books and loans from the book list FILE (douban, goodbooks-10k
    books.csv, or generic CSV: isbn,title[,author,publisher,…]).

    The rows are imported into the ISBN catalog, then published by ISBN alone through the
    Library commands the API uses. Prints a summary, then the same as one JSON line.
    The database is DATABASE_URL (migrated: `liudong migrate`) or the embedded PostgreSQL."""
    from api.bootstrap.container import Container

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    plan = SeedPlan(
        path=file,
        readers=readers,
        books=books,
        borrow_ratio=borrow_ratio,
        seed=seed,
        progress=not no_progress and sys.stderr.isatty(),
        catchup_timeout=catchup_timeout,
    )
    try:
        container = Container.build(settings)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"database error: {exc}") from exc
    try:
        summary = seed_library(container, plan)
    except CatalogImportError as exc:
        raise click.ClickException(str(exc)) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise click.ClickException(
            f"a table is missing ({exc.diag.message_primary}); run `liudong migrate`"
        ) from exc
    finally:
        asyncio.run(container.aclose())
    for line in summary.lines():
        click.echo(line)
    click.echo(summary.to_json())
    if summary.projection_catchup_seconds is None:
        raise click.ClickException(
            f"the shelf projection did not reach position {summary.last_position} "
            f"within {catchup_timeout:g} s"
        )
