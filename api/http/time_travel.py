"""Time travel: one book or loan as it was, ``GET /v1/books/{id}?as_of=…`` and
``GET /v1/loans/{id}?as_of=…``.

``as_of`` is either a positive integer, the aggregate's version (1 = its creation event; a
version above the current one gives the current state), or an ISO 8601 time **with** a
timezone (``2025-05-04T08:30:00Z``, ``…+08:00``): the state after the last event whose
timestamp is at or before it (the rule of ``liudong events show --at``). A time without a
timezone is refused (422 ``invalid_as_of``): the server cannot guess the client's zone.

This is an explicit historical read, so it is answered on the command side: the aggregate's
events are read from the event store and folded up to that version with
``repository.get(id, version=v)`` (upcasters included). Readers' names (owner, parties) come
from the shelf read model, as for the current endpoints: a reader's *current* nickname.

The response is the current endpoint's shape plus ``"as_of": {"version", "at"}``: the
version shown and the time its event was recorded. Visibility is the current endpoint's:
a book's ``borrower``/``loan_id`` to its owner only, a loan to its two parties only and its
``contact`` to the lender only, and only while the loan is open *now* (declined, cancelled or
returned: never, at any ``as_of``). Errors: 422 ``invalid_as_of``; 404 ``book_not_found`` /
``loan_not_found`` (no such aggregate of that kind); 404 ``not_yet_existing`` (the time is
before its creation); 403 ``not_a_party`` (a loan of someone else, whatever the time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar.params import QueryParameter

from api.bootstrap.container import Container
from api.http.errors import ApiError
from api.http.schemas import BookOut, LoanOut, Out
from domain.errors import BookNotFound, Forbidden, LoanNotFound, NotFound
from domain.instants import InvalidInstant, parse_instant
from domain.loan import ENDED_STATUSES

MAX_VERSION = 2**31 - 1
"""Versions above this are read as "the latest" (the events table's version is an int)."""

AS_OF_PATTERN = (
    r"^(?:0*[1-9][0-9]*|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
    r"(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2}))$"
)
"""A version (a positive integer) or an ISO 8601 date and time with a timezone, as the
OpenAPI document says; ``parse_as_of`` enforces it (422 ``invalid_as_of``)."""
_AS_OF = re.compile(AS_OF_PATTERN)

AsOfParam = Annotated[
    str | None,
    QueryParameter(
        max_length=64,
        description=(
            "Time travel: the state as it was at this aggregate version (a positive integer) "
            "or at this ISO 8601 time with a timezone (e.g. 2025-05-04T08:30:00Z)."
        ),
        schema_extra={"pattern": AS_OF_PATTERN},
    ),
]


class AsOf(Out, frozen=True):
    version: int  # the aggregate version shown
    at: datetime  # when that version's event was recorded


class BookAsOfOut(BookOut, frozen=True, kw_only=True):
    as_of: AsOf


class LoanAsOfOut(LoanOut, frozen=True, kw_only=True):
    as_of: AsOf


@dataclass(frozen=True)
class Moment:
    """A parsed ``as_of``: exactly one of ``version`` and ``at``."""

    version: int | None = None
    at: datetime | None = None


def parse_as_of(raw: str) -> Moment:
    """A positive version or an aware ISO 8601 time; anything else is a 422 ``invalid_as_of``."""
    if not _AS_OF.fullmatch(raw):
        raise _invalid(raw, "expected a version (1, 2, …) or an ISO 8601 time with a timezone")
    text = raw.strip()
    if text.isascii() and text.isdigit():
        version = int(text)
        if version < 1:
            raise _invalid(raw, "a version starts at 1")
        return Moment(version=min(version, MAX_VERSION))
    try:
        return Moment(at=parse_instant(text))
    except InvalidInstant as exc:
        raise _invalid(raw, f"expected a version (1, 2, …) or an ISO 8601 time: {exc}") from None


def _invalid(raw: str, why: str) -> ApiError:
    return ApiError(422, "invalid_as_of", f"as_of={raw[:64]!r} is not valid: {why}.")


class NotYetExisting(ApiError):
    def __init__(self, kind: str, aggregate_id: UUID, at: datetime) -> None:
        super().__init__(
            404, "not_yet_existing", f"{kind} {aggregate_id} did not exist yet at {at.isoformat()}."
        )


class History:
    """The events of one aggregate (command side), oldest first."""

    def __init__(self, container: Container, aggregate_id: UUID, events: list[Any]) -> None:
        self.container = container
        self.id = aggregate_id
        self.events = events

    @classmethod
    def load(
        cls, container: Container, aggregate_id: UUID, kind: str, missing: type[NotFound]
    ) -> History:
        """Raises ``missing`` unless ``aggregate_id`` is an aggregate of class ``kind``."""
        events = list(container.library.repository.event_store.get(aggregate_id))
        if not events or type(events[0]).__qualname__.split(".")[0] != kind:
            raise missing
        return cls(container, aggregate_id, events)

    @property
    def first(self) -> Any:
        return self.events[0]

    def version_at(self, when: datetime) -> int | None:
        """The version after the last event recorded at or before ``when`` (None: none)."""
        before = [int(e.originator_version) for e in self.events if e.timestamp <= when]
        return max(before) if before else None

    def version_of(self, moment: Moment, kind: str) -> int:
        """The version ``moment`` means; raises ``NotYetExisting``."""
        if moment.version is not None:
            return min(moment.version, int(self.events[-1].originator_version))
        assert moment.at is not None
        version = self.version_at(moment.at)
        if version is None:
            raise NotYetExisting(kind, self.id, moment.at)
        return version

    def state(self, version: int | None) -> Any:
        """The aggregate at ``version`` (``None``: now)."""
        return self.container.library.repository.get(self.id, version=version)


def _names(container: Container, prefix: str, reader_id: UUID | None) -> dict[str, Any]:
    row = container.shelf.reader(reader_id) if reader_id is not None else None
    return {
        f"{prefix}_nickname": row["nickname"] if row else "",
        f"{prefix}_avatar_url": row["avatar_url"] if row else "",
    }


def book_as_of(
    container: Container, book_id: UUID, as_of: str, viewer: UUID | None
) -> tuple[dict[str, Any], AsOf]:
    """The shelf-row shape (``api.http.schemas.book_out``) of a book as it was, and its ``as_of``.

    Raises 422 ``invalid_as_of``, ``BookNotFound``, 404 ``not_yet_existing``."""
    moment = parse_as_of(as_of)
    history = History.load(container, book_id, "Book", BookNotFound)
    book = history.state(history.version_of(moment, "book"))
    is_owner = viewer is not None and viewer == book.owner_id
    row = {
        "id": book.id,
        "isbn": book.isbn,
        "title": book.title,
        "author": book.author,
        "publisher": book.publisher,
        "tags": list(book.tags),
        "cover_url": book.cover_url,
        "summary": book.summary,
        "status": book.status,
        "owner_id": book.owner_id,
        "loan_id": book.loan_id,
        "borrower_id": book.borrower_id,
        "published_at": book.created_on,
        "updated_at": book.modified_on,
        **_names(container, "owner", book.owner_id),
        **(_names(container, "borrower", book.borrower_id) if is_owner else {}),
    }
    return row, AsOf(version=book.version, at=book.modified_on)


_LOAN_TIMES = {
    "Loan.Approved": "approved_at",
    "Loan.Declined": "declined_at",
    "Loan.Cancelled": "cancelled_at",
    "Loan.ReturnStarted": "return_started_at",
    "Loan.ReturnConfirmed": "returned_at",
}


def loan_as_of(
    container: Container,
    loan_id: UUID,
    as_of: str,
    viewer: UUID,
    not_a_party: type[Forbidden],
) -> tuple[dict[str, Any], AsOf]:
    """The shelf-row shape (``api.http.schemas.loan_out``) of a loan as it was, and its ``as_of``.

    Raises 422 ``invalid_as_of``, ``LoanNotFound``, ``not_a_party`` (checked before the time,
    so a stranger learns nothing of when it existed), 404 ``not_yet_existing``."""
    moment = parse_as_of(as_of)
    history = History.load(container, loan_id, "Loan", LoanNotFound)
    if viewer not in (history.first.borrower_id, history.first.lender_id):
        raise not_a_party
    version = history.version_of(moment, "loan")
    loan = history.state(version)
    row: dict[str, Any] = {
        "id": loan.id,
        "book_id": loan.book_id,
        "borrower_id": loan.borrower_id,
        "lender_id": loan.lender_id,
        "status": loan.status,
        "note": loan.note,
        # the contact of a loan that has ended now is not shown as it was either
        "contact": loan.contact if history.state(None).status not in ENDED_STATUSES else None,
        "requested_at": loan.created_on,
        "updated_at": loan.modified_on,
        "decline_reason": None,
        **{column: None for column in _LOAN_TIMES.values()},
        **_names(container, "borrower", loan.borrower_id),
        **_names(container, "lender", loan.lender_id),
    }
    for event in history.events:
        if event.originator_version > version:
            break
        column = _LOAN_TIMES.get(type(event).__qualname__)
        if column is not None:
            row[column] = event.timestamp
        if type(event).__qualname__ == "Loan.Declined":
            row["decline_reason"] = getattr(event, "reason", "") or None
    row.update(_book_ref(container, loan.book_id, moment.at or loan.modified_on))
    return row, AsOf(version=loan.version, at=loan.modified_on)


def _book_ref(container: Container, book_id: UUID, when: datetime) -> dict[str, Any]:
    """The loan's book (title, ISBN, cover) as it was at ``when``."""
    try:
        history = History.load(container, book_id, "Book", BookNotFound)
    except BookNotFound:  # cannot happen through the Library application
        return {"book_title": "", "book_isbn": "", "book_cover_url": ""}
    book = history.state(history.version_at(when) or 1)
    return {"book_title": book.title, "book_isbn": book.isbn, "book_cover_url": book.cover_url}


def book_with_as_of(out: BookOut, as_of: AsOf) -> BookAsOfOut:
    return BookAsOfOut(**msgspec.structs.asdict(out), as_of=as_of)


def loan_with_as_of(out: LoanOut, as_of: AsOf) -> LoanAsOfOut:
    return LoanAsOfOut(**msgspec.structs.asdict(out), as_of=as_of)


__all__ = [
    "AsOf",
    "AsOfParam",
    "BookAsOfOut",
    "LoanAsOfOut",
    "book_as_of",
    "book_with_as_of",
    "loan_as_of",
    "loan_with_as_of",
    "parse_as_of",
]
