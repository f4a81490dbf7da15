"""The Library application, in memory (``eventsourcing.popo``): given commands → when command →
then the events it recorded (read back from the application's notification log) or a refusal.

A refusal must raise the exact ``DomainError`` subclass and record nothing: the recorder's
maximum notification id is unchanged. Also here: the msgspec constraints of the commands.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError

from domain import commands as c
from domain.book import AVAILABLE, ON_LOAN, WITHDRAWN, Book
from domain.errors import (
    BookNotFound,
    BookNotWithdrawn,
    BookOnLoan,
    BookWithdrawn,
    CannotBorrowOwnBook,
    ConcurrentUpdate,
    DomainError,
    InvalidLoanTransition,
    LoanNotFound,
    NotTheBorrower,
    NotTheLender,
    NotTheOwner,
    ReaderNotFound,
    RequestPending,
)
from domain.library import Library
from domain.loan import (
    APPROVED,
    BOOK_WITHDRAWN,
    CANCELLED,
    DECLINED,
    LENT_TO_ANOTHER,
    REQUESTED,
    RETURNED,
    RETURNING,
    Loan,
)
from domain.reader import reader_id_for

Event = Any  # a recorded domain event; its attributes depend on its class

ADA = reader_id_for("o-ada")  # owns the books
BOB = reader_id_for("o-bob")  # borrows
CYD = reader_id_for("o-cyd")  # borrows too
NOBODY = reader_id_for("o-never-registered")

ISBN = "9787020002207"


# -- harness ------------------------------------------------------------------------------------


@pytest.fixture
def app() -> Library:
    return Library(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def head(app: Library) -> int:
    """The log position of the last recorded event (0 when nothing is recorded)."""
    return app.recorder.max_notification_id() or 0


def events_after(app: Library, position: int) -> list[Event]:
    """The domain events recorded after ``position``, in log order."""
    notifications = app.recorder.select_notifications(start=position + 1, limit=1000)
    return [app.mapper.to_domain_event(n) for n in notifications]


def names(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def when(app: Library, command: c.Command) -> tuple[c.Recorded, list[Event]]:
    """Handle ``command``; return what it says it recorded and the events it did record."""
    before = head(app)
    recorded = app.handle(command)
    events = events_after(app, before)
    if events:
        assert recorded.position == head(app)
    else:
        assert recorded.position is None
    return recorded, events


def refused(app: Library, command: c.Command, error: type[DomainError]) -> DomainError:
    before = head(app)
    with pytest.raises(DomainError) as info:
        app.handle(command)
    assert type(info.value) is error, f"expected {error.__name__}, got {type(info.value)!r}"
    assert head(app) == before, "a refused command recorded something"
    return info.value


def register(app: Library, *readers: UUID) -> None:
    for reader_id in readers:
        app.handle(c.RegisterReader(reader_id=reader_id, nickname=str(reader_id)[:8]))


def publish(app: Library, owner: UUID = ADA, **details: Any) -> UUID:
    book_id = uuid4()
    app.handle(c.PublishBook(book_id=book_id, owner_id=owner, isbn=ISBN, title="红楼梦", **details))
    return book_id


def request(app: Library, book_id: UUID, borrower: UUID = BOB) -> UUID:
    loan_id = uuid4()
    app.handle(c.RequestLoan(loan_id=loan_id, book_id=book_id, borrower_id=borrower))
    return loan_id


@pytest.fixture
def shelf(app: Library) -> UUID:
    """Given: Ada, Bob and Cyd are registered and Ada has published a book."""
    register(app, ADA, BOB, CYD)
    return publish(app)


def loan_in(app: Library, book_id: UUID, state: str, borrower: UUID = BOB) -> UUID:
    """Given: a loan of ``book_id`` by ``borrower`` that has reached ``state``."""
    loan_id = request(app, book_id, borrower)
    steps: dict[str, list[c.Command]] = {
        REQUESTED: [],
        APPROVED: [c.ApproveLoan(loan_id=loan_id, actor_id=ADA)],
        DECLINED: [c.DeclineLoan(loan_id=loan_id, actor_id=ADA)],
        CANCELLED: [c.CancelLoan(loan_id=loan_id, actor_id=borrower)],
        RETURNING: [
            c.ApproveLoan(loan_id=loan_id, actor_id=ADA),
            c.StartReturn(loan_id=loan_id, actor_id=borrower),
        ],
        RETURNED: [
            c.ApproveLoan(loan_id=loan_id, actor_id=ADA),
            c.StartReturn(loan_id=loan_id, actor_id=borrower),
            c.ConfirmReturn(loan_id=loan_id, actor_id=ADA),
        ],
    }
    for command in steps[state]:
        app.handle(command)
    assert app.loan(loan_id).status == state
    return loan_id


# -- readers ------------------------------------------------------------------------------------


def test_register_records_registered(app: Library) -> None:
    recorded, events = when(
        app, c.RegisterReader(reader_id=ADA, nickname="Ada", avatar_url="https://img/a.png")
    )

    assert recorded == c.Recorded(id=ADA, position=1)
    assert names(events) == ["Registered"]
    assert events[0].originator_id == ADA
    assert (events[0].nickname, events[0].avatar_url) == ("Ada", "https://img/a.png")
    assert app.reader_exists(ADA)
    assert not app.reader_exists(BOB)


def test_registering_the_same_reader_twice_is_idempotent(app: Library) -> None:
    app.handle(c.RegisterReader(reader_id=ADA, nickname="Ada"))

    recorded, events = when(app, c.RegisterReader(reader_id=ADA, nickname="Someone else"))

    assert recorded == c.Recorded(id=ADA, position=None)
    assert events == []
    assert app.reader(ADA).nickname == "Ada"  # the first registration stands


def test_change_profile_records_profile_changed(app: Library) -> None:
    app.handle(c.RegisterReader(reader_id=ADA, nickname="Ada", avatar_url="a.png"))

    recorded, events = when(app, c.ChangeProfile(reader_id=ADA, nickname="Grace"))

    assert recorded.id == ADA
    assert names(events) == ["ProfileChanged"]
    assert (events[0].nickname, events[0].avatar_url) == ("Grace", "a.png")
    assert app.reader(ADA).nickname == "Grace"


def test_change_profile_to_the_same_values_records_nothing(app: Library) -> None:
    app.handle(c.RegisterReader(reader_id=ADA, nickname="Ada", avatar_url="a.png"))

    recorded, events = when(app, c.ChangeProfile(reader_id=ADA, nickname="Ada"))

    assert recorded == c.Recorded(id=ADA, position=None)
    assert events == []


def test_change_profile_of_an_unknown_reader_is_refused(app: Library) -> None:
    refused(app, c.ChangeProfile(reader_id=NOBODY, nickname="X"), ReaderNotFound)


# -- books --------------------------------------------------------------------------------------


def test_publish_records_published(app: Library) -> None:
    register(app, ADA)
    book_id = uuid4()

    recorded, events = when(
        app,
        c.PublishBook(
            book_id=book_id,
            owner_id=ADA,
            isbn=ISBN,
            title="红楼梦",
            author="曹雪芹",
            tags=["古典"],
            summary="…",
        ),
    )

    assert recorded.id == book_id
    assert names(events) == ["Published"]
    e = events[0]
    assert e.originator_id == book_id
    assert (e.owner_id, e.isbn, e.title, e.author, e.publisher, e.tags) == (
        ADA,
        ISBN,
        "红楼梦",
        "曹雪芹",
        "",
        ["古典"],
    )
    assert app.book(book_id).status == AVAILABLE


def test_publish_for_an_unregistered_owner_is_refused(app: Library) -> None:
    refused(
        app, c.PublishBook(book_id=uuid4(), owner_id=NOBODY, isbn=ISBN, title="T"), ReaderNotFound
    )


def test_publish_with_an_owner_id_that_is_not_a_reader_is_refused(
    app: Library, shelf: UUID
) -> None:
    refused(
        app, c.PublishBook(book_id=uuid4(), owner_id=shelf, isbn=ISBN, title="T"), ReaderNotFound
    )


def test_publish_under_an_existing_book_id_is_refused(app: Library, shelf: UUID) -> None:
    refused(
        app, c.PublishBook(book_id=shelf, owner_id=ADA, isbn=ISBN, title="Again"), ConcurrentUpdate
    )


def test_revise_records_only_the_changed_fields(app: Library, shelf: UUID) -> None:
    recorded, events = when(
        app, c.ReviseBook(book_id=shelf, actor_id=ADA, title="红楼梦", author="曹雪芹", tags=["a"])
    )

    assert recorded.id == shelf
    assert names(events) == ["DetailsRevised"]
    assert events[0].changes == {"author": "曹雪芹", "tags": ["a"]}
    assert (app.book(shelf).author, app.book(shelf).tags) == ("曹雪芹", ["a"])


@pytest.mark.parametrize(
    "changes", [{}, {"title": "红楼梦"}, {"tags": []}], ids=["nothing", "same-title", "same-tags"]
)
def test_revise_without_a_change_records_nothing(
    app: Library, shelf: UUID, changes: dict[str, Any]
) -> None:
    recorded, events = when(app, c.ReviseBook(book_id=shelf, actor_id=ADA, **changes))

    assert recorded == c.Recorded(id=shelf, position=None)
    assert events == []


def test_revise_by_someone_else_is_refused(app: Library, shelf: UUID) -> None:
    refused(app, c.ReviseBook(book_id=shelf, actor_id=BOB, title="Mine now"), NotTheOwner)


def test_withdraw_records_withdrawn(app: Library, shelf: UUID) -> None:
    _, events = when(app, c.WithdrawBook(book_id=shelf, actor_id=ADA))

    assert names(events) == ["Withdrawn"]
    assert app.book(shelf).status == WITHDRAWN


def test_withdraw_a_withdrawn_book_records_nothing(app: Library, shelf: UUID) -> None:
    app.handle(c.WithdrawBook(book_id=shelf, actor_id=ADA))

    recorded, events = when(app, c.WithdrawBook(book_id=shelf, actor_id=ADA))

    assert (recorded.position, events) == (None, [])


def test_withdraw_by_someone_else_is_refused(app: Library, shelf: UUID) -> None:
    refused(app, c.WithdrawBook(book_id=shelf, actor_id=BOB), NotTheOwner)


def test_withdraw_a_book_on_loan_is_refused(app: Library, shelf: UUID) -> None:
    loan_in(app, shelf, APPROVED)

    refused(app, c.WithdrawBook(book_id=shelf, actor_id=ADA), BookOnLoan)


@pytest.mark.parametrize("state", [DECLINED, CANCELLED, RETURNED])
def test_withdraw_a_book_with_no_loan_in_hand_is_allowed(
    app: Library, shelf: UUID, state: str
) -> None:
    loan_in(app, shelf, state)

    _, events = when(app, c.WithdrawBook(book_id=shelf, actor_id=ADA))

    assert names(events) == ["Withdrawn"]


def test_relist_records_relisted(app: Library, shelf: UUID) -> None:
    app.handle(c.WithdrawBook(book_id=shelf, actor_id=ADA))

    _, events = when(app, c.RelistBook(book_id=shelf, actor_id=ADA))

    assert names(events) == ["Relisted"]
    assert app.book(shelf).status == AVAILABLE


def test_relist_a_book_that_is_not_withdrawn_is_refused(app: Library, shelf: UUID) -> None:
    refused(app, c.RelistBook(book_id=shelf, actor_id=ADA), BookNotWithdrawn)


def test_relist_by_someone_else_is_refused(app: Library, shelf: UUID) -> None:
    app.handle(c.WithdrawBook(book_id=shelf, actor_id=ADA))

    refused(app, c.RelistBook(book_id=shelf, actor_id=BOB), NotTheOwner)


# -- loans: requesting --------------------------------------------------------------------------


def test_request_records_requested_with_the_owner_as_lender(app: Library, shelf: UUID) -> None:
    loan_id = uuid4()

    recorded, events = when(
        app,
        c.RequestLoan(
            loan_id=loan_id,
            book_id=shelf,
            borrower_id=BOB,
            note="may I?",
            contact=c.Contact(wechat_id="wx-bob", phone=""),
        ),
    )

    assert recorded.id == loan_id
    e = events[0]
    assert e.originator_id == loan_id
    assert (e.book_id, e.borrower_id, e.lender_id, e.note) == (shelf, BOB, ADA, "may I?")
    assert e.contact == {"wechat_id": "wx-bob"}  # empty dropped
    assert app.loan(loan_id).status == REQUESTED
    assert names(events) == ["Requested", "RequestReceived"]
    assert (events[1].originator_id, events[1].loan_id, events[1].borrower_id) == (
        shelf,
        loan_id,
        BOB,
    )
    book = app.book(shelf)
    assert book.status == AVAILABLE  # the book only notes the open request
    assert book.open_requests == {BOB: loan_id}


@pytest.mark.parametrize(
    "contact",
    [None, c.Contact(), c.Contact(wechat_id="", phone="")],
    ids=["none", "empty", "blank"],
)
def test_request_without_contact_details_stores_no_contact(
    app: Library, shelf: UUID, contact: c.Contact | None
) -> None:
    _, events = when(
        app, c.RequestLoan(loan_id=uuid4(), book_id=shelf, borrower_id=BOB, contact=contact)
    )

    assert events[0].contact is None


def test_request_while_the_book_is_on_loan_is_allowed(app: Library, shelf: UUID) -> None:
    loan_in(app, shelf, APPROVED, borrower=BOB)

    _, events = when(app, c.RequestLoan(loan_id=uuid4(), book_id=shelf, borrower_id=CYD))

    assert names(events) == ["Requested", "RequestReceived"]


def test_cannot_borrow_own_book(app: Library, shelf: UUID) -> None:
    refused(
        app, c.RequestLoan(loan_id=uuid4(), book_id=shelf, borrower_id=ADA), CannotBorrowOwnBook
    )


def test_cannot_borrow_a_withdrawn_book(app: Library, shelf: UUID) -> None:
    app.handle(c.WithdrawBook(book_id=shelf, actor_id=ADA))

    refused(app, c.RequestLoan(loan_id=uuid4(), book_id=shelf, borrower_id=BOB), BookWithdrawn)


def test_request_under_an_existing_loan_id_is_refused(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)

    refused(app, c.RequestLoan(loan_id=loan_id, book_id=shelf, borrower_id=CYD), ConcurrentUpdate)


# -- loans: one open request per borrower per book -----------------------------------------------


def test_a_second_request_of_the_same_book_is_refused_with_the_pending_loan(
    app: Library, shelf: UUID
) -> None:
    first = request(app, shelf, BOB)

    error = refused(
        app, c.RequestLoan(loan_id=uuid4(), book_id=shelf, borrower_id=BOB), RequestPending
    )

    assert isinstance(error, RequestPending)
    assert error.loan_id == first
    assert app.book(shelf).open_requests == {BOB: first}


def test_other_borrowers_may_each_have_a_request_of_the_same_book(
    app: Library, shelf: UUID
) -> None:
    bob, cyd = request(app, shelf, BOB), request(app, shelf, CYD)

    assert app.book(shelf).open_requests == {BOB: bob, CYD: cyd}


@pytest.mark.parametrize("state", [APPROVED, RETURNING])
def test_the_borrower_holding_the_book_cannot_request_it_again(
    app: Library, shelf: UUID, state: str
) -> None:
    loan_id = loan_in(app, shelf, state, borrower=BOB)

    error = refused(
        app, c.RequestLoan(loan_id=uuid4(), book_id=shelf, borrower_id=BOB), RequestPending
    )

    assert isinstance(error, RequestPending)
    assert error.loan_id == loan_id


@pytest.mark.parametrize(
    ("command", "actor", "event"),
    [(c.DeclineLoan, ADA, "Declined"), (c.CancelLoan, BOB, "Cancelled")],
    ids=["decline", "cancel"],
)
def test_a_closed_request_is_closed_on_the_book_and_may_be_made_again(
    app: Library, shelf: UUID, command: type[c.Command], actor: UUID, event: str
) -> None:
    loan_id = request(app, shelf, BOB)

    recorded, events = when(app, command(loan_id=loan_id, actor_id=actor))

    assert recorded.id == loan_id
    assert names(events) == [event, "RequestClosed"]
    assert (events[1].originator_id, events[1].loan_id) == (shelf, loan_id)
    assert app.book(shelf).open_requests == {}
    again = request(app, shelf, BOB)
    assert app.book(shelf).open_requests == {BOB: again}


def test_approving_declines_the_other_requests_in_the_same_save(app: Library, shelf: UUID) -> None:
    dan = reader_id_for("o-dan")
    register(app, dan)
    bob, cyd, dans = request(app, shelf, BOB), request(app, shelf, CYD), request(app, shelf, dan)
    app.handle(c.CancelLoan(loan_id=dans, actor_id=dan))  # closed before: left alone
    before = head(app)

    recorded, events = when(app, c.ApproveLoan(loan_id=cyd, actor_id=ADA))

    assert names(events) == ["Approved", "Lent", "Declined"]
    assert recorded.position == before + 3  # one save: the last event's position
    declined = events[2]
    assert (declined.originator_id, declined.reason) == (bob, LENT_TO_ANOTHER)
    assert app.loan(bob).status == DECLINED
    assert app.loan(dans).status == CANCELLED
    book = app.book(shelf)
    assert (book.status, book.borrower_id, book.open_requests) == (ON_LOAN, CYD, {})
    # the declined borrower may ask again (the book is lent: a request for later)
    again = request(app, shelf, BOB)
    assert app.book(shelf).open_requests == {BOB: again}


def test_withdrawing_declines_every_open_request(app: Library, shelf: UUID) -> None:
    bob, cyd = request(app, shelf, BOB), request(app, shelf, CYD)

    _, events = when(app, c.WithdrawBook(book_id=shelf, actor_id=ADA))

    assert names(events) == ["Withdrawn", "Declined", "Declined"]
    assert {(e.originator_id, e.reason) for e in events[1:]} == {
        (bob, BOOK_WITHDRAWN),
        (cyd, BOOK_WITHDRAWN),
    }
    assert app.book(shelf).open_requests == {}
    refused(app, c.DeclineLoan(loan_id=bob, actor_id=ADA), InvalidLoanTransition)


def test_two_racing_requests_of_one_borrower_record_one(app: Library, shelf: UUID) -> None:
    copies: list[Book] = [app.repository.get(shelf), app.repository.get(shelf)]
    loans = [
        Loan(id=uuid4(), book_id=shelf, borrower_id=BOB, lender_id=ADA, note="", contact=None)
        for _ in copies
    ]
    for book, loan in zip(copies, loans, strict=True):
        book.receive_request(loan.id, BOB)  # each stale copy sees no pending request

    app._commit(loans[0].id, loans[0], copies[0])
    before = head(app)
    with pytest.raises(ConcurrentUpdate):
        app._commit(loans[1].id, loans[1], copies[1])

    assert head(app) == before  # the loser recorded nothing, not even its loan
    assert app.book(shelf).open_requests == {BOB: loans[0].id}
    # run again on the new state (what ``handle`` does after a conflict): request_pending
    refused(app, c.RequestLoan(loan_id=loans[1].id, book_id=shelf, borrower_id=BOB), RequestPending)


def test_a_request_that_loses_a_race_to_another_borrower_is_run_again(
    app: Library, shelf: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = app.book
    cyd = uuid4()
    loads = 0

    def book_then_race(book_id: UUID) -> Book:
        """Load the book; the first time, Cyd's request is saved right after the load."""
        nonlocal loads
        book = load(book_id)
        loads += 1
        if loads == 1:
            monkeypatch.setattr(app, "book", load)
            app.handle(c.RequestLoan(loan_id=cyd, book_id=shelf, borrower_id=CYD))
            monkeypatch.setattr(app, "book", book_then_race)
        return book

    monkeypatch.setattr(app, "book", book_then_race)
    bob = request(app, shelf, BOB)  # its first save conflicts with Cyd's request

    assert loads == 2  # run twice
    assert app.book(shelf).open_requests == {CYD: cyd, BOB: bob}
    assert app.loan(bob).status == REQUESTED


