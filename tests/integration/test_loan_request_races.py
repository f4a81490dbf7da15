"""Simultaneous loan requests of one book on a real PostgreSQL: every request saves the book
(``Book.RequestReceived``), so they conflict on its version; ``Library.handle`` runs a loser
again after a jittered back-off. Sixteen different borrowers at once: all sixteen recorded.
One borrower sixteen times at once: one recorded, fifteen ``RequestPending`` naming it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from api.bootstrap.db import eventsourcing_env
from api.bootstrap.group_commit import group_commit
from domain import commands as c
from domain.errors import RequestPending
from domain.library import Library

N = 16
ISBN = "9787020002207"


@pytest.fixture(scope="module", params=["one_by_one", "group_commit"])
def library(database_url: str, request: pytest.FixtureRequest) -> Iterator[Library]:
    """The Library saving one by one, or through a group commit as the server does."""
    app = Library(env=eventsourcing_env(database_url, pool_size=N))
    if request.param == "group_commit":
        group_commit(app)
    yield app
    app.close()


def at_once(work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` for ``i`` in ``range(N)`` from N threads released together; the results
    (or the exceptions raised)."""
    barrier = threading.Barrier(N)
    results: list[Any] = [None] * N

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 — returned to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def a_book(library: Library) -> tuple[UUID, list[UUID]]:
    owner, borrowers = uuid4(), [uuid4() for _ in range(N)]
    for reader in (owner, *borrowers):
        library.handle(c.RegisterReader(reader_id=reader, nickname="r"))
    book = uuid4()
    library.handle(c.PublishBook(book_id=book, owner_id=owner, isbn=ISBN, title="热门"))
    return book, borrowers


def test_sixteen_borrowers_asking_at_once_are_all_recorded(library: Library) -> None:
    book, borrowers = a_book(library)
    loans = [uuid4() for _ in range(N)]

    results = at_once(
        lambda i: library.handle(
            c.RequestLoan(loan_id=loans[i], book_id=book, borrower_id=borrowers[i])
        )
    )

    assert [r.id if isinstance(r, c.Recorded) else r for r in results] == loans
    assert library.book(book).open_requests == dict(zip(borrowers, loans, strict=True))


def test_one_borrower_asking_sixteen_times_at_once_is_recorded_once(library: Library) -> None:
    book, borrowers = a_book(library)
    loans = [uuid4() for _ in range(N)]

    results = at_once(
        lambda i: library.handle(
            c.RequestLoan(loan_id=loans[i], book_id=book, borrower_id=borrowers[0])
        )
    )

    recorded = [r for r in results if isinstance(r, c.Recorded)]
    assert len(recorded) == 1, results
    pending = [r for r in results if not isinstance(r, c.Recorded)]
    assert all(isinstance(r, RequestPending) for r in pending), pending
    assert {r.loan_id for r in pending} == {recorded[0].id}
    assert library.book(book).open_requests == {borrowers[0]: recorded[0].id}
