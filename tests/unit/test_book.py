"""Book aggregate: given events → when command → then events or a refusal.

``history(...)`` drives a reference aggregate through commands and returns its events;
``given(...)`` replays them into a fresh object, so each command acts on state built from events
alone. A refusal must raise the exact ``DomainError`` subclass and record nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.book import AVAILABLE, ON_LOAN, REVISABLE_FIELDS, WITHDRAWN, Book
from domain.errors import (
    BookNotWithdrawn,
    BookOnLoan,
    BookWithdrawn,
    CannotBorrowOwnBook,
    DomainError,
    NotTheOwner,
)

Event = Any  # a recorded domain event; its attributes depend on its class


def new_events(aggregate: Any) -> list[Event]:
    """The events ``aggregate`` has recorded and not yet saved (and forgets them)."""
    return list(aggregate.collect_events())


OWNER = UUID("00000000-0000-4000-8000-00000000000a")
STRANGER = UUID("00000000-0000-4000-8000-00000000000b")
BORROWER = UUID("00000000-0000-4000-8000-00000000000c")
LOAN = UUID("00000000-0000-4000-8000-0000000000f1")
OTHER_LOAN = UUID("00000000-0000-4000-8000-0000000000f2")

DETAILS: dict[str, Any] = {
    "isbn": "9787020002207",
    "title": "红楼梦",
    "author": "曹雪芹",
    "publisher": "人民文学出版社",
    "tags": ["古典", "小说"],
    "cover_url": "https://img/hlm.jpg",
    "summary": "A great novel.",
}


def published(**overrides: Any) -> Book:
    return Book(id=uuid4(), owner_id=OWNER, **{**DETAILS, **overrides})


def history(*steps: Callable[[Book], None]) -> list[Event]:
    book = published()
    for step in steps:
        step(book)
    return new_events(book)


def given(events: Sequence[Event]) -> Book:
    aggregate = None
    for e in events:
        aggregate = e.mutate(aggregate)
    assert isinstance(aggregate, Book)
    assert aggregate.collect_events() == []
    return aggregate


def names(events: Sequence[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def withdrawn(book: Book) -> None:
    book.withdraw(OWNER)


def relisted(book: Book) -> None:
    book.relist(OWNER)


def lent(book: Book) -> None:
    book.lend(LOAN, BORROWER)


def taken_back(book: Book) -> None:
    book.take_back(LOAN)


def refused(book: Book, error: type[DomainError], act: Callable[[Book], object]) -> DomainError:
    """Assert ``act(book)`` raises exactly ``error`` and changes nothing."""
    before = (book.version, dict(vars(book)))
    with pytest.raises(DomainError) as info:
        act(book)
    assert type(info.value) is error, f"expected {error.__name__}, got {type(info.value)!r}"
    assert book.collect_events() == []
    assert (book.version, dict(vars(book))) == before
    return info.value


# -- Published ----------------------------------------------------------------------------------


def test_publish_records_published_with_all_details() -> None:
    book_id = uuid4()
    tags = ["古典", "小说"]

    book = Book(id=book_id, owner_id=OWNER, **{**DETAILS, "tags": tags})

    events = new_events(book)
    assert names(events) == ["Published"]
    (e,) = events
    assert e.originator_id == book_id
    assert e.originator_version == 1
    assert e.owner_id == OWNER
    for key, value in DETAILS.items():
        assert getattr(e, key) == value, key
    assert book.status == AVAILABLE
    assert book.loan_id is None
    assert book.borrower_id is None
    tags.append("mutated")
    assert book.tags == ["古典", "小说"]  # the aggregate keeps its own copy


def test_published_replays_to_an_available_book() -> None:
    book = given(history())

    assert book.status == AVAILABLE
    assert book.owner_id == OWNER
    assert (book.isbn, book.title, book.tags) == (
        DETAILS["isbn"],
        DETAILS["title"],
        DETAILS["tags"],
    )
    assert book.version == 1


# -- DetailsRevised -----------------------------------------------------------------------------


def test_revise_by_owner_records_only_the_fields_that_change() -> None:
    book = given(history())

    book.revise(
        OWNER,
        {"title": "红楼梦（上）", "author": DETAILS["author"], "tags": ["经典"], "summary": "New"},
    )

    events = new_events(book)
    assert names(events) == ["DetailsRevised"]
    assert events[0].changes == {
        "title": "红楼梦（上）",
        "tags": ["经典"],
        "summary": "New",
    }
    assert (book.title, book.tags, book.summary, book.author) == (
        "红楼梦（上）",
        ["经典"],
        "New",
        DETAILS["author"],
    )


@pytest.mark.parametrize("field", REVISABLE_FIELDS)
def test_every_revisable_field_can_be_revised(field: str) -> None:
    book = given(history())
    value: Any = ["新"] if field == "tags" else f"new {field}"

    book.revise(OWNER, {field: value})

    events = new_events(book)
    assert names(events) == ["DetailsRevised"]
    assert events[0].changes == {field: value}
    assert getattr(book, field) == value


def test_revise_ignores_fields_that_are_not_revisable() -> None:
    book = given(history())

    book.revise(
        OWNER,
        {"isbn": "9780000000000", "owner_id": STRANGER, "status": ON_LOAN, "title": "T2"},
    )

    events = new_events(book)
    assert names(events) == ["DetailsRevised"]
    assert events[0].changes == {"title": "T2"}
    assert (book.isbn, book.owner_id, book.status) == (DETAILS["isbn"], OWNER, AVAILABLE)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"title": DETAILS["title"]},
        {"tags": list(DETAILS["tags"]), "summary": DETAILS["summary"]},
        {"isbn": "9780000000000"},  # only non-revisable fields
    ],
)
def test_revise_without_an_effective_change_records_nothing(changes: dict[str, Any]) -> None:
    book = given(history())

    book.revise(OWNER, changes)

    assert book.collect_events() == []
    assert book.version == 1


def test_revise_by_someone_else_is_refused() -> None:
    book = given(history())

    refused(book, NotTheOwner, lambda b: b.revise(STRANGER, {"title": "Hijacked"}))


def test_revisions_replay() -> None:
    book = given(history(lambda b: b.revise(OWNER, {"title": "T2", "tags": ["a"]})))

    assert (book.title, book.tags, book.version) == ("T2", ["a"], 2)


# -- Withdrawn / Relisted -----------------------------------------------------------------------


def test_withdraw_an_available_book_records_withdrawn() -> None:
    book = given(history())

    book.withdraw(OWNER)

    assert names(new_events(book)) == ["Withdrawn"]
    assert book.status == WITHDRAWN


def test_withdraw_a_relisted_book_records_withdrawn() -> None:
    book = given(history(withdrawn, relisted))

    book.withdraw(OWNER)

    assert names(new_events(book)) == ["Withdrawn"]
    assert book.status == WITHDRAWN


def test_withdraw_a_withdrawn_book_records_nothing() -> None:
    book = given(history(withdrawn))

    book.withdraw(OWNER)

    assert book.collect_events() == []
    assert book.status == WITHDRAWN
    assert book.version == 2


@pytest.mark.parametrize(
    "steps", [(), (withdrawn,), (lent,)], ids=["available", "withdrawn", "on_loan"]
)
def test_withdraw_by_someone_else_is_refused(steps: tuple[Callable[[Book], None], ...]) -> None:
    book = given(history(*steps))

    refused(book, NotTheOwner, lambda b: b.withdraw(STRANGER))


def test_withdraw_a_book_on_loan_is_refused() -> None:
    book = given(history(lent))

    refused(book, BookOnLoan, lambda b: b.withdraw(OWNER))


def test_relist_a_withdrawn_book_records_relisted() -> None:
    book = given(history(withdrawn))

    book.relist(OWNER)

    assert names(new_events(book)) == ["Relisted"]
    assert book.status == AVAILABLE


@pytest.mark.parametrize(
    "steps",
    [(), (lent,), (withdrawn, relisted), (lent, taken_back)],
    ids=["available", "on_loan", "relisted", "returned"],
)
def test_relist_a_book_that_is_not_withdrawn_is_refused(
    steps: tuple[Callable[[Book], None], ...],
) -> None:
    book = given(history(*steps))

    refused(book, BookNotWithdrawn, lambda b: b.relist(OWNER))


@pytest.mark.parametrize("steps", [(), (withdrawn,)], ids=["available", "withdrawn"])
def test_relist_by_someone_else_is_refused(steps: tuple[Callable[[Book], None], ...]) -> None:
    book = given(history(*steps))

    refused(book, NotTheOwner, lambda b: b.relist(STRANGER))


# -- Lent / Returned ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps",
    [(), (withdrawn, relisted), (lent, taken_back)],
    ids=["available", "relisted", "returned"],
)
def test_lend_an_available_book_records_lent(steps: tuple[Callable[[Book], None], ...]) -> None:
    book = given(history(*steps))
    loan_id = uuid4()

    book.lend(loan_id, BORROWER)

    events = new_events(book)
    assert names(events) == ["Lent"]
    assert events[0].loan_id == loan_id
    assert events[0].borrower_id == BORROWER
    assert (book.status, book.loan_id, book.borrower_id) == (ON_LOAN, loan_id, BORROWER)


def test_lend_a_book_already_on_loan_is_refused() -> None:
    book = given(history(lent))

    refused(book, BookOnLoan, lambda b: b.lend(OTHER_LOAN, STRANGER))


def test_lend_a_withdrawn_book_is_refused() -> None:
    book = given(history(withdrawn))

    refused(book, BookWithdrawn, lambda b: b.lend(LOAN, BORROWER))


def test_take_back_under_the_current_loan_records_returned() -> None:
    book = given(history(lent))

    book.take_back(LOAN)

    events = new_events(book)
    assert names(events) == ["Returned"]
    assert events[0].loan_id == LOAN
    assert (book.status, book.loan_id, book.borrower_id) == (AVAILABLE, None, None)


def test_take_back_under_another_loan_is_refused() -> None:
    book = given(history(lent))

    refused(book, BookOnLoan, lambda b: b.take_back(OTHER_LOAN))


@pytest.mark.parametrize(
    "steps", [(), (withdrawn,), (lent, taken_back)], ids=["available", "withdrawn", "returned"]
)
def test_take_back_a_book_that_is_not_on_loan_is_refused(
    steps: tuple[Callable[[Book], None], ...],
) -> None:
    book = given(history(*steps))

    refused(book, BookOnLoan, lambda b: b.take_back(LOAN))


def test_lend_and_take_back_replay() -> None:
    lent_book = given(history(lent))
    assert (lent_book.status, lent_book.loan_id, lent_book.borrower_id) == (ON_LOAN, LOAN, BORROWER)

    returned_book = given(history(lent, taken_back))
    assert (returned_book.status, returned_book.loan_id, returned_book.version) == (
        AVAILABLE,
        None,
        3,
    )


# -- who may ask to borrow ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps", [(), (lent,), (withdrawn, relisted)], ids=["available", "on_loan", "relisted"]
)
def test_another_reader_may_request_a_listed_book(
    steps: tuple[Callable[[Book], None], ...],
) -> None:
    book = given(history(*steps))

    book.check_can_be_requested_by(STRANGER)  # requests may queue while the book is lent

    assert book.collect_events() == []


@pytest.mark.parametrize(
    "steps", [(), (withdrawn,), (lent,)], ids=["available", "withdrawn", "on_loan"]
)
def test_the_owner_cannot_request_their_own_book(
    steps: tuple[Callable[[Book], None], ...],
) -> None:
    book = given(history(*steps))

    refused(book, CannotBorrowOwnBook, lambda b: b.check_can_be_requested_by(OWNER))


def test_a_withdrawn_book_cannot_be_requested() -> None:
    book = given(history(withdrawn))

    refused(book, BookWithdrawn, lambda b: b.check_can_be_requested_by(STRANGER))
