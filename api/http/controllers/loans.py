"""``/v1/loans``: a loan's two parties see it and move it along its life."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post

from api.http.auth import current_reader
from api.http.controllers.common import (
    accepted,
    container_of,
    position_headers,
    respond_when,
    run_command,
    shelf_includes,
    shelf_includes_async,
)
from api.http.idempotency import Staged, after_commit, begin_idempotent
from api.http.moderation import Scene, check_texts
from api.http.openapi import MODERATED, Code, contract
from api.http.params import FromPath, IdempotencyKey, JSONBody, ReaderId
from api.http.schemas import DeclineBody, LoanOut, loan_out
from api.http.time_travel import AsOfParam, LoanAsOfOut, loan_as_of, loan_with_as_of
from domain import commands as c
from domain.errors import (
    BookOnLoan,
    BookWithdrawn,
    Forbidden,
    InvalidLoanTransition,
    LoanNotFound,
    NotTheBorrower,
    NotTheLender,
)


class NotAParty(Forbidden):
    """Only the borrower and the lender of this loan may see it."""

    code = "not_a_party"


class LoanController(Controller):
    path = "/v1/loans"
    tags = ["loans"]

    @get(
        "/{loan_id:uuid}",
        operation_id="getLoan",
        sync_to_thread=True,
        opt=contract(
            LoanNotFound, NotAParty, Code(404, "not_yet_existing"), Code(422, "invalid_as_of")
        ),
    )
    def detail(
        self,
        request: Request[Any, Any, Any],
        loan_id: FromPath[UUID],
        reader_id: ReaderId,
        as_of: AsOfParam = None,
    ) -> LoanOut | LoanAsOfOut:
        """A loan, for its borrower or lender; ``contact`` for the lender only. With
        ``as_of`` (a version or an ISO 8601 time with a timezone), the loan as it was then,
        plus ``as_of: {version, at}`` (``api.http.time_travel``)."""
        if as_of is not None:
            row, when = loan_as_of(container_of(request), loan_id, as_of, reader_id, NotAParty)
            return loan_with_as_of(loan_out(row, reader_id), when)
        row = container_of(request).shelf.loan(loan_id)
        if row is None:
            raise LoanNotFound
        if reader_id not in (row["borrower_id"], row["lender_id"]):
            raise NotAParty
        return loan_out(row, reader_id)

    async def _transition(
        self,
        request: Request[Any, Any, Any],
        loan_id: UUID,
        command: Callable[[UUID], c.Command],
        key: str | None,
        payload: Any = None,
        check: Callable[[UUID], None] | None = None,
    ) -> Response[LoanOut]:
        """Run ``command(reader_id)`` for the request's reader under its
        ``Idempotency-Key`` and answer with the loan once the shelf has it; a retry after a
        crash answers from the recorded commit. The reader (``current_reader``), ``check``
        and the command run in one worker thread; the shelf is awaited on the event loop;
        the answer is read and stored in a second thread."""
        container = container_of(request)
        path = request.url.path

        def start() -> tuple[UUID, Response[Any] | Staged[c.Recorded]]:
            reader_id = current_reader(request)
            if check is not None:
                check(reader_id)

            def respond_after(recorded: c.Recorded) -> Response[Any]:  # a recovery: rare
                if not shelf_includes(container, recorded):
                    return accepted(recorded)
                return loan_response(recorded, reader_id)

            return reader_id, begin_idempotent(
                container,
                reader_id,
                key,
                "POST",
                path,
                payload,
                lambda: container.library.handle(command(reader_id)),
                after_commit(
                    lambda done: respond_after(c.Recorded(id=loan_id, position=done.position))
                ),
            )

        def loan_response(recorded: c.Recorded, reader_id: UUID) -> Response[Any]:
            row = container.shelf.loan(recorded.id)
            return Response(
                loan_out(row, reader_id), status_code=200, headers=position_headers(recorded)
            )

        reader_id, staged = await run_command(container, start)
        if isinstance(staged, Response):
            return staged
        return await respond_when(
            container,
            staged,
            lambda recorded: shelf_includes_async(container, recorded),
            lambda recorded, consistent: (
                loan_response(recorded, reader_id) if consistent else accepted(recorded)
            ),
        )

    @post(
        "/{loan_id:uuid}/approve",
        operation_id="approveLoan",
        status_code=200,
        opt=contract(
            LoanNotFound,
            NotTheLender,
            InvalidLoanTransition,
            BookWithdrawn,
            BookOnLoan,
            auth="reader",
            command="library",
        ),
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        loan_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[LoanOut]:
        """Lender agrees; the book goes on loan. 409 if the book is already lent or withdrawn."""
        return await self._transition(
            request, loan_id, lambda r: c.ApproveLoan(loan_id=loan_id, actor_id=r), idempotency_key
        )

    @post(
        "/{loan_id:uuid}/decline",
        operation_id="declineLoan",
        status_code=200,
        opt=contract(
            *MODERATED,
            LoanNotFound,
            NotTheLender,
            InvalidLoanTransition,
            auth="reader",
            command="library",
        ),
    )
    async def decline(
        self,
        request: Request[Any, Any, Any],
        loan_id: FromPath[UUID],
        data: JSONBody[DeclineBody | None] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[LoanOut]:
        """Lender refuses the request."""
        reason = data.reason if data else ""

        def check(reader_id: UUID) -> None:
            if reason:
                check_texts(
                    container_of(request),
                    reader_id,
                    {"reason": reason},
                    Scene.COMMENT,
                    subject=f"loan:{loan_id}",
                )

        return await self._transition(
            request,
            loan_id,
            lambda r: c.DeclineLoan(loan_id=loan_id, actor_id=r, reason=reason),
            idempotency_key,
            {"reason": reason},
            check,
        )

    @post(
        "/{loan_id:uuid}/cancel",
        operation_id="cancelLoan",
        status_code=200,
        opt=contract(
            LoanNotFound, NotTheBorrower, InvalidLoanTransition, auth="reader", command="library"
        ),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        loan_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[LoanOut]:
        """Borrower withdraws the request."""
        return await self._transition(
            request, loan_id, lambda r: c.CancelLoan(loan_id=loan_id, actor_id=r), idempotency_key
        )

    @post(
        "/{loan_id:uuid}/return",
        operation_id="startReturn",
        status_code=200,
        opt=contract(
            LoanNotFound, NotTheBorrower, InvalidLoanTransition, auth="reader", command="library"
        ),
    )
    async def start_return(
        self,
        request: Request[Any, Any, Any],
        loan_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[LoanOut]:
        """Borrower says "I gave it back"."""
        return await self._transition(
            request, loan_id, lambda r: c.StartReturn(loan_id=loan_id, actor_id=r), idempotency_key
        )

    @post(
        "/{loan_id:uuid}/confirm-return",
        operation_id="confirmReturn",
        status_code=200,
        opt=contract(
            LoanNotFound,
            NotTheLender,
            InvalidLoanTransition,
            BookOnLoan,
            auth="reader",
            command="library",
        ),
    )
    async def confirm_return(
        self,
        request: Request[Any, Any, Any],
        loan_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[LoanOut]:
        """Lender says "I have it"; the book is available again."""
        return await self._transition(
            request,
            loan_id,
            lambda r: c.ConfirmReturn(loan_id=loan_id, actor_id=r),
            idempotency_key,
        )
