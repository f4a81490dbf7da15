"""``/v1/me``: the reader's own profile, books, loans and subscribe-message grants."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import anyio
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import QueryParameter

from api.adapters.shredding import PersonalDataMapper, erase_records
from api.bootstrap.container import Container
from api.bootstrap.realtime import publish_revoked, realtime_of
from api.http.controllers.books import page_or_422
from api.http.controllers.common import (
    accepted,
    container_of,
    execute,
    position_headers,
    shelf_includes,
)
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
from realtime.relay import erase_reader_messages

log = logging.getLogger(__name__)

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

    @delete(
        "/",
        operation_id="forgetMe",
        status_code=204,
        opt=contract(ReaderNotFound, command="library"),
    )
    async def forget(self, request: Request[Any, Any, Any], reader_id: ReaderId) -> Response[None]:
        """Erase your account (PIPL art. 47, GDPR art. 17; ``docs/SECURITY.md``): records
        ``Reader.Forgotten``, destroys your data key (your nickname, avatar, the notes and
        contact details of your loan requests and the text of your messages can no longer be
        read from any event, export or rebuild), deletes your uploaded pictures and what the
        server kept of you outside the log, and revokes every session (your sockets on every
        node close with 4401). From then on you are shown as "已注销". 204
        once the read models show it (202 with ``Liudong-Position`` if they lag); signing in
        again with the same WeChat account answers 403 ``reader_forgotten``."""
        container = container_of(request)
        recorded, consistent, ended, peers = await anyio.to_thread.run_sync(
            forget_reader, container, reader_id
        )
        await publish_revoked(container, ended)
        await erase_from_stream(container, reader_id, peers)
        if not consistent:
            return accepted(recorded)  # type: ignore[return-value]
        return Response(None, status_code=204, headers=position_headers(recorded))

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


def forget_reader(
    container: Container, reader_id: Any
) -> tuple[c.Recorded, bool, list[str], list[Any]]:
    """The erasure of ``DELETE /v1/me``, in this order so that a retry finishes it: the
    event (recorded once), the key, the records outside the log (``erase_records``), the
    pictures, the sessions. Returns ``(recorded,
    consistent, revoked session ids, the readers they dealt with)``. Raises
    ``ReaderNotFound``."""
    recorded = container.library.handle(c.ForgetReader(reader_id=reader_id))
    mapper = container.library.mapper
    if isinstance(mapper, PersonalDataMapper):
        mapper.keys.destroy(reader_id)
    cached = container.library.repository.cache  # decrypted aggregates: none kept in memory
    if cached is not None:
        cached.clear()
    with container.pool.connection() as conn:
        erase_records(conn, reader_id)
        peers = [
            row["id"]
            for row in conn.execute(
                "SELECT peer_id AS id FROM inbox.conversations WHERE reader_id = %(r)s "
                "UNION SELECT lender_id FROM shelf.loans WHERE borrower_id = %(r)s "
                "UNION SELECT borrower_id FROM shelf.loans WHERE lender_id = %(r)s",
                {"r": reader_id},
            ).fetchall()
        ]
    media = container.media
    if media is not None:
        media.forget_owner(reader_id)  # every upload, attached or not
    consistent = shelf_includes(container, recorded)
    ended = container.sessions.revoke_all_ids(reader_id)
    return recorded, consistent, ended, peers


async def erase_from_stream(container: Container, reader_id: Any, peers: list[Any]) -> None:
    """Erase the forgotten reader's messages from the JetStream file store
    (``realtime.relay.erase_reader_messages``). A NATS failure is logged, not raised: those
    messages expire with the stream's ``max_age`` anyway."""
    node = realtime_of(container)
    if node is None:
        return
    try:
        erased = await erase_reader_messages(node.relay.js, reader_id, [reader_id, *peers])
    except Exception as exc:  # noqa: BLE001 - the erasure itself is done
        log.warning("erasure: JetStream messages of a reader not erased: %r", exc)
    else:
        log.info("erasure: %d JetStream message(s) erased", erased)
