"""``/v1/books`` (the shelf), ``/v1/isbn`` (the catalog) and loan requests on a book."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import PathParameter, QueryParameter

from api.adapters.catalog import PublishRefused, publish_command
from api.adapters.isbn import InvalidIsbn, isbn10_of, normalize_isbn
from api.http.auth import current_reader
from api.http.controllers.chat import (
    await_loan_conversation,
    open_loan_conversation,
    start_loan_conversation,
)
from api.http.controllers.common import (
    accepted,
    container_of,
    execute,
    position_headers,
    respond_when,
    run_command,
    shelf_includes,
    shelf_includes_async,
)
from api.http.controllers.media import ATTACH_PROBLEMS, attach_media
from api.http.errors import ApiError
from api.http.idempotency import (
    Committed,
    Staged,
    after_commit,
    begin_idempotent,
    derived_id,
    run_idempotent,
)
from api.http.moderation import Scene, check_texts
from api.http.openapi import MODERATED, Code, contract
from api.http.params import (
    Cursor,
    FromPath,
    IdempotencyKey,
    JSONBody,
    PageSize,
    ReaderId,
    ViewerId,
)
from api.http.schemas import (
    ISBN_PATTERN,
    Availability,
    BookOut,
    BookPage,
    HistoryEvent,
    IsbnOut,
    LoanOut,
    LoanRequestBody,
    PublishBody,
    RevisePatch,
    book_out,
    loan_out,
)
from api.http.time_travel import AsOfParam, BookAsOfOut, book_as_of, book_with_as_of
from domain import commands as c
from domain.errors import (
    BookNotFound,
    BookNotWithdrawn,
    BookOnLoan,
    BookWithdrawn,
    CannotBorrowOwnBook,
    LoanNotFound,
    NotTheOwner,
    ReaderNotFound,
    RequestPending,
)
from projections.paging import InvalidCursor

# PostgreSQL text cannot hold U+0000: a NUL in a query would be a 500, so it is a 422.
_NO_NUL = r"^[^\x00]*$"
INVALID_ISBN = Code(422, "invalid_isbn")
_ISBN_TEXT = re.compile(ISBN_PATTERN)
# The pattern is documented (schema_extra) and enforced by valid_isbn, with its own code.
IsbnText = Annotated[str, PathParameter(schema_extra={"pattern": ISBN_PATTERN})]
INVALID_CURSOR = Code(422, "invalid_cursor")
Query = Annotated[
    str | None,
    QueryParameter(max_length=100, pattern=_NO_NUL, description="Title/author/ISBN substring."),
]
TagParam = Annotated[
    str | None, QueryParameter(max_length=32, pattern=_NO_NUL, description="A tag, exactly.")
]
IsbnFilter = Annotated[
    str | None,
    QueryParameter(
        max_length=32,
        description="An ISBN-10 or ISBN-13 (422 `invalid_isbn`); empty: no filter.",
        schema_extra={"pattern": "^$|" + ISBN_PATTERN},
    ),
]
OwnerFilter = Annotated[UUID | None, QueryParameter(description="Books of this reader only.")]
AvailableFilter = Annotated[
    bool | None, QueryParameter(description="true: available books only; false: the others.")
]


def valid_isbn(raw: str) -> str:
    """Canonical ISBN-13 of ``raw``; an invalid one (not of the form ``ISBN_PATTERN``, or a
    wrong check digit…) is a 422 ``invalid_isbn``."""
    try:
        if not _ISBN_TEXT.fullmatch(raw):
            raise InvalidIsbn(raw, "characters", f"{raw[:40]!r} is not an ISBN-10 or ISBN-13")
        return normalize_isbn(raw)
    except InvalidIsbn as exc:
        raise ApiError(422, "invalid_isbn", str(exc)) from exc


def book_texts(data: PublishBody | RevisePatch) -> dict[str, Any]:
    """The texts of a book a reader wrote, for the content check."""
    return {
        "title": data.title,
        "author": data.author,
        "publisher": data.publisher,
        "summary": data.summary,
        "tags": data.tags,
    }


def page_or_422(fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except InvalidCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc


class BookController(Controller):
    path = "/v1/books"
    tags = ["books"]

    @post(
        "/",
        operation_id="publishBook",
        status_code=201,
        sync_to_thread=True,
        opt=contract(
            *MODERATED,
            ReaderNotFound,
            INVALID_ISBN,
            Code(422, "title_required"),
            *ATTACH_PROBLEMS,
            command="library",
        ),
    )
    def publish(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PublishBody],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[BookOut]:
        """Publish a book on your shelf. Missing fields come from the ISBN catalog; a book
        with no title after that is a 422 ``title_required``. ``cover_media_id``: a picture
        you uploaded as the cover (``cover_url`` becomes its URL; 404 ``media_not_found`` /
        403 ``media_not_owned``)."""
        container = container_of(request)
        check_texts(container, reader_id, book_texts(data), Scene.FORUM)
        isbn = valid_isbn(data.isbn)

        def action() -> Response[Any]:
            try:
                command = publish_command(
                    container.catalog,
                    isbn,
                    msgspec.structs.asdict(data),
                    book_id=derived_id(reader_id, idempotency_key, "book"),
                    owner_id=reader_id,
                )
            except PublishRefused as exc:
                raise ApiError(422, exc.code, str(exc)) from exc
            if data.cover_media_id is not None:
                cover = attach_media(container, data.cover_media_id, reader_id)
                command = msgspec.structs.replace(
                    command, cover_url=cover.url, cover_media_id=cover.id
                )
            recorded, consistent = execute(container, command)
            if not consistent:
                return accepted(recorded)
            row = container.shelf.book(recorded.id)
            return Response(
                book_out(row, reader_id), status_code=201, headers=position_headers(recorded)
            )

        def recover(_: Committed | None) -> Response[Any] | None:
            book_id = derived_id(reader_id, idempotency_key, "book")
            try:
                container.library.book(book_id)
            except BookNotFound:
                return None
            return _created(container.shelf.book(book_id), book_out, book_id, reader_id)

        return run_idempotent(
            container,
            reader_id,
            idempotency_key,
            "POST",
            request.url.path,
            data,
            action,
            recover,
        )

    @get(
        "/",
        operation_id="searchBooks",
        sync_to_thread=True,
        opt=contract(INVALID_ISBN, INVALID_CURSOR),
    )
    def search(
        self,
        request: Request[Any, Any, Any],
        viewer_id: ViewerId,
        q: Query = None,
        tag: TagParam = None,
        isbn: IsbnFilter = None,
        owner_id: OwnerFilter = None,
        available: AvailableFilter = None,
        cursor: Cursor = None,
        limit: PageSize = 20,
    ) -> BookPage:
        """Search the shelf: substring of title/author/ISBN (Chinese too), tag, ISBN, owner,
        availability; newest first, cursor pages."""
        container = container_of(request)
        rows, next_cursor = page_or_422(
            container.shelf.search_books,
            q=q,
            tag=tag,
            isbn=valid_isbn(isbn) if isbn else None,
            owner_id=owner_id,
            available=available,
            cursor=cursor,
            limit=limit,
        )
        return BookPage(items=[book_out(r, viewer_id) for r in rows], next_cursor=next_cursor)

    @get(
        "/{book_id:uuid}",
        operation_id="getBook",
        sync_to_thread=True,
        opt=contract(BookNotFound, Code(404, "not_yet_existing"), Code(422, "invalid_as_of")),
    )
    def detail(
        self,
        request: Request[Any, Any, Any],
        book_id: FromPath[UUID],
        viewer_id: ViewerId,
        as_of: AsOfParam = None,
    ) -> BookOut | BookAsOfOut:
        """One book; ``borrower`` and ``loan_id`` are shown to its owner only. With
        ``as_of`` (a version or an ISO 8601 time with a timezone), the book as it was then,
        plus ``as_of: {version, at}`` (``api.http.time_travel``)."""
        if as_of is not None:
            row, when = book_as_of(container_of(request), book_id, as_of, viewer_id)
            return book_with_as_of(book_out(row, viewer_id), when)
        row = container_of(request).shelf.book(book_id)
        if row is None:
            raise BookNotFound
        return book_out(row, viewer_id)

    def _change(  # noqa: PLR0913
        self,
        request: Request[Any, Any, Any],
        book_id: UUID,
        command: c.Command,
        reader_id: UUID,
        key: str | None,
        payload: Any = None,
    ) -> Response[BookOut]:
        """Run ``command`` under its ``Idempotency-Key`` and answer with the book once the
        shelf has it; a retry after a crash answers from the recorded commit."""
        container = container_of(request)

        def respond(recorded: c.Recorded) -> Response[Any]:
            if not shelf_includes(container, recorded):
                return accepted(recorded)
            row = container.shelf.book(recorded.id)
            return Response(
                book_out(row, reader_id), status_code=200, headers=position_headers(recorded)
            )

        return run_idempotent(
            container,
            reader_id,
            key,
            request.method,
            request.url.path,
            payload,
            lambda: respond(container.library.handle(command)),
            after_commit(lambda done: respond(c.Recorded(id=book_id, position=done.position))),
        )

    @patch(
        "/{book_id:uuid}",
        operation_id="reviseBook",
        sync_to_thread=True,
        opt=contract(*MODERATED, BookNotFound, NotTheOwner, *ATTACH_PROBLEMS, command="library"),
    )
    def revise(
        self,
        request: Request[Any, Any, Any],
        book_id: FromPath[UUID],
        data: JSONBody[RevisePatch],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[BookOut]:
        """Revise a book's details (owner only). ``cover_media_id``: a picture you uploaded
        as the new cover, ``""`` for none; a ``cover_url`` alone is an outside cover."""
        check_texts(
            container_of(request),
            reader_id,
            book_texts(data),
            Scene.FORUM,
            subject=f"book:{book_id}",
        )
        fields = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        if data.cover_media_id:
            container = container_of(request)
            book = container.shelf.book(book_id)
            if book is not None and book["owner_id"] != reader_id:
                raise NotTheOwner  # before attaching: only the owner changes the cover
            cover = attach_media(container, data.cover_media_id, reader_id)
            fields["cover_url"], fields["cover_media_id"] = cover.url, cover.id
        elif data.cover_media_id == "":
            fields.setdefault("cover_url", "")
        elif data.cover_url is not None:
            fields["cover_media_id"] = ""  # an outside cover replaces an uploaded one
        return self._change(
            request,
            book_id,
            c.ReviseBook(book_id=book_id, actor_id=reader_id, **fields),
            reader_id,
            idempotency_key,
            data,
        )

    @delete(
        "/{book_id:uuid}",
        operation_id="withdrawBook",
        status_code=200,
        sync_to_thread=True,
        opt=contract(BookNotFound, NotTheOwner, BookOnLoan, command="library"),
    )
    def withdraw(
        self,
        request: Request[Any, Any, Any],
        book_id: FromPath[UUID],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[BookOut]:
        """Withdraw a book from the shelf (owner only; 409 ``book_on_loan`` while lent).
        Its open loan requests are declined (reason ``book_withdrawn``)."""
        command = c.WithdrawBook(book_id=book_id, actor_id=reader_id)
        return self._change(request, book_id, command, reader_id, idempotency_key)

    @post(
        "/{book_id:uuid}/relist",
        operation_id="relistBook",
        status_code=200,
        sync_to_thread=True,
        opt=contract(BookNotFound, NotTheOwner, BookNotWithdrawn, command="library"),
    )
    def relist(
        self,
        request: Request[Any, Any, Any],
        book_id: FromPath[UUID],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[BookOut]:
        """Put a withdrawn book back on the shelf (owner only)."""
        command = c.RelistBook(book_id=book_id, actor_id=reader_id)
        return self._change(request, book_id, command, reader_id, idempotency_key)

    @get(
        "/{book_id:uuid}/history",
        operation_id="bookHistory",
        sync_to_thread=True,
        opt=contract(BookNotFound, NotTheOwner),
    )
    def history(
        self, request: Request[Any, Any, Any], book_id: FromPath[UUID], reader_id: ReaderId
    ) -> list[HistoryEvent]:
        """The book's events, oldest first (owner only: who borrowed it is personal data)."""
        container = container_of(request)
        row = container.shelf.book(book_id)
        if row is None:
            raise BookNotFound
        if row["owner_id"] != reader_id:
            raise NotTheOwner
        skip = {"originator_id", "originator_version", "timestamp", "originator_topic"}
        return [
            HistoryEvent(
                version=e.originator_version,
                type=type(e).__name__,
                at=e.timestamp,
                data={k: v for k, v in e.__dict__.items() if k not in skip},
            )
            for e in container.library.repository.event_store.get(book_id)
        ]

    @post(
        "/{book_id:uuid}/loans",
        operation_id="requestLoan",
        status_code=201,
        opt=contract(
            *MODERATED,
            BookNotFound,
            BookWithdrawn,
            CannotBorrowOwnBook,
            RequestPending,
            Code(429, "rate_limited"),
            auth="reader",
            command="library",
        ),
    )
    async def request_loan(
        self,
        request: Request[Any, Any, Any],
        book_id: FromPath[UUID],
        data: JSONBody[LoanRequestBody | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[LoanOut]:
        """Ask to borrow a book (the body is optional: every field of it is).
        422 ``cannot_borrow_own_book``, 409 ``book_withdrawn``; 409 ``request_pending`` when
        you already have an open request (or loan) of this book: its id is the problem's
        ``loan_id``. One open request per borrower per book; when the lender approves one,
        the others are declined (reason ``lent_to_another``)."""
        container = container_of(request)
        body = data or LoanRequestBody()
        path = request.url.path

        def start() -> tuple[UUID, Response[Any] | Staged[tuple[c.Recorded, c.Recorded | None]]]:
            reader_id = current_reader(request)  # in this thread (see there)
            check_texts(
                container, reader_id, {"note": body.note}, Scene.COMMENT, subject=f"book:{book_id}"
            )

            def action() -> tuple[c.Recorded, c.Recorded | None]:
                # per reader, per node; a replayed retry is not counted, a refusal not stored
                container.rate_limits.hit("loan_requests", str(reader_id))
                command = c.RequestLoan(
                    loan_id=derived_id(reader_id, idempotency_key, "loan"),
                    book_id=book_id,
                    borrower_id=reader_id,
                    note=body.note,
                    contact=body.contact,
                )
                recorded = container.library.handle(command)
                # its note opens the chat; the inbox and the shelf are awaited together
                return recorded, start_loan_conversation(container, recorded.id)

            def recover(_: Committed | None) -> Response[Any] | None:
                loan_id = derived_id(reader_id, idempotency_key, "loan")
                try:
                    container.library.loan(loan_id)
                except LoanNotFound:
                    return None
                open_loan_conversation(container, loan_id)  # idempotent; it may not have run
                return _created(container.shelf.loan(loan_id), loan_out, loan_id, reader_id)

            return reader_id, begin_idempotent(
                container, reader_id, idempotency_key, "POST", path, body, action, recover
            )

        reader_id, staged = await run_command(container, start)
        if isinstance(staged, Response):
            return staged

        async def wait(recorded: tuple[c.Recorded, c.Recorded | None]) -> bool:
            loan, opened = recorded
            consistent, _ = await asyncio.gather(
                shelf_includes_async(container, loan),
                await_loan_conversation(container, loan.id, opened),
            )
            return consistent

        def respond(
            recorded: tuple[c.Recorded, c.Recorded | None], consistent: bool
        ) -> Response[Any]:
            loan = recorded[0]
            if not consistent:
                return accepted(loan)
            row = container.shelf.loan(loan.id)
            return Response(
                loan_out(row, reader_id), status_code=201, headers=position_headers(loan)
            )

        return await respond_when(container, staged, wait, respond)


def _created(row: Any, out: Any, aggregate_id: UUID, reader_id: UUID) -> Response[Any]:
    """The answer of a creating command recovered after a crash: 201 from the read model,
    or 202 while the read model has not caught up (its position is not known any more)."""
    if row is None:
        return accepted(c.Recorded(id=aggregate_id, position=None))
    return Response(out(row, reader_id), status_code=201)


class IsbnController(Controller):
    path = "/v1/isbn"
    tags = ["catalog"]

    @get(
        "/{isbn:str}",
        operation_id="lookupIsbn",
        sync_to_thread=True,
        opt=contract(Code(404, "isbn_not_found"), INVALID_ISBN),
    )
    def lookup(self, request: Request[Any, Any, Any], isbn: IsbnText) -> IsbnOut:
        """Catalog metadata of an ISBN-10/13 plus shelf availability; 404 if unknown,
        422 if not a valid ISBN (ISO 2108 checksum)."""
        container = container_of(request)
        canonical = valid_isbn(isbn[:32])
        entry = container.catalog.lookup(canonical)
        if entry is None:
            raise ApiError(404, "isbn_not_found", f"ISBN {canonical} is not in the catalog.")
        return IsbnOut(
            isbn=entry.isbn,
            isbn10=entry.isbn10 or isbn10_of(entry.isbn),
            title=entry.title,
            author=entry.author,
            publisher=entry.publisher,
            published_year=entry.published_year,
            language=entry.language,
            tags=list(entry.tags),
            cover_url=entry.cover_url,
            summary=entry.summary,
            availability=Availability(**container.shelf.availability(canonical)),
        )


__all__ = ["BookController", "IsbnController", "LoanOut"]
