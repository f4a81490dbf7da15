"""The ``Loan`` aggregate: one borrow request and its life.

States::

    requested ─approve→ approved ─start_return→ returning ─confirm_return→ returned
        ├─decline→ declined
        └─cancel→  cancelled

Only the lender approves, declines and confirms the return; only the borrower cancels and
starts the return. The Library itself declines the other open requests of a book when it is
lent (reason ``lent_to_another``) or withdrawn (reason ``book_withdrawn``).
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidLoanTransition, NotTheBorrower, NotTheLender

REQUESTED = "requested"
APPROVED = "approved"
DECLINED = "declined"
CANCELLED = "cancelled"
RETURNING = "returning"
RETURNED = "returned"

LENT_TO_ANOTHER = "lent_to_another"
"""The ``reason`` of a request declined because the lender lent the book to someone else."""
BOOK_WITHDRAWN = "book_withdrawn"
"""The ``reason`` of a request declined because the lender withdrew the book."""

STATUSES = (REQUESTED, APPROVED, DECLINED, CANCELLED, RETURNING, RETURNED)
OPEN_STATUSES = (REQUESTED, APPROVED, RETURNING)
ENDED_STATUSES = (DECLINED, CANCELLED, RETURNED)
"""Once a loan is in one of these, its lender no longer sees the borrower's contact."""


class Loan(Aggregate):
    """Events: ``Requested``, ``Approved``, ``Declined``, ``Cancelled``, ``ReturnStarted``,
    ``ReturnConfirmed``. ``contact`` is ``{"wechat_id"?, "phone"?}``: personal data, shown
    only to the lender."""

    @event("Requested")
    def __init__(  # noqa: PLR0913
        self,
        id: UUID,  # noqa: A002
        book_id: UUID,
        borrower_id: UUID,
        lender_id: UUID,
        note: str,
        contact: dict[str, str] | None,
    ) -> None:
        self.book_id = book_id
        self.borrower_id = borrower_id
        self.lender_id = lender_id
        self.note = note
        self.contact = contact
        self.status = REQUESTED

    def _require(self, *allowed: str) -> None:
        if self.status not in allowed:
            raise InvalidLoanTransition(
                f"The loan is {self.status}; this needs it to be {' or '.join(allowed)}."
            )

    def _require_lender(self, actor_id: UUID) -> None:
        if actor_id != self.lender_id:
            raise NotTheLender

    def _require_borrower(self, actor_id: UUID) -> None:
        if actor_id != self.borrower_id:
            raise NotTheBorrower

    def approve(self, actor_id: UUID) -> None:
        """Raises ``NotTheLender``, ``InvalidLoanTransition``."""
        self._require_lender(actor_id)
        self._require(REQUESTED)
        self._approved()

    @event("Approved")
    def _approved(self) -> None:
        self.status = APPROVED

    def decline(self, actor_id: UUID, reason: str = "") -> None:
        """Raises ``NotTheLender``, ``InvalidLoanTransition``."""
        self._require_lender(actor_id)
        self._require(REQUESTED)
        self._declined(reason=reason)

    def decline_as_closed(self, reason: str) -> bool:
        """The Library declines an open request because of its book (``LENT_TO_ANOTHER``,
        ``BOOK_WITHDRAWN``); no actor check. Returns False (records nothing) when the loan
        is no longer a request."""
        if self.status != REQUESTED:
            return False
        self._declined(reason=reason)
        return True

    @event("Declined")
    def _declined(self, reason: str) -> None:
        self.status = DECLINED

    def cancel(self, actor_id: UUID) -> None:
        """Raises ``NotTheBorrower``, ``InvalidLoanTransition``."""
        self._require_borrower(actor_id)
        self._require(REQUESTED)
        self._cancelled()

    @event("Cancelled")
    def _cancelled(self) -> None:
        self.status = CANCELLED

    def start_return(self, actor_id: UUID) -> None:
        """The borrower says "I gave it back". Raises ``NotTheBorrower``,
        ``InvalidLoanTransition``."""
        self._require_borrower(actor_id)
        self._require(APPROVED)
        self._return_started()

    @event("ReturnStarted")
    def _return_started(self) -> None:
        self.status = RETURNING

    def confirm_return(self, actor_id: UUID) -> None:
        """The lender says "I have it". Raises ``NotTheLender``, ``InvalidLoanTransition``."""
        self._require_lender(actor_id)
        self._require(RETURNING)
        self._return_confirmed()

    @event("ReturnConfirmed")
    def _return_confirmed(self) -> None:
        self.status = RETURNED
