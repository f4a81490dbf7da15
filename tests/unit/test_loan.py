"""Loan aggregate: the whole state machine, given events → when command → then events or refusal.

::

    requested ─approve→ approved ─start_return→ returning ─confirm_return→ returned
        ├─decline→ declined
        └─cancel→  cancelled

Every (state, command) pair is exercised: the five arrows above record one event each, the
other 25 pairs raise ``InvalidLoanTransition``; the wrong party gets ``NotTheLender`` /
``NotTheBorrower`` in every state (the party is checked before the state). A refusal records
nothing and leaves the state unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.errors import DomainError, InvalidLoanTransition, NotTheBorrower, NotTheLender
from domain.loan import (
    APPROVED,
    CANCELLED,
    DECLINED,
    OPEN_STATUSES,
    REQUESTED,
    RETURNED,
    RETURNING,
    STATUSES,
    Loan,
)

Event = Any  # a recorded domain event; its attributes depend on its class


def new_events(aggregate: Any) -> list[Event]:
    """The events ``aggregate`` has recorded and not yet saved (and forgets them)."""
    return list(aggregate.collect_events())


BOOK = UUID("00000000-0000-4000-8000-0000000000b1")
LENDER = UUID("00000000-0000-4000-8000-00000000000a")
BORROWER = UUID("00000000-0000-4000-8000-00000000000c")
STRANGER = UUID("00000000-0000-4000-8000-00000000000d")

# Who performs each command, and what it records when allowed.
PARTY = {
    "approve": LENDER,
    "decline": LENDER,
    "cancel": BORROWER,
    "start_return": BORROWER,
    "confirm_return": LENDER,
}
WRONG_PARTY_ERROR: dict[str, type[DomainError]] = {
    "approve": NotTheLender,
    "decline": NotTheLender,
    "cancel": NotTheBorrower,
    "start_return": NotTheBorrower,
    "confirm_return": NotTheLender,
}
# The allowed arrows: (from state, command) → (event name, to state).
ARROWS = {
    (REQUESTED, "approve"): ("Approved", APPROVED),
    (REQUESTED, "decline"): ("Declined", DECLINED),
    (REQUESTED, "cancel"): ("Cancelled", CANCELLED),
    (APPROVED, "start_return"): ("ReturnStarted", RETURNING),
    (RETURNING, "confirm_return"): ("ReturnConfirmed", RETURNED),
}
# The shortest path of commands that reaches each state from ``requested``.
PATH = {
    REQUESTED: [],
    APPROVED: ["approve"],
    DECLINED: ["decline"],
    CANCELLED: ["cancel"],
    RETURNING: ["approve", "start_return"],
    RETURNED: ["approve", "start_return", "confirm_return"],
}


def history(state: str, **requested: Any) -> list[Event]:
    """The events of a loan that has reached ``state``."""
    loan = Loan(
        id=uuid4(),
        book_id=BOOK,
        borrower_id=BORROWER,
        lender_id=LENDER,
        note=requested.get("note", "may I?"),
        contact=requested.get("contact", {"wechat_id": "wx-c"}),
    )
    for command in PATH[state]:
        getattr(loan, command)(PARTY[command])
    events = new_events(loan)
    assert loan.status == state
    return events


def given(events: Sequence[Event]) -> Loan:
    aggregate = None
    for e in events:
        aggregate = e.mutate(aggregate)
    assert isinstance(aggregate, Loan)
    assert aggregate.collect_events() == []
    return aggregate


def names(events: Sequence[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def refused(loan: Loan, error: type[DomainError], command: str, actor: UUID) -> DomainError:
    before = (loan.status, loan.version)
    with pytest.raises(DomainError) as info:
        getattr(loan, command)(actor)
    assert type(info.value) is error, f"expected {error.__name__}, got {type(info.value)!r}"
    assert loan.collect_events() == []
    assert (loan.status, loan.version) == before
    return info.value


def test_the_test_tables_cover_every_state() -> None:
    assert set(PATH) == set(STATUSES)
    assert set(OPEN_STATUSES) == {REQUESTED, APPROVED, RETURNING}
    assert len(ARROWS) == 5


# -- Requested ----------------------------------------------------------------------------------


def test_request_records_requested() -> None:
    loan_id = uuid4()

    loan = Loan(
        id=loan_id,
        book_id=BOOK,
        borrower_id=BORROWER,
        lender_id=LENDER,
        note="may I?",
        contact={"wechat_id": "wx-c", "phone": "123"},
    )

    events = new_events(loan)
    assert names(events) == ["Requested"]
    (e,) = events
    assert e.originator_id == loan_id
    assert e.originator_version == 1
    assert e.book_id == BOOK
    assert e.borrower_id == BORROWER
    assert e.lender_id == LENDER
    assert e.note == "may I?"
    assert e.contact == {"wechat_id": "wx-c", "phone": "123"}
    assert loan.status == REQUESTED


def test_requested_replays_to_a_requested_loan() -> None:
    loan = given(history(REQUESTED, note="", contact=None))

    assert (loan.status, loan.book_id, loan.borrower_id, loan.lender_id) == (
        REQUESTED,
        BOOK,
        BORROWER,
        LENDER,
    )
    assert (loan.note, loan.contact, loan.version) == ("", None, 1)


# -- the allowed transitions --------------------------------------------------------------------


@pytest.mark.parametrize(("state", "command"), list(ARROWS), ids=[f"{s}-{c}" for s, c in ARROWS])
def test_allowed_transition_records_its_event(state: str, command: str) -> None:
    event_name, new_state = ARROWS[(state, command)]
    loan = given(history(state))
    version = loan.version

    getattr(loan, command)(PARTY[command])

    events = new_events(loan)
    assert names(events) == [event_name]
    assert events[0].originator_id == loan.id
    assert events[0].originator_version == version + 1
    assert loan.status == new_state


def test_decline_records_the_reason() -> None:
    loan = given(history(REQUESTED))

    loan.decline(LENDER, reason="I am reading it")

    (e,) = new_events(loan)
    assert type(e).__name__ == "Declined"
    assert e.reason == "I am reading it"


def test_decline_reason_defaults_to_empty() -> None:
    loan = given(history(REQUESTED))

    loan.decline(LENDER)

    (e,) = new_events(loan)
    assert e.reason == ""


@pytest.mark.parametrize("state", STATUSES)
def test_every_state_replays_from_its_events(state: str) -> None:
    events = history(state)

    loan = given(events)

    assert loan.status == state
    assert loan.version == len(events)
    assert names(events[1:]) == [ARROWS[(s, c)][0] for s, c in _walk(state)]


def _walk(state: str) -> list[tuple[str, str]]:
    steps, current = [], REQUESTED
    for command in PATH[state]:
        steps.append((current, command))
        current = ARROWS[(current, command)][1]
    return steps


# -- wrong state --------------------------------------------------------------------------------

WRONG_STATE = [(s, c) for s in STATUSES for c in PARTY if (s, c) not in ARROWS]


def test_there_are_twenty_five_wrong_state_pairs() -> None:
    assert len(WRONG_STATE) == len(STATUSES) * len(PARTY) - len(ARROWS) == 25


@pytest.mark.parametrize(
    ("state", "command"), WRONG_STATE, ids=[f"{s}-{c}" for s, c in WRONG_STATE]
)
def test_command_in_the_wrong_state_is_refused(state: str, command: str) -> None:
    loan = given(history(state))

    error = refused(loan, InvalidLoanTransition, command, PARTY[command])

    assert state in error.message


# Named examples from the contract, for readers of the test report.


def test_approve_a_declined_loan_is_refused() -> None:
    refused(given(history(DECLINED)), InvalidLoanTransition, "approve", LENDER)


def test_approve_twice_is_refused() -> None:
    refused(given(history(APPROVED)), InvalidLoanTransition, "approve", LENDER)


def test_start_return_on_a_requested_loan_is_refused() -> None:
    refused(given(history(REQUESTED)), InvalidLoanTransition, "start_return", BORROWER)


def test_confirm_return_on_an_approved_loan_is_refused() -> None:
    refused(given(history(APPROVED)), InvalidLoanTransition, "confirm_return", LENDER)


def test_cancel_after_approval_is_refused() -> None:
    refused(given(history(APPROVED)), InvalidLoanTransition, "cancel", BORROWER)


def test_decline_after_cancellation_is_refused() -> None:
    refused(given(history(CANCELLED)), InvalidLoanTransition, "decline", LENDER)


# -- wrong party --------------------------------------------------------------------------------

WRONG_PARTY = [
    (s, c, actor)
    for s in STATUSES
    for c in PARTY
    for actor in (LENDER, BORROWER, STRANGER)
    if actor != PARTY[c]
]


@pytest.mark.parametrize(
    ("state", "command", "actor"),
    WRONG_PARTY,
    ids=[
        f"{s}-{c}-by-{ {LENDER: 'lender', BORROWER: 'borrower', STRANGER: 'stranger'}[a] }"
        for s, c, a in WRONG_PARTY
    ],
)
def test_command_by_the_wrong_party_is_refused(state: str, command: str, actor: UUID) -> None:
    loan = given(history(state))

    refused(loan, WRONG_PARTY_ERROR[command], command, actor)


def test_the_borrower_cannot_approve_their_own_request() -> None:
    refused(given(history(REQUESTED)), NotTheLender, "approve", BORROWER)


def test_the_lender_cannot_cancel_the_borrowers_request() -> None:
    refused(given(history(REQUESTED)), NotTheBorrower, "cancel", LENDER)


def test_the_lender_cannot_start_the_return() -> None:
    refused(given(history(APPROVED)), NotTheBorrower, "start_return", LENDER)


def test_the_borrower_cannot_confirm_the_return() -> None:
    refused(given(history(RETURNING)), NotTheLender, "confirm_return", BORROWER)