# -- loans: approving (Loan and Book in one save) -----------------------------------------------


def test_approve_saves_the_loan_and_the_book_together(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)
    before = head(app)

    recorded, events = when(app, c.ApproveLoan(loan_id=loan_id, actor_id=ADA))

    assert recorded == c.Recorded(id=loan_id, position=before + 2)
    assert names(events) == ["Approved", "Lent"]
    approved, lent = events
    assert approved.originator_id == loan_id
    assert lent.originator_id == shelf
    assert (lent.loan_id, lent.borrower_id) == (loan_id, BOB)
    # One position covers both: every event of the save is at or before ``position``.
    positions = [n.id for n in app.recorder.select_notifications(start=before + 1, limit=10)]
    assert positions == [before + 1, before + 2]
    assert max(positions) == recorded.position
    book = app.book(shelf)
    assert (book.status, book.loan_id, book.borrower_id) == (ON_LOAN, loan_id, BOB)
    assert app.loan(loan_id).status == APPROVED


def test_approve_by_someone_else_is_refused(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)

    refused(app, c.ApproveLoan(loan_id=loan_id, actor_id=BOB), NotTheLender)
    refused(app, c.ApproveLoan(loan_id=loan_id, actor_id=CYD), NotTheLender)
    assert app.book(shelf).status == AVAILABLE


