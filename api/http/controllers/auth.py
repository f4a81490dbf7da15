"""``/v1/auth``: WeChat code login and logout."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Controller, Request, Response, post

from api.adapters.sessions import IssuedToken, SessionStoreUnavailable, hash_token, session_id
from api.adapters.wechat import WeChatConfigError, WeChatError, default_nickname
from api.bootstrap.realtime import publish_revoked
from api.http.auth import bearer_token
from api.http.controllers.common import container_of
from api.http.errors import ApiError, DatabaseUnavailable, Unauthorized
from api.http.openapi import Code, contract
from api.http.params import JSONBody, ReaderId
from api.http.schemas import LoginBody, LoginOut, ReaderOut
from domain.commands import RegisterReader
from domain.errors import ReaderForgotten
from domain.reader import reader_id_for

_WECHAT_STATUS = {
    "invalid_code": 401,
    "blocked_user": 403,
    "rate_limited": 429,
    "wechat_busy": 503,
    "wechat_unavailable": 503,
    "wechat_misconfigured": 500,
}


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["auth"]

    @post(
        "/login",
        operation_id="login",
        status_code=200,
        opt=contract(
            *[Code(s, c) for c, s in _WECHAT_STATUS.items()],
            Code(502, "wechat_error"),
            Code(503, "read_model_lag"),
            ReaderForgotten,
        ),
    )
    async def login(self, request: Request[Any, Any, Any], data: JSONBody[LoginBody]) -> LoginOut:
        """Exchange a ``wx.login`` code (or ``dev:<name>`` outside production) for a session
        token. The openId stays on the server. With ``LIUDONG_SINGLE_DEVICE`` the reader's
        other sessions end: their sockets get ``error`` ``session_replaced`` and close 4409."""
        container = container_of(request)
        # per node (api.adapters.ratelimit): 429 rate_limited with Retry-After
        container.rate_limits.hit("login_address", request.client.host if request.client else "")
        container.rate_limits.hit("login_code", data.code)
        try:
            session = await container.login.code_to_session(data.code)
        except WeChatConfigError as exc:
            raise ApiError(500, exc.code, "WeChat login is misconfigured on the server.") from exc
        except WeChatError as exc:
            raise ApiError(_WECHAT_STATUS.get(exc.code, 502), exc.code, str(exc)) from exc
        reader_id = reader_id_for(session.open_id)
        nickname = default_nickname(data.code, session.open_id)

        def register_and_issue() -> tuple[LoginOut, IssuedToken]:
            if container.wechat is not None and container.wechat.openids is not None:
                container.wechat.openids.remember(reader_id, session.open_id)  # content check
            recorded = container.library.handle(
                RegisterReader(reader_id=reader_id, nickname=nickname)
            )
            container.wait_for_shelf(recorded)
            reader = container.shelf.reader(reader_id)
            issued = container.sessions.issue(
                reader_id,
                container.settings.token_ttl,
                max_sessions=container.settings.max_sessions,
                replace_others=container.settings.single_device,
            )
            return LoginOut(
                token=issued.token,
                expires_at=issued.expires_at,
                reader=ReaderOut(
                    id=reader_id,
                    nickname=reader["nickname"] if reader else nickname,
                    avatar_url=reader["avatar_url"] if reader else "",
                ),
            ), issued

        try:
            out, issued = await anyio.to_thread.run_sync(register_and_issue)
        except SessionStoreUnavailable as exc:
            raise DatabaseUnavailable() from exc
        # beyond LIUDONG_MAX_SESSIONS the oldest sessions were revoked: close their sockets
        await publish_revoked(container, issued.evicted)
        # LIUDONG_SINGLE_DEVICE: every other session ended (session_replaced, 4409)
        await publish_revoked(container, issued.replaced, replaced=True)
        return out

    @post(
        "/logout", operation_id="logout", status_code=204, opt=contract(Code(401, "unauthorized"))
    )
    async def logout(self, request: Request[Any, Any, Any], reader_id: ReaderId) -> Response[None]:
        """Revoke the token of this request; its WebSockets, on every node, get an ``error``
        frame ``session_ended`` and close with 4401."""
        token = bearer_token(request)
        container = container_of(request)
        if token is None or not await anyio.to_thread.run_sync(container.sessions.revoke, token):
            raise Unauthorized()
        await publish_revoked(container, [session_id(hash_token(token))])
        return Response(None, status_code=204)
