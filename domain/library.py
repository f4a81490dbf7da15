"""The Library bounded context: the eventsourcing Application for readers, books and loans.

Each command is one load → act → ``save`` on one consistent boundary. Approving a loan saves
the ``Loan`` and the ``Book`` in one ``save()``, so optimistic concurrency (the events table's
``(originator_id, originator_version)`` key) lets only one of two concurrent approvals of the
same book succeed; the loser's save fails (``ConcurrentUpdate``) and ``handle`` runs it again
on the new state, where it meets ``BookOnLoan`` (or ``InvalidLoanTransition``: the winner
declined it).

A loan request saves the ``Loan`` and its ``Book`` (``Book.RequestReceived``) together too:
the book holds the open requests, so one borrower's two simultaneous requests for one book
conflict and only one is recorded (the other, run again, gets ``RequestPending``); different
borrowers' simultaneous requests are all recorded, one after the other.
Approving a request declines the book's other open requests (reason ``lent_to_another``)
and withdrawing a book declines all of them (``book_withdrawn``), in the same ``save()``.

Its events table is ``library_events`` (the Application's name, lower case).
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable
from functools import singledispatchmethod
from typing import Any, ClassVar
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper

from domain import commands as c
from domain.book import Book
from domain.errors import (
    BookNotFound,
    ConcurrentUpdate,
    DomainError,
    LoanNotFound,
    NotFound,
    ReaderForgotten,
    ReaderNotFound,
)
from domain.isbn import language_of_isbn
from domain.loan import BOOK_WITHDRAWN, LENT_TO_ANOTHER, Loan
from domain.media import Media
from domain.personal import personal_data_mapper
from domain.reader import Reader


class Library(Application[UUID]):
    """Command side of the Library context. ``handle(command) -> Recorded``.

    Raises a ``DomainError`` subclass for every refusal (see ``domain.errors``).
    """

    name = "Library"
    env: ClassVar[dict[str, str]] = {"ORIGINATOR_ID_TYPE": "uuid"}

    def construct_mapper(self) -> Mapper[UUID]:
        """Personal fields sealed (``domain.personal.PERSONAL_DATA_MAPPER_TOPIC``)."""
        return personal_data_mapper(self) or super().construct_mapper()

    # -- generic helpers --------------------------------------------------------------------

    def _load(self, aggregate_id: UUID, kind: type[Aggregate], missing: type[NotFound]) -> Any:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise missing from None
        if not isinstance(aggregate, kind):
            raise missing
        return aggregate

    def _commit(self, subject_id: UUID, *aggregates: Aggregate) -> c.Recorded:
        """Save ``aggregates`` (one transaction); an aggregate the cache does not hold yet (a
        new loan, book or reader) is kept there as saved, so that the next command on it
        fast-forwards it instead of reading its whole history (eventsourcing keeps saved
        aggregates only when it does not fast-forward). Raises ``ConcurrentUpdate``."""
        try:
            recordings = self.save(*aggregates)
        except IntegrityError as exc:
            raise ConcurrentUpdate from exc
        cache = self.repository.cache
        if cache is not None:
            for aggregate in aggregates:
                try:
                    cache.get(aggregate.id)
                except KeyError:
                    cache.put(aggregate.id, aggregate)
        position = max((r.notification.id for r in recordings), default=None)
        return c.Recorded(id=subject_id, position=position)

    def _loaded_together(self, *ids: UUID) -> dict[UUID, Any] | None:
        """Copies of the cached aggregates ``ids``, fast-forwarded together: the events
        stored since their cached versions come in one statement (the recorder's
        ``select_events_after``, ``api.adapters.eventstore``) where ``repository.get``
        sends one each, and are applied under the repository's fast-forward locks as it
        applies them (taken in id order: two such loads never wait for each other). A
        command's loan and book, or reader and book, cost one round trip instead of two.
        ``None`` (load them one by one) when one is not cached or the recorder cannot."""
        repository = self.repository
        cache = repository.cache
        select = getattr(self.recorder, "select_events_after", None)
        if cache is None or select is None or not repository.fastforward:
            return None
        ordered = sorted(set(ids))
        with contextlib.ExitStack() as held:
            for aggregate_id in ordered:
                lock = repository._use_fastforward_lock(aggregate_id)  # noqa: SLF001
                held.callback(repository._disuse_fastforward_lock, aggregate_id)  # noqa: SLF001
                lock.acquire()
                held.callback(lock.release)
            kept: dict[UUID, Any] = {}
            for aggregate_id in ordered:
                try:
                    kept[aggregate_id] = cache.get(aggregate_id)
                except KeyError:
                    return None
            since: dict[UUID, list[Any]] = {aggregate_id: [] for aggregate_id in ordered}
            for stored in select([(i, kept[i].version) for i in ordered]):
                since[stored.originator_id].append(self.mapper.to_domain_event(stored))
            loaded: dict[UUID, Any] = {}
            for aggregate_id, events in since.items():
                aggregate = kept[aggregate_id]
                if events:
                    events.sort(key=lambda event: event.originator_version)
                    aggregate = project_aggregate(aggregate, events)
                    if aggregate is None:  # discarded: let ``repository.get`` say so
                        return None
                loaded[aggregate_id] = (
                    copy.deepcopy(aggregate) if repository.deepcopy_from_cache else aggregate
                )
            return loaded

    def _loan_and_book(self, loan_id: UUID) -> tuple[Loan, Book]:
        """A loan and its book (command side only), together when both are cached
        (``_loaded_together``). Raises ``LoanNotFound``, ``BookNotFound``."""
        cache = self.repository.cache
        kept = None
        if cache is not None:
            with contextlib.suppress(KeyError):
                kept = cache.get(loan_id)
        if isinstance(kept, Loan):  # its book_id never changes: read without the lock
            both = self._loaded_together(loan_id, kept.book_id)
            if both is not None:
                loan, book = both[loan_id], both[kept.book_id]
                if isinstance(loan, Loan) and isinstance(book, Book):
                    return loan, book
        loan = self.loan(loan_id)
        return loan, self.book(loan.book_id)

    def book(self, book_id: UUID) -> Book:
        """Load a book (command side only). Raises ``BookNotFound``."""
        return self._load(book_id, Book, BookNotFound)  # type: ignore[no-any-return]

    def loan(self, loan_id: UUID) -> Loan:
        """Load a loan (command side only). Raises ``LoanNotFound``."""
        return self._load(loan_id, Loan, LoanNotFound)  # type: ignore[no-any-return]

    def reader(self, reader_id: UUID, *, forgotten: bool = False) -> Reader:
        """Load a reader (command side only). Raises ``ReaderNotFound`` (also for a
        forgotten reader, unless ``forgotten``)."""
        reader: Reader = self._load(reader_id, Reader, ReaderNotFound)
        if reader.forgotten and not forgotten:
            raise ReaderNotFound
        return reader

    def reader_exists(self, reader_id: UUID) -> bool:
        try:
            self.reader(reader_id)
        except ReaderNotFound:
            return False
        return True

    # -- commands -----------------------------------------------------------------------------

    def handle(self, command: c.Command) -> c.Recorded:
        """Execute ``command``; returns what it recorded. Raises ``DomainError``.

        A command that loses an optimistic-concurrency race (``ConcurrentUpdate``: another
        command saved one of its aggregates first, e.g. someone else's request of the same
        book) is run again on the new state after a jittered back-off (``retry_backoff``
        seconds, doubling, at most ``retry_backoff_cap``; as ``domain.chat.Chat`` does), up
        to ``max_attempts`` attempts in all, then ``ConcurrentUpdate``. It then either
        succeeds or meets the refusal the new state calls for (a book already lent, a
        request already pending…)."""
        delay = self.retry_backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._dispatch(command)
            except ConcurrentUpdate:
                if attempt == self.max_attempts:
                    raise
            time.sleep(random.uniform(0, delay))  # noqa: S311 — jitter, not a secret
            delay = min(delay * 2, self.retry_backoff_cap)
        raise AssertionError("unreachable")  # pragma: no cover

    max_attempts: ClassVar[int] = 12
    retry_backoff: ClassVar[float] = 0.005
    retry_backoff_cap: ClassVar[float] = 0.5

    @singledispatchmethod
    def _dispatch(self, command: c.Command) -> c.Recorded:
        raise TypeError(f"Unknown command {type(command).__name__}")

    @_dispatch.register
    def _register(self, command: c.RegisterReader) -> c.Recorded:
        try:
            known: Reader | None = self.reader(command.reader_id, forgotten=True)
        except ReaderNotFound:
            known = None
        if known is not None:  # registering is idempotent; a forgotten reader stays so
            if known.forgotten:
                raise ReaderForgotten
            return c.Recorded(id=known.id, position=None)
        reader = Reader(
            id=command.reader_id, nickname=command.nickname, avatar_url=command.avatar_url
        )
        try:
            return self._commit(reader.id, reader)
        except ConcurrentUpdate:
            # A concurrent first login registered it meanwhile.
            return c.Recorded(id=reader.id, position=None)

    @_dispatch.register
    def _forget(self, command: c.ForgetReader) -> c.Recorded:
        reader = self.reader(command.reader_id, forgotten=True)
        reader.forget()
        return self._commit(reader.id, reader)

    @_dispatch.register
    def _change_profile(self, command: c.ChangeProfile) -> c.Recorded:
        reader = self.reader(command.reader_id)
        reader.change_profile(
            nickname=command.nickname,
            avatar_url=command.avatar_url,
            avatar_media_id=command.avatar_media_id,
        )
        return self._commit(reader.id, reader)

    @_dispatch.register
    def _remove_media(self, command: c.RemoveMedia) -> c.Recorded:
        removal = Media.remove(command.media_id, command.reason)
        try:
            return self._commit(removal.id, removal)
        except ConcurrentUpdate:
            return c.Recorded(id=removal.id, position=None)  # removed before: idempotent

    @_dispatch.register
    def _publish(self, command: c.PublishBook) -> c.Recorded:
        self.reader(command.owner_id)
        book = Book(
            id=command.book_id,
            owner_id=command.owner_id,
            isbn=command.isbn,
            title=command.title,
            author=command.author,
            publisher=command.publisher,
            tags=list(command.tags),
            cover_url=command.cover_url,
            summary=command.summary,
            language=language_of_isbn(command.isbn),
            cover_media_id=command.cover_media_id,
        )
        return self._commit(book.id, book)

    @_dispatch.register
    def _revise(self, command: c.ReviseBook) -> c.Recorded:
        book = self.book(command.book_id)
        changes = {
            k: v
            for k, v in msgspec.structs.asdict(command).items()
            if k not in ("book_id", "actor_id") and v is not None
        }
        book.revise(command.actor_id, changes)
        return self._commit(book.id, book)

    def _declined_requests(self, loan_ids: list[UUID], reason: str) -> list[Loan]:
        """The loans of ``loan_ids`` that were still requests, declined for ``reason``."""
        declined = []
        for loan_id in loan_ids:
            try:
                loan = self.loan(loan_id)
            except LoanNotFound:  # cannot happen: the book records saved loans only
                continue
            if loan.decline_as_closed(reason):
                declined.append(loan)
        return declined

    @_dispatch.register
    def _withdraw(self, command: c.WithdrawBook) -> c.Recorded:
        book = self.book(command.book_id)
        open_requests = list(book.open_requests.values())
        book.withdraw(command.actor_id)
        declined = self._declined_requests(open_requests, BOOK_WITHDRAWN)
        return self._commit(book.id, book, *declined)

    @_dispatch.register
    def _relist(self, command: c.RelistBook) -> c.Recorded:
        book = self.book(command.book_id)
        book.relist(command.actor_id)
        return self._commit(book.id, book)

    @_dispatch.register
    def _request(self, command: c.RequestLoan) -> c.Recorded:
        both = self._loaded_together(command.borrower_id, command.book_id)
        borrower = None if both is None else both[command.borrower_id]
        book = None if both is None else both[command.book_id]
        if not isinstance(borrower, Reader) or not isinstance(book, Book):
            borrower, book = self.reader(command.borrower_id), self.book(command.book_id)
        if borrower.forgotten:  # a forgotten reader asks for nothing
            raise ReaderNotFound
        book.receive_request(command.loan_id, command.borrower_id)
        contact = (
            {k: v for k, v in msgspec.structs.asdict(command.contact).items() if v}
            if command.contact
            else None
        )
        loan = Loan(
            id=command.loan_id,
            book_id=book.id,
            borrower_id=command.borrower_id,
            lender_id=book.owner_id,
            note=command.note,
            contact=contact or None,
        )
        # a simultaneous request of the same book conflicts on the book: run again (``handle``),
        # it meets this borrower's request that won (``RequestPending``) or succeeds
        return self._commit(loan.id, loan, book)

    def _transition(
        self, loan_id: UUID, act: Callable[[Loan], None], book_act: Callable[[Book, Loan], None]
    ) -> c.Recorded:
        loan, book = self._loan_and_book(loan_id)
        act(loan)
        book_act(book, loan)
        return self._commit(loan.id, loan, book)

    @_dispatch.register
    def _approve(self, command: c.ApproveLoan) -> c.Recorded:
        loan, book = self._loan_and_book(command.loan_id)
        loan.approve(command.actor_id)
        others = [other for other in book.open_requests.values() if other != loan.id]
        book.lend(loan.id, loan.borrower_id)
        declined = self._declined_requests(others, LENT_TO_ANOTHER)
        return self._commit(loan.id, loan, book, *declined)

    @_dispatch.register
    def _confirm_return(self, command: c.ConfirmReturn) -> c.Recorded:
        return self._transition(
            command.loan_id,
            lambda loan: loan.confirm_return(command.actor_id),
            lambda book, loan: book.take_back(loan.id),
        )

    @_dispatch.register
    def _decline(self, command: c.DeclineLoan) -> c.Recorded:
        loan = self.loan(command.loan_id)
        loan.decline(command.actor_id, command.reason)
        return self._close(loan)

    @_dispatch.register
    def _cancel(self, command: c.CancelLoan) -> c.Recorded:
        loan = self.loan(command.loan_id)
        loan.cancel(command.actor_id)
        return self._close(loan)

    def _close(self, loan: Loan) -> c.Recorded:
        """Save a request that was just declined or cancelled with its book, where it is no
        longer open."""
        book = self.book(loan.book_id)
        book.close_request(loan.id)
        return self._commit(loan.id, loan, book)

    @_dispatch.register
    def _start_return(self, command: c.StartReturn) -> c.Recorded:
        loan = self.loan(command.loan_id)
        loan.start_return(command.actor_id)
        return self._commit(loan.id, loan)


__all__ = ["Library", "DomainError"]