def test_approve_a_second_loan_while_the_book_is_lent_is_refused(app: Library, shelf: UUID) -> None:
    loan_in(app, shelf, APPROVED, borrower=BOB)
    second = request(app, shelf, CYD)

    refused(app, c.ApproveLoan(loan_id=second, actor_id=ADA), BookOnLoan)

    assert app.loan(second).status == REQUESTED
    assert app.book(shelf).borrower_id == BOB


@pytest.mark.parametrize("first_state", [APPROVED, RETURNING])
def test_approve_a_second_loan_is_refused_until_the_first_is_returned(
    app: Library, shelf: UUID, first_state: str
) -> None:
    first = loan_in(app, shelf, first_state, borrower=BOB)
    second = request(app, shelf, CYD)

    refused(app, c.ApproveLoan(loan_id=second, actor_id=ADA), BookOnLoan)

    if first_state == APPROVED:
        app.handle(c.StartReturn(loan_id=first, actor_id=BOB))
    app.handle(c.ConfirmReturn(loan_id=first, actor_id=ADA))
    _, events = when(app, c.ApproveLoan(loan_id=second, actor_id=ADA))
    assert names(events) == ["Approved", "Lent"]
    assert app.book(shelf).borrower_id == CYD


def test_approve_after_the_book_was_withdrawn_is_refused(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)
    app.handle(c.WithdrawBook(book_id=shelf, actor_id=ADA))  # declines the request

    refused(app, c.ApproveLoan(loan_id=loan_id, actor_id=ADA), InvalidLoanTransition)

    assert app.loan(loan_id).status == DECLINED


