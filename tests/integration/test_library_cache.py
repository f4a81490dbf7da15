"""The Library's aggregate cache (``api.bootstrap.db.library_cache_env``) across two
processes' worth of Applications on one database: a cached aggregate is brought forward
with what the other stored, a refused command leaves the cache as it was, and a save from
a stale copy is still refused by the store."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from api.bootstrap.db import eventsourcing_env, library_cache_env
from domain import commands as c
from domain.errors import BookWithdrawn, ConcurrentUpdate
from domain.library import Library
from tests.integration.activity import reader


@pytest.fixture
def nodes(database_url: str) -> Iterator[tuple[Library, Library]]:
    a = Library(env=eventsourcing_env(database_url) | library_cache_env())
    b = Library(env=eventsourcing_env(database_url) | library_cache_env())
    yield a, b
    a.close()
    b.close()


def test_a_cached_book_is_brought_forward_with_the_other_nodes_events(
    nodes: tuple[Library, Library],
) -> None:
    a, b = nodes
    assert a.repository.cache is not None
    owner = reader(a, "cache-owner")
    book_id = uuid4()
    a.handle(c.PublishBook(book_id=book_id, owner_id=owner, isbn="9787536692930", title="一"))
    assert a.book(book_id).title == "一"  # now cached on a
    b.handle(c.ReviseBook(book_id=book_id, actor_id=owner, title="二"))
    assert a.book(book_id).title == "二"  # a read b's event after its cached version
    b.handle(c.WithdrawBook(book_id=book_id, actor_id=owner))
    borrower = reader(a, "cache-borrower")
    with pytest.raises(BookWithdrawn):  # a decides on the current state
        a.handle(c.RequestLoan(loan_id=uuid4(), book_id=book_id, borrower_id=borrower))


def test_a_changed_copy_does_not_change_the_cache_and_a_stale_save_is_refused(
    nodes: tuple[Library, Library],
) -> None:
    a, b = nodes
    owner = reader(a, "cache-owner2")
    book_id = uuid4()
    a.handle(c.PublishBook(book_id=book_id, owner_id=owner, isbn="9787536692930", title="一"))
    copy = a.book(book_id)
    copy.revise(owner, {"title": "改"})  # changed, never saved
    assert a.book(book_id).title == "一"
    b.handle(c.ReviseBook(book_id=book_id, actor_id=owner, title="二"))
    with pytest.raises(ConcurrentUpdate):  # the store refuses the stale version
        a._commit(book_id, copy)
    assert a.book(book_id).title == "二"


def test_a_cached_loan_and_book_are_brought_forward_together_in_one_statement(
    nodes: tuple[Library, Library],
) -> None:
    """A transition loads its loan and book together (``Library._loaded_together``): one
    ``select_events_after`` for both, which brings each forward with what the other node
    stored, and the command then acts on the current state."""
    a, b = nodes
    owner, borrower = reader(a, "together-owner"), reader(a, "together-borrower")
    book_id, loan_id = uuid4(), uuid4()
    a.handle(c.PublishBook(book_id=book_id, owner_id=owner, isbn="9787536692930", title="一"))
    a.handle(c.RequestLoan(loan_id=loan_id, book_id=book_id, borrower_id=borrower))
    a.loan(loan_id), a.book(book_id)  # both cached on a
    b.handle(c.ReviseBook(book_id=book_id, actor_id=owner, title="二"))  # the book moves on b

    calls: list[object] = []
    select = a.recorder.select_events_after  # type: ignore[attr-defined]

    def counting(versions: object) -> object:
        calls.append(versions)
        return select(versions)

    a.recorder.select_events_after = counting  # type: ignore[attr-defined]
    loan, book = a._loan_and_book(loan_id)
    assert len(calls) == 1 and len(calls[0]) == 2  # type: ignore[arg-type]
    assert book.title == "二" and loan.book_id == book_id
    a.handle(c.ApproveLoan(loan_id=loan_id, actor_id=owner))  # on the current book: no conflict
    assert b.book(book_id).borrower_id == borrower
    assert len(calls) == 2
