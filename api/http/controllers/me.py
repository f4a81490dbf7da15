"""``/v1/me``: the reader's own profile, books, loans and subscribe-message grants."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, patch, post
from litestar.params import QueryParameter

from api.http.controllers.books import page_or_422
from api.http.controllers.common import accepted, container_of, execute, position_headers
from api.http.controllers.media import ATTACH_PROBLEMS, attach_media
from api.http.errors import ApiError
from api.http.moderation import Scene, check_texts
from api.http.openapi import MODERATED, Code, contract
from api.http.params import Cursor, JSONBody, PageSize, ReaderId
from api.http.schemas import (
    BookPage,
    GrantsBody,
    LoanPage,
    ProfilePatch,
    ReaderOut,
    SubscriptionOut,
    SubscriptionsOut,
    book_out,
    loan_out,
)
from domain import commands as c
from domain.errors import ReaderNotFound

LoanStatus = Literal["requested", "approved", "declined", "cancelled", "returning", "returned"]
RoleFilter = Annotated[
    Literal["borrower", "lender"] | None,
    QueryParameter(description="Your loans as this party only (omit: both)."),
]
StatusFilter = Annotated[LoanStatus | None, QueryParameter(description="Loans in this state only.")]


class MeController(Controller):
    path = "/v1/me"
    tags = ["me"]

    @get("/", operation_id="getMe", sync_to_thread=True, opt=contract(ReaderNotFound))
    def me(self, request: Request[Any, Any, Any], reader_id: ReaderId) -> ReaderOut:
        """Your profile."""
        row = container_of(request).shelf.reader(reader_id)
        if row is None:
            raise ReaderNotFound
        return ReaderOut(**row)

    @patch(
        "/",
        operation_id="updateMe",
        sync_to_thread=True,
        opt=contract(*MODERATED, ReaderNotFound, *ATTACH_PROBLEMS, command="library"),
    )
    def update(
        self, request: Request[Any, Any, Any], data: JSONBody[ProfilePatch], reader_id: ReaderId
    ) -> Response[ReaderOut]:
        """Change nickname and/or avatar (the mini-program's 头像昵称填写 components). The
        avatar is an outside ``avatar_url``, or a picture you uploaded (``avatar_media_id``:
        ``avatar_url`` becomes its URL; 404 ``media_not_found`` / 403 ``media_not_owned``)."""
        container = container_of(request)
        check_texts(container, reader_id, {"nickname": data.nickname}, Scene.PROFILE)
        avatar_url, avatar_media_id = data.avatar_url, None
        if data.avatar_media_id is not None:
            info = attach_media(container, data.avatar_media_id, reader_id)
            avatar_url, avatar_media_id = info.url, info.id
        command = c.ChangeProfile(
            reader_id=reader_id,
            nickname=data.nickname,
            avatar_url=avatar_url,
            avatar_media_id=avatar_media_id,
        )
        recorded, consistent = execute(container, command)
        if not consistent:
            return accepted(recorded)
        row = container.shelf.reader(reader_id)
        return Response(ReaderOut(**row), headers=position_headers(recorded))  # type: ignore[arg-type]

    @get(
        "/books",
        operation_id="myBooks",
        sync_to_thread=True,
        opt=contract(Code(422, "invalid_cursor")),
    )
    def books(
        self,
        request: Request[Any, Any, Any],
        reader_id: ReaderId,
        cursor: Cursor = None,
        limit: PageSize = 20,
    ) -> BookPage:
        """Books you published (withdrawn ones too), with their current borrower."""
        rows, next_cursor = page_or_422(
            container_of(request).shelf.search_books,
            owner_id=reader_id,
            include_withdrawn=True,
            cursor=cursor,
            limit=limit,
        )
        return BookPage(items=[book_out(r, reader_id) for r in rows], next_cursor=next_cursor)

    @get(
        "/loans",
        operation_id="myLoans",
        sync_to_thread=True,
        opt=contract(Code(422, "invalid_cursor")),
    )
    def loans(
        self,
        request: Request[Any, Any, Any],
        reader_id: ReaderId,
        role: RoleFilter = None,
        status: StatusFilter = None,
        cursor: Cursor = None,
        limit: PageSize = 20,
    ) -> LoanPage:
        """Your loans as borrower, as lender, or both; newest first."""
        rows, next_cursor = page_or_422(
            container_of(request).shelf.loans_of,
            reader_id=reader_id,
            role=role,
            status=status,
            cursor=cursor,
            limit=limit,
        )
        return LoanPage(items=[loan_out(r, reader_id) for r in rows], next_cursor=next_cursor)


def _subscriptions(container: Any, left: dict[str, int]) -> SubscriptionsOut:
    platform = container.wechat
    templates = platform.templates if platform is not None else None
    ids = sorted(templates.template_ids) if templates is not None else []
    return SubscriptionsOut(
        items=[
            SubscriptionOut(
                template_id=t,
                kinds=templates.kinds_of(t) if templates is not None else [],
                remaining=left.get(t, 0),
            )
            for t in ids
        ]
    )


class SubscriptionsController(Controller):
    """``/v1/me/subscriptions``: what the reader granted in ``wx.requestSubscribeMessage``."""

    path = "/v1/me/subscriptions"
    tags = ["me"]

    @get("/", operation_id="getSubscriptions", sync_to_thread=True)
    def grants_left(self, request: Request[Any, Any, Any], reader_id: ReaderId) -> SubscriptionsOut:
        """Every subscribe-message template the server uses, the inbox kinds it announces
        and your grants left (0: ask again with ``wx.requestSubscribeMessage`` before you
        need it). Empty when the server sends no subscribe messages."""
        container = container_of(request)
        grants = container.wechat.grants if container.wechat is not None else None
        left = grants.left(reader_id) if grants is not None else {}
        return _subscriptions(container, left)

    @post(
        "/",
        operation_id="addSubscriptions",
        status_code=200,
        sync_to_thread=True,
        opt=contract(Code(422, "unknown_template")),
    )
    def add_grants(
        self, request: Request[Any, Any, Any], data: JSONBody[GrantsBody], reader_id: ReaderId
    ) -> SubscriptionsOut:
        """Report what ``wx.requestSubscribeMessage`` answered: ``count`` one-time grants
        per template the reader accepted (leave out the ones answered ``reject``/``ban``).
        Each away-from-the-app inbox item of that template's kinds then sends one subscribe
        message and uses one grant. 422 ``unknown_template`` (nothing added) for a template
        the server does not use."""
        container = container_of(request)
        platform = container.wechat
        templates = platform.templates if platform is not None else None
        known = templates.template_ids if templates is not None else frozenset()
        unknown = sorted({g.template_id for g in data.grants} - known)
        if unknown or platform is None or platform.grants is None:
            raise ApiError(
                422,
                "unknown_template",
                "This server sends no subscribe message with these templates.",
                [{"field": "grants", "template_id": t} for t in unknown],
            )
        left = platform.grants.add(reader_id, [(g.template_id, g.count) for g in data.grants])
        return _subscriptions(container, left)