# -- loans: the other transitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "command", "actor", "event", "new_state"),
    [(APPROVED, c.StartReturn, BOB, "ReturnStarted", RETURNING)],
    ids=["start_return"],
)
def test_loan_only_transition_records_one_event_and_leaves_the_book(
    app: Library,
    shelf: UUID,
    state: str,
    command: type[c.Command],
    actor: UUID,
    event: str,
    new_state: str,
) -> None:
    loan_id = loan_in(app, shelf, state)
    book_before = app.book(shelf).version

    recorded, events = when(app, command(loan_id=loan_id, actor_id=actor))

    assert recorded.id == loan_id
    assert names(events) == [event]
    assert events[0].originator_id == loan_id
    assert app.loan(loan_id).status == new_state
    assert app.book(shelf).version == book_before


def test_decline_records_the_reason(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)

    _, events = when(app, c.DeclineLoan(loan_id=loan_id, actor_id=ADA, reason="reading it"))

    assert events[0].reason == "reading it"


def test_confirm_return_saves_the_loan_and_the_book_together(app: Library, shelf: UUID) -> None:
    loan_id = loan_in(app, shelf, RETURNING)
    before = head(app)

    recorded, events = when(app, c.ConfirmReturn(loan_id=loan_id, actor_id=ADA))

    assert recorded == c.Recorded(id=loan_id, position=before + 2)
    assert names(events) == ["ReturnConfirmed", "Returned"]
    assert events[1].originator_id == shelf
    assert events[1].loan_id == loan_id
    assert app.loan(loan_id).status == RETURNED
    book = app.book(shelf)
    assert (book.status, book.loan_id, book.borrower_id) == (AVAILABLE, None, None)


