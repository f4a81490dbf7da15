"""The one tree of domain errors.

::

    DomainError
    ├── NotFound            (the aggregate does not exist)
    │   ├── ReaderNotFound
    │   ├── BookNotFound
    │   └── LoanNotFound
    ├── Forbidden           (the actor is not the party allowed to do this)
    │   ├── NotTheOwner
    │   ├── NotTheLender
    │   └── NotTheBorrower
    ├── Conflict            (the aggregate's state does not allow it now)
    │   ├── InvalidLoanTransition
    │   ├── BookOnLoan
    │   ├── BookWithdrawn
    │   ├── BookNotWithdrawn
    │   ├── RequestPending    (the borrower already has an open request for this book)
    │   └── ConcurrentUpdate  (optimistic concurrency: someone else changed it first)
    └── Invalid             (the command itself is unacceptable)
        ├── CannotBorrowOwnBook
        └── InvalidDetails

Every class has a stable ``code`` (snake_case) that the API exposes as the problem ``code``;
the HTTP status is chosen from the branch (``api/http/errors.py``), never here.
"""

from __future__ import annotations

from uuid import UUID


class DomainError(Exception):
    """Base of every business-rule refusal. ``code`` is stable and part of the API contract."""

    code = "domain_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(DomainError):
    """The requested object does not exist."""

    code = "not_found"


class ReaderNotFound(NotFound):
    """No such reader."""

    code = "reader_not_found"


class BookNotFound(NotFound):
    """No such book."""

    code = "book_not_found"


class LoanNotFound(NotFound):
    """No such loan."""

    code = "loan_not_found"


class Forbidden(DomainError):
    """The actor is not allowed to do this."""

    code = "forbidden"


class NotTheOwner(Forbidden):
    """Only the book's owner may do this."""

    code = "not_the_owner"


class ReaderForgotten(Forbidden):
    """This account was erased at its reader's request; it cannot be used again."""

    code = "reader_forgotten"


class NotTheLender(Forbidden):
    """Only the lender of this loan may do this."""

    code = "not_the_lender"


class NotTheBorrower(Forbidden):
    """Only the borrower of this loan may do this."""

    code = "not_the_borrower"


class Conflict(DomainError):
    """The current state does not allow this."""

    code = "conflict"


class InvalidLoanTransition(Conflict):
    """The loan is not in a state that allows this transition."""

    code = "invalid_loan_transition"


class BookOnLoan(Conflict):
    """The book is on loan."""

    code = "book_on_loan"


class BookWithdrawn(Conflict):
    """The book has been withdrawn by its owner."""

    code = "book_withdrawn"


class BookNotWithdrawn(Conflict):
    """The book is not withdrawn."""

    code = "book_not_withdrawn"


class RequestPending(Conflict):
    """You already have an open request (or loan) for this book."""

    code = "request_pending"

    def __init__(self, loan_id: UUID, message: str | None = None) -> None:
        super().__init__(message)
        self.loan_id = loan_id
        """The id (a ``UUID``) of the borrower's open loan of this book."""


class ConcurrentUpdate(Conflict):
    """Someone else changed this first; reload and try again."""

    code = "concurrent_update"


class Invalid(DomainError):
    """The command is not acceptable."""

    code = "invalid"


class CannotBorrowOwnBook(Invalid):
    """A reader cannot borrow their own book."""

    code = "cannot_borrow_own_book"


class InvalidDetails(Invalid):
    """The book details are not acceptable."""

    code = "invalid_details"
