"""``/v1/me``: the reader's own profile, books and loans."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, Response, get, patch
from litestar.params import Parameter

from api.http.controllers.books import CursorParam, Limit, page_or_422
from api.http.controllers.common import accepted, container_of, execute, position_headers
from api.http.moderation import Scene, check_texts
from api.http.schemas import BookOut, LoanOut, Page, ProfilePatch, ReaderOut, book_out, loan_out
from domain import commands as c
from domain.errors import ReaderNotFound

LoanStatus = Literal["requested", "approved", "declined", "cancelled", "returning", "returned"]


class MeController(Controller):
    path = "/v1/me"
    tags = ["me"]

    @get("/", operation_id="getMe", sync_to_thread=True)
    def me(self, request: Request[Any, Any, Any], reader_id: UUID) -> ReaderOut:
        """Your profile."""
        row = container_of(request).shelf.reader(reader_id)
        if row is None:
            raise ReaderNotFound
        return ReaderOut(**row)

    @patch("/", operation_id="updateMe", sync_to_thread=True)
    def update(
        self, request: Request[Any, Any, Any], data: ProfilePatch, reader_id: UUID
    ) -> Response[Any]:
        """Change nickname and/or avatar (the mini-program's 头像昵称填写 components)."""
        container = container_of(request)
        check_texts(container, reader_id, {"nickname": data.nickname}, Scene.PROFILE)
        recorded, consistent = execute(
            container,
            c.ChangeProfile(reader_id=reader_id, nickname=data.nickname, avatar_url=data.avatar_url),
        )
        if not consistent:
            return accepted(recorded)
        row = container.shelf.reader(reader_id)
        return Response(ReaderOut(**row), headers=position_headers(recorded))  # type: ignore[arg-type]

    @get("/books", operation_id="myBooks", sync_to_thread=True)
    def books(
        self, request: Request[Any, Any, Any], reader_id: UUID,
        cursor: CursorParam = None, limit: Limit = 20,
    ) -> Page[BookOut]:  # fmt: skip
        """Books you published (withdrawn ones too), with their current borrower."""
        rows, next_cursor = page_or_422(
            container_of(request).shelf.search_books,
            owner_id=reader_id, include_withdrawn=True, cursor=cursor, limit=limit,
        )  # fmt: skip
        return Page(items=[book_out(r, reader_id) for r in rows], next_cursor=next_cursor)

    @get("/loans", operation_id="myLoans", sync_to_thread=True)
    def loans(
        self, request: Request[Any, Any, Any], reader_id: UUID,
        role: Annotated[Literal["borrower", "lender"] | None, Parameter()] = None,
        status: LoanStatus | None = None,
        cursor: CursorParam = None, limit: Limit = 20,
    ) -> Page[LoanOut]:  # fmt: skip
        """Your loans as borrower, as lender, or both; newest first."""
        rows, next_cursor = page_or_422(
            container_of(request).shelf.loans_of,
            reader_id=reader_id, role=role, status=status, cursor=cursor, limit=limit,
        )  # fmt: skip
        return Page(items=[loan_out(r, reader_id) for r in rows], next_cursor=next_cursor)