WRONG_STATE = [
    (DECLINED, c.ApproveLoan, ADA),
    (CANCELLED, c.ApproveLoan, ADA),
    (APPROVED, c.ApproveLoan, ADA),
    (RETURNED, c.ApproveLoan, ADA),
    (APPROVED, c.DeclineLoan, ADA),
    (DECLINED, c.DeclineLoan, ADA),
    (APPROVED, c.CancelLoan, BOB),
    (RETURNING, c.CancelLoan, BOB),
    (REQUESTED, c.StartReturn, BOB),
    (RETURNING, c.StartReturn, BOB),
    (CANCELLED, c.StartReturn, BOB),
    (REQUESTED, c.ConfirmReturn, ADA),
    (APPROVED, c.ConfirmReturn, ADA),
    (RETURNED, c.ConfirmReturn, ADA),
]


@pytest.mark.parametrize(
    ("state", "command", "actor"),
    WRONG_STATE,
    ids=[f"{cmd.__name__}-on-{s}" for s, cmd, _ in WRONG_STATE],
)
def test_loan_command_in_the_wrong_state_is_refused(
    app: Library, shelf: UUID, state: str, command: type[c.Command], actor: UUID
) -> None:
    loan_id = loan_in(app, shelf, state)
    book_before = app.book(shelf).status

    refused(app, command(loan_id=loan_id, actor_id=actor), InvalidLoanTransition)

    assert app.loan(loan_id).status == state
    assert app.book(shelf).status == book_before


