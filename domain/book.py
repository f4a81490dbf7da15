"""The ``Book`` aggregate: one physical copy on one reader's shelf.

Status: ``available`` → (``Lent``) ``on_loan`` → (``Returned``) ``available``;
``available`` ⇄ ``withdrawn`` (``Withdrawn`` / ``Relisted``). A book on loan cannot be
withdrawn, and a book is lent to at most one borrower at a time.

Open requests: the book keeps its open loan requests (``requests``: borrower id → loan id,
``RequestReceived`` / ``RequestClosed``), so a borrower has at most one open request per
book (``RequestPending`` otherwise), and lending or withdrawing the book knows which requests
to decline. Every request, cancellation and decline therefore also saves the book: two
simultaneous requests of one borrower conflict on the book's version and only one is
recorded. Requests recorded before the book kept them (no ``RequestReceived``) are not in
``requests``: they are not declined for the others, and not counted as pending.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import (
    BookNotWithdrawn,
    BookOnLoan,
    BookWithdrawn,
    CannotBorrowOwnBook,
    NotTheOwner,
    RequestPending,
)
from domain.isbn import language_of_isbn

AVAILABLE = "available"
ON_LOAN = "on_loan"
WITHDRAWN = "withdrawn"

REVISABLE_FIELDS = (
    "title",
    "author",
    "publisher",
    "tags",
    "cover_url",
    "summary",
    "cover_media_id",
)


class Book(Aggregate):
    """Events: ``Published``, ``DetailsRevised``, ``Withdrawn``, ``Relisted``, ``Lent``,
    ``Returned``, ``RequestReceived``, ``RequestClosed`` (docs/EVENTS.md)."""

    class Published(Aggregate.Created):
        """A reader put a copy on their shelf.

        Version 2 added ``language`` (ISO 639-1 code, ``""`` when unknown). Version 1
        events (stored without it) are upcast on read: ``language_of_isbn(isbn)``. Version 3
        added ``cover_media_id`` (the uploaded picture the cover shows, ``None`` for an
        outside URL or none); older events are upcast to ``None``. The stored topic stays
        ``domain.book:Book.Published``."""

        class_version = 3

        owner_id: UUID
        isbn: str
        title: str
        author: str
        publisher: str
        tags: list[str]
        cover_url: str
        summary: str
        language: str
        cover_media_id: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["language"] = language_of_isbn(str(state.get("isbn", "")))

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["cover_media_id"] = None

    @event(Published)
    def __init__(  # noqa: PLR0913
        self,
        id: UUID,  # noqa: A002
        owner_id: UUID,
        isbn: str,
        title: str,
        author: str,
        publisher: str,
        tags: list[str],
        cover_url: str,
        summary: str,
        language: str = "",
        cover_media_id: str | None = None,
    ) -> None:
        self.owner_id = owner_id
        self.isbn = isbn
        self.title = title
        self.author = author
        self.publisher = publisher
        self.tags = list(tags)
        self.cover_url = cover_url
        self.summary = summary
        self.language = language
        self.cover_media_id = cover_media_id
        self.status = AVAILABLE
        self.loan_id: UUID | None = None
        self.borrower_id: UUID | None = None
        self.requests: dict[UUID, UUID] = {}

    @property
    def open_requests(self) -> dict[UUID, UUID]:
        """The open loan requests: ``{borrower id: loan id}`` (a copy)."""
        return dict(self.__dict__.get("requests") or {})

    # -- guards -----------------------------------------------------------------------------

    def _require_owner(self, actor_id: UUID) -> None:
        if actor_id != self.owner_id:
            raise NotTheOwner

    def check_can_be_requested_by(self, borrower_id: UUID) -> None:
        """Raise unless ``borrower_id`` may ask to borrow this book.

        Raises ``CannotBorrowOwnBook`` or ``BookWithdrawn``.
        """
        if borrower_id == self.owner_id:
            raise CannotBorrowOwnBook
        if self.status == WITHDRAWN:
            raise BookWithdrawn
        pending = self.open_requests.get(borrower_id)
        if pending is not None:
            raise RequestPending(pending, "You already asked to borrow this book.")
        if self.status == ON_LOAN and self.borrower_id == borrower_id and self.loan_id:
            raise RequestPending(self.loan_id, "You are borrowing this book already.")

    # -- commands ---------------------------------------------------------------------------

    def revise(self, actor_id: UUID, changes: dict[str, Any]) -> None:
        """Revise details (only the fields of ``REVISABLE_FIELDS``); raises ``NotTheOwner``.
        Fields whose value does not change are ignored; if nothing changes, nothing is
        recorded. ``cover_media_id`` ``""`` means no uploaded cover (stored as ``None``)."""
        self._require_owner(actor_id)
        if "cover_media_id" in changes:
            changes = {**changes, "cover_media_id": changes["cover_media_id"] or None}
        effective = {
            k: v
            for k, v in changes.items()
            if k in REVISABLE_FIELDS and getattr(self, k, None) != v
        }
        if effective:
            self._details_revised(changes=effective)

    @event("DetailsRevised")
    def _details_revised(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(self, key, list(value) if key == "tags" else value)

    def receive_request(self, loan_id: UUID, borrower_id: UUID) -> None:
        """Record ``borrower_id``'s new request ``loan_id``. Raises ``CannotBorrowOwnBook``,
        ``BookWithdrawn``, ``RequestPending`` (with the borrower's open loan's id)."""
        self.check_can_be_requested_by(borrower_id)
        self._request_received(loan_id=loan_id, borrower_id=borrower_id)

    @event("RequestReceived")
    def _request_received(self, loan_id: UUID, borrower_id: UUID) -> None:
        self.requests = {**self.open_requests, borrower_id: loan_id}

    def close_request(self, loan_id: UUID) -> None:
        """The request ``loan_id`` was declined or cancelled: it is no longer open. Records
        nothing when it is not an open request of this book."""
        if loan_id in self.open_requests.values():
            self._request_closed(loan_id=loan_id)

    @event("RequestClosed")
    def _request_closed(self, loan_id: UUID) -> None:
        self.requests = {b: lid for b, lid in self.open_requests.items() if lid != loan_id}

    def withdraw(self, actor_id: UUID) -> None:
        """Take the book off the shelf. Raises ``NotTheOwner``, ``BookOnLoan``; withdrawing a
        withdrawn book records nothing. Its open requests are closed with it (the Library
        declines them: ``open_requests`` before the call)."""
        self._require_owner(actor_id)
        if self.status == ON_LOAN:
            raise BookOnLoan
        if self.status != WITHDRAWN:
            self._withdrawn()

    @event("Withdrawn")
    def _withdrawn(self) -> None:
        self.status = WITHDRAWN
        self.requests = {}

    def relist(self, actor_id: UUID) -> None:
        """Put a withdrawn book back. Raises ``NotTheOwner``, ``BookNotWithdrawn``."""
        self._require_owner(actor_id)
        if self.status != WITHDRAWN:
            raise BookNotWithdrawn
        self._relisted()

    @event("Relisted")
    def _relisted(self) -> None:
        self.status = AVAILABLE

    def lend(self, loan_id: UUID, borrower_id: UUID) -> None:
        """Hand the book to the borrower of an approved loan. Every open request is closed
        with it (the Library declines the others: ``open_requests`` before the call).
        Raises ``BookWithdrawn`` or ``BookOnLoan`` (already lent to someone)."""
        if self.status == WITHDRAWN:
            raise BookWithdrawn
        if self.status == ON_LOAN:
            raise BookOnLoan
        self._lent(loan_id=loan_id, borrower_id=borrower_id)

    @event("Lent")
    def _lent(self, loan_id: UUID, borrower_id: UUID) -> None:
        self.status = ON_LOAN
        self.loan_id = loan_id
        self.borrower_id = borrower_id
        self.requests = {}

    def take_back(self, loan_id: UUID) -> None:
        """The lender has the book again. Raises ``BookOnLoan`` if it is lent under another
        loan (which cannot happen through the Library application)."""
        if self.status != ON_LOAN or self.loan_id != loan_id:
            raise BookOnLoan("The book is not on loan under this loan.")
        self._returned(loan_id=loan_id)

    @event("Returned")
    def _returned(self, loan_id: UUID) -> None:
        self.status = AVAILABLE
        self.loan_id = None
        self.borrower_id = None