WRONG_PARTY = [
    (REQUESTED, c.ApproveLoan, BOB, NotTheLender),
    (REQUESTED, c.DeclineLoan, BOB, NotTheLender),
    (REQUESTED, c.CancelLoan, ADA, NotTheBorrower),
    (REQUESTED, c.CancelLoan, CYD, NotTheBorrower),
    (APPROVED, c.StartReturn, ADA, NotTheBorrower),
    (APPROVED, c.StartReturn, CYD, NotTheBorrower),
    (RETURNING, c.ConfirmReturn, BOB, NotTheLender),
    (RETURNING, c.ConfirmReturn, CYD, NotTheLender),
]


@pytest.mark.parametrize(
    ("state", "command", "actor", "error"),
    WRONG_PARTY,
    ids=[f"{cmd.__name__}-{err.__name__}-{i}" for i, (_, cmd, _a, err) in enumerate(WRONG_PARTY)],
)
def test_loan_command_by_the_wrong_party_is_refused(
    app: Library,
    shelf: UUID,
    state: str,
    command: type[c.Command],
    actor: UUID,
    error: type[DomainError],
) -> None:
    loan_id = loan_in(app, shelf, state)

    refused(app, command(loan_id=loan_id, actor_id=actor), error)

    assert app.loan(loan_id).status == state


def test_a_whole_loan_lifecycle(app: Library, shelf: UUID) -> None:
    loan_id = uuid4()
    before = head(app)

    app.handle(c.RequestLoan(loan_id=loan_id, book_id=shelf, borrower_id=BOB))
    app.handle(c.ApproveLoan(loan_id=loan_id, actor_id=ADA))
    app.handle(c.StartReturn(loan_id=loan_id, actor_id=BOB))
    app.handle(c.ConfirmReturn(loan_id=loan_id, actor_id=ADA))

    assert names(events_after(app, before)) == [
        "Requested",
        "RequestReceived",
        "Approved",
        "Lent",
        "ReturnStarted",
        "ReturnConfirmed",
        "Returned",
    ]


# -- unknown ids --------------------------------------------------------------------------------

UNKNOWN = uuid4()

BOOK_COMMANDS = [
    c.ReviseBook(book_id=UNKNOWN, actor_id=ADA, title="T"),
    c.WithdrawBook(book_id=UNKNOWN, actor_id=ADA),
    c.RelistBook(book_id=UNKNOWN, actor_id=ADA),
    c.RequestLoan(loan_id=uuid4(), book_id=UNKNOWN, borrower_id=BOB),
]
LOAN_COMMANDS = [
    c.ApproveLoan(loan_id=UNKNOWN, actor_id=ADA),
    c.DeclineLoan(loan_id=UNKNOWN, actor_id=ADA),
    c.CancelLoan(loan_id=UNKNOWN, actor_id=BOB),
    c.StartReturn(loan_id=UNKNOWN, actor_id=BOB),
    c.ConfirmReturn(loan_id=UNKNOWN, actor_id=ADA),
]


@pytest.mark.parametrize("command", BOOK_COMMANDS, ids=lambda x: type(x).__name__)
def test_book_command_for_an_unknown_book_is_refused(
    app: Library, shelf: UUID, command: c.Command
) -> None:
    refused(app, command, BookNotFound)


@pytest.mark.parametrize("command", LOAN_COMMANDS, ids=lambda x: type(x).__name__)
def test_loan_command_for_an_unknown_loan_is_refused(
    app: Library, shelf: UUID, command: c.Command
) -> None:
    refused(app, command, LoanNotFound)


def test_an_id_of_another_kind_is_not_found(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)

    refused(app, c.ApproveLoan(loan_id=shelf, actor_id=ADA), LoanNotFound)  # a book id
    refused(app, c.WithdrawBook(book_id=loan_id, actor_id=ADA), BookNotFound)  # a loan id
    refused(app, c.WithdrawBook(book_id=ADA, actor_id=ADA), BookNotFound)  # a reader id
    refused(app, c.ChangeProfile(reader_id=shelf, nickname="X"), ReaderNotFound)  # a book id
    with pytest.raises(BookNotFound):
        app.book(UNKNOWN)
    with pytest.raises(LoanNotFound):
        app.loan(UNKNOWN)
    with pytest.raises(ReaderNotFound):
        app.reader(UNKNOWN)


def test_an_unknown_command_type_is_a_programming_error(app: Library) -> None:
    with pytest.raises(TypeError):
        app.handle(c.Command())


# -- positions ----------------------------------------------------------------------------------


def test_recorded_position_increases_with_every_recording_command(app: Library) -> None:
    book_id, loan_id = uuid4(), uuid4()
    commands: list[c.Command] = [
        c.RegisterReader(reader_id=ADA, nickname="Ada"),
        c.RegisterReader(reader_id=BOB, nickname="Bob"),
        c.PublishBook(book_id=book_id, owner_id=ADA, isbn=ISBN, title="T"),
        c.ReviseBook(book_id=book_id, actor_id=ADA, title="T2"),
        c.RequestLoan(loan_id=loan_id, book_id=book_id, borrower_id=BOB),
        c.ApproveLoan(loan_id=loan_id, actor_id=ADA),
        c.StartReturn(loan_id=loan_id, actor_id=BOB),
        c.ConfirmReturn(loan_id=loan_id, actor_id=ADA),
        c.WithdrawBook(book_id=book_id, actor_id=ADA),
        c.RelistBook(book_id=book_id, actor_id=ADA),
        c.ChangeProfile(reader_id=BOB, nickname="Robert"),
    ]

    positions = [app.handle(command).position for command in commands]

    assert positions == [1, 2, 3, 4, 6, 8, 9, 11, 12, 13, 14]
    assert all(isinstance(p, int) for p in positions)
    assert positions == sorted(set(positions))  # type: ignore[type-var]
    assert positions[-1] == head(app)


# -- optimistic concurrency ---------------------------------------------------------------------


def test_two_racing_approvals_of_the_same_book_only_one_wins(app: Library, shelf: UUID) -> None:
    first, second = request(app, shelf, BOB), request(app, shelf, CYD)
    # Both handlers load before either saves: each sees an available book.
    loan_1: Loan = app.repository.get(first)
    book_1: Book = app.repository.get(shelf)
    loan_2: Loan = app.repository.get(second)
    book_2: Book = app.repository.get(shelf)
    loan_1.approve(ADA)
    book_1.lend(loan_1.id, loan_1.borrower_id)
    loan_2.approve(ADA)
    book_2.lend(loan_2.id, loan_2.borrower_id)  # the stale copy still says "available"
    before = head(app)

    app.save(loan_1, book_1)
    assert head(app) == before + 2
    with pytest.raises(ConcurrentUpdate) as info:
        app._commit(loan_2.id, loan_2, book_2)

    assert type(info.value) is ConcurrentUpdate
    assert isinstance(info.value.__cause__, IntegrityError)
    assert head(app) == before + 2  # the loser recorded nothing, not even its Approved
    assert app.loan(second).status == REQUESTED
    assert app.loan(first).status == APPROVED
    assert (app.book(shelf).loan_id, app.book(shelf).borrower_id) == (first, BOB)


def test_two_racing_approvals_of_the_same_loan_only_one_wins(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)
    copies: list[tuple[Loan, Book]] = [
        (app.repository.get(loan_id), app.repository.get(shelf)) for _ in range(2)
    ]
    for loan, book in copies:
        loan.approve(ADA)
        book.lend(loan.id, loan.borrower_id)

    winner = app._commit(loan_id, *copies[0])
    before = head(app)
    with pytest.raises(ConcurrentUpdate):
        app._commit(loan_id, *copies[1])

    assert winner.position == before
    assert head(app) == before


def test_a_withdrawal_racing_an_approval_loses(app: Library, shelf: UUID) -> None:
    loan_id = request(app, shelf, BOB)
    stale_book: Book = app.repository.get(shelf)
    app.handle(c.ApproveLoan(loan_id=loan_id, actor_id=ADA))
    stale_book.withdraw(ADA)  # the stale copy is still available, so this passes the guard
    before = head(app)

    with pytest.raises(ConcurrentUpdate):
        app._commit(shelf, stale_book)

    assert head(app) == before
    assert app.book(shelf).status == ON_LOAN


# -- commands: msgspec constraints --------------------------------------------------------------


def publish_body(**overrides: Any) -> dict[str, Any]:
    return {
        "book_id": str(uuid4()),
        "owner_id": str(ADA),
        "isbn": ISBN,
        "title": "红楼梦",
        **overrides,
    }


def test_a_valid_publish_body_converts() -> None:
    command = msgspec.convert(publish_body(tags=["古典"]), c.PublishBook)

    assert isinstance(command.book_id, UUID)
    assert (command.isbn, command.title, command.tags, command.author) == (
        ISBN,
        "红楼梦",
        ["古典"],
        "",
    )


@pytest.mark.parametrize(
    "isbn",
    [
        "",
        "7020002207",
        "978702000220",
        "97870200022071",
        "9777020002207",
        "978702000220X",
        "978-7-02-000220-7",
        " 9787020002207",
    ],
)
def test_an_invalid_isbn_is_rejected(isbn: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="isbn"):
        msgspec.convert(publish_body(isbn=isbn), c.PublishBook)


@pytest.mark.parametrize("isbn", ["9787020002207", "9790000000001"])
def test_isbn_13_with_978_or_979_is_accepted(isbn: str) -> None:
    assert msgspec.convert(publish_body(isbn=isbn), c.PublishBook).isbn == isbn


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "x" * 301),
        ("title", ""),
        ("author", "x" * 301),
        ("publisher", "x" * 301),
        ("summary", "x" * 5001),
        ("cover_url", "x" * 1025),
        ("tags", ["t"] * 21),
        ("tags", ["x" * 33]),
        ("tags", [""]),
        ("book_id", "not-a-uuid"),
    ],
)
def test_an_out_of_bounds_field_is_rejected(field: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert(publish_body(**{field: value}), c.PublishBook)


def test_a_title_of_exactly_300_characters_is_accepted() -> None:
    assert len(msgspec.convert(publish_body(title="x" * 300), c.PublishBook).title) == 300


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="status"):
        msgspec.convert(publish_body(status="on_loan"), c.PublishBook)


def test_missing_required_fields_are_rejected() -> None:
    body = publish_body()
    del body["title"]
    with pytest.raises(msgspec.ValidationError, match="title"):
        msgspec.convert(body, c.PublishBook)


@pytest.mark.parametrize(
    ("command", "body", "field"),
    [
        (c.RegisterReader, {"reader_id": str(ADA), "nickname": ""}, "nickname"),
        (c.RegisterReader, {"reader_id": str(ADA), "nickname": "x" * 65}, "nickname"),
        (c.ChangeProfile, {"reader_id": str(ADA), "avatar_url": "x" * 1025}, "avatar_url"),
        (
            c.RequestLoan,
            {
                "loan_id": str(UNKNOWN),
                "book_id": str(UNKNOWN),
                "borrower_id": str(BOB),
                "note": "x" * 501,
            },
            "note",
        ),
        (
            c.RequestLoan,
            {
                "loan_id": str(UNKNOWN),
                "book_id": str(UNKNOWN),
                "borrower_id": str(BOB),
                "contact": {"qq": "1"},
            },
            "qq",
        ),
        (
            c.RequestLoan,
            {
                "loan_id": str(UNKNOWN),
                "book_id": str(UNKNOWN),
                "borrower_id": str(BOB),
                "contact": {"phone": "1" * 33},
            },
            "phone",
        ),
        (
            c.DeclineLoan,
            {"loan_id": str(UNKNOWN), "actor_id": str(ADA), "reason": "x" * 501},
            "reason",
        ),
        (c.ApproveLoan, {"loan_id": str(UNKNOWN), "actor_id": str(ADA), "extra": 1}, "extra"),
    ],
)
def test_other_command_constraints(
    command: type[c.Command], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert(body, command)


def test_commands_are_immutable() -> None:
    command = c.WithdrawBook(book_id=UNKNOWN, actor_id=ADA)
    with pytest.raises(AttributeError):
        command.actor_id = BOB  # type: ignore[misc]


def _all_command_types() -> Iterator[type[c.Command]]:
    for value in vars(c).values():
        if isinstance(value, type) and issubclass(value, c.Command) and value is not c.Command:
            yield value


@pytest.mark.parametrize("command", list(_all_command_types()), ids=lambda t: t.__name__)
def test_every_command_is_frozen_strict_and_handled(command: type[c.Command]) -> None:
    config = command.__struct_config__
    assert config.frozen
    assert config.forbid_unknown_fields
    assert command in Library.__dict__["_dispatch"].dispatcher.registry  # has a handler


# msgspec does not inherit kw_only=True from the Command base: each command declares it, so
# WithdrawBook(actor, book) cannot silently swap two UUIDs.
@pytest.mark.parametrize("command", list(_all_command_types()), ids=lambda t: t.__name__)
def test_every_command_is_keyword_only(command: type[c.Command]) -> None:
    kinds = {p.kind for p in inspect.signature(command).parameters.values()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("struct", [c.Contact, c.Recorded], ids=lambda t: t.__name__)
def test_structs_declaring_kw_only_themselves_are_keyword_only(struct: type) -> None:
    kinds = {p.kind for p in inspect.signature(struct).parameters.values()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("field", ["title", "author", "publisher", "summary", "cover_url"])
def test_text_with_a_nul_character_is_refused_before_it_becomes_an_event(field: str) -> None:
    # PostgreSQL text cannot store NUL: such an event would poison every projection.
    payload = {
        "book_id": str(uuid4()),
        "owner_id": str(uuid4()),
        "isbn": "9787536692930",
        "title": "ok",
        field: "bad\x00text",
    }
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(payload, c.PublishBook)
