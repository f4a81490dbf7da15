"""``GET /v1/ws``: the WebSocket of a mini-program (protocol: ``docs/REALTIME.md``).

Authentication: ``Authorization: Bearer <token>`` (``wx.connectSocket({header})``), or
``?ticket=<ticket>`` for clients that cannot set headers (browsers): a single-use ticket of
at most 60 s from ``POST /v1/ws/tickets``. A session token in the URL (``?token=``, accepted
before) is refused (``error`` ``token_in_url`` + close 4400): URLs end up in logs. The socket
is accepted first and then, when the token or ticket is missing, invalid, expired or revoked,
sent one ``error`` frame (``code``: ``missing_token`` | ``invalid_token`` | ``invalid_ticket``
| ``token_expired`` | ``token_revoked``) and closed with **4401**: a WeChat client cannot read
an HTTP 401 of a refused handshake, but it does see a close code. ``?after=<seq>`` resumes on
connect (a value that is not a non-negative integer: ``error`` ``invalid_after`` + close 4400).

When the login session ends (logout, revocation, too many sessions, expiry) the socket gets
``error`` ``session_ended`` and close 4401, on whichever node it is.

Everything after authentication is the gateway's (``realtime.gateway``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, WebSocket, post
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import WebsocketRouteHandler
from litestar.types import ExceptionHandlersMap

from api.adapters.sessions import (
    TICKET_TTL,
    Authenticated,
    InvalidSession,
    SessionStoreUnavailable,
)
from api.bootstrap.realtime import realtime_of
from api.http.auth import authenticate_socket, bearer_token, parse_bearer
from api.http.controllers.common import container_of
from api.http.errors import ApiError, DatabaseUnavailable, Unauthorized
from api.http.openapi import Code, contract
from api.http.params import ReaderId
from api.http.ws_protocol import SEND_NOW, text_frame
from realtime.gateway.ports import Shared, SharedRun
from realtime.protocol import CloseCode, Error, encode_text


class TicketOut(msgspec.Struct, frozen=True, kw_only=True):
    """A single-use WebSocket ticket: connect with ``GET /v1/ws?ticket=<ticket>`` within
    ``expires_in`` seconds."""

    ticket: str
    expires_in: int


@post(
    "/v1/ws/tickets",
    operation_id="create_ws_ticket",
    status_code=201,
    tags=["realtime"],
    opt=contract(Code(401, "token_revoked")),
)
async def create_ws_ticket(request: Request[Any, Any, Any], reader_id: ReaderId) -> TicketOut:
    """A single-use ticket (≤ 60 s, stored hashed) to open ``GET /v1/ws?ticket=`` from a
    client that cannot send an ``Authorization`` header (a browser). The socket belongs to
    this request's session: it closes when the session ends."""
    container = container_of(request)
    token = bearer_token(request)
    assert token is not None  # the reader_id dependency authenticated it
    try:
        ticket = await anyio.to_thread.run_sync(container.sessions.issue_ticket, token)
    except SessionStoreUnavailable as exc:
        raise DatabaseUnavailable() from exc
    except InvalidSession as exc:  # revoked since the dependency checked it
        raise Unauthorized("token_revoked", str(exc)) from exc
    return TicketOut(ticket=ticket, expires_in=TICKET_TTL)


class LitestarSocket:
    """``realtime.gateway.DirectSocket`` over a Litestar ``WebSocket``: frames go straight to
    the connection's ASGI ``send`` (one event dict per frame, not ``send_text``'s layers),
    or, when the server offers it (``api.http.ws_protocol.SEND_NOW``) and the transport can
    take them, are written at once by ``send_now``; a ``Shared`` frame is encoded once for
    all the sockets it goes to."""

    __slots__ = ("_send", "_send_now", "socket")

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self.socket = socket
        self._send = socket.send
        extensions: dict[str, Any] = dict(socket.scope.get("extensions") or {})
        self._send_now: Callable[[bytes], bool] | None = extensions.get(SEND_NOW)

    async def receive(self) -> str | bytes | None:
        try:
            message = await self.socket.receive()
        except WebSocketDisconnect:
            return None
        if message["type"] != "websocket.receive":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    def send_now(self, frame: str | Shared | SharedRun) -> bool:
        send_now = self._send_now
        if send_now is None:
            return False
        if type(frame) is str:
            return send_now(text_frame(frame))
        wire = frame.wire  # type: ignore[union-attr]
        if wire is None:
            if type(frame) is Shared:
                wire = frame.wire = text_frame(frame.text)
            else:
                texts = frame.texts  # type: ignore[union-attr]
                wire = frame.wire = b"".join([text_frame(text) for text in texts])  # type: ignore[union-attr]
        return send_now(wire)

    async def close(self, code: int, reason: str) -> None:
        await self.socket.close(code, reason)


def _authorization(scope: Any) -> str | None:
    """The ``Authorization`` header of the handshake, read from the ASGI scope (``headers``
    of Litestar's ``WebSocket`` would build a ``Headers`` that stays in the scope for the
    socket's life, ~1.5 KB)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None


async def _refuse(socket: WebSocket[Any, Any, Any], code: int, error: str, message: str) -> None:
    await socket.accept()
    await socket.send_text(encode_text(Error(code=error, message=message)))
    await socket.close(code, error)


class _WebsocketHandler(WebsocketRouteHandler):
    """Litestar's ``websocket`` route handler, its exception handlers resolved once: Litestar
    merges its layers' into a new dict per connection (2.25's ``resolve_exception_handlers``)
    and keeps it in the scope for the socket's life (~0.6 KB per socket)."""

    __slots__ = ("_exception_handlers",)

    def resolve_exception_handlers(self) -> ExceptionHandlersMap:
        try:
            return self._exception_handlers
        except AttributeError:  # the first connection (the app registered a copy of this)
            self._exception_handlers: ExceptionHandlersMap = super().resolve_exception_handlers()
            return self._exception_handlers


@_WebsocketHandler("/v1/ws", name="ws", opt={"exclude_from_auth": True})
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """The reader's realtime socket: inbox events, chat sends and read receipts, rooms,
    the presence of conversation peers."""
    container = socket.app.state.container
    if socket.query_params.get("token"):
        await _refuse(
            socket,
            CloseCode.BAD_REQUEST,
            "token_in_url",
            "A session token is not accepted in the URL; send it in the Authorization header, "
            "or connect with ?ticket= from POST /v1/ws/tickets.",
        )
        return
    token = parse_bearer(_authorization(socket.scope))
    ticket = socket.query_params.get("ticket") or None
    raw_after = socket.query_params.get("after")
    after: int | None = None
    if raw_after not in (None, ""):
        try:
            after = int(str(raw_after))
        except ValueError:
            after = -1
        if after < 0:
            await _refuse(
                socket, CloseCode.BAD_REQUEST, "invalid_after", "after is a seq (an integer ≥ 0)."
            )
            return
    try:
        auth: Authenticated = await anyio.to_thread.run_sync(
            authenticate_socket, container, token, ticket
        )
    except Unauthorized as exc:
        await _refuse(socket, CloseCode.UNAUTHORIZED, exc.code, exc.detail)
        return
    except ApiError as exc:  # the session store is unavailable
        await _refuse(socket, CloseCode.TRY_AGAIN_LATER, exc.code, exc.detail)
        return
    node = realtime_of(container)
    if node is None:
        await _refuse(
            socket, CloseCode.TRY_AGAIN_LATER, "unavailable", "Realtime is not running here."
        )
        return
    await socket.accept()
    # nothing reads the handshake's headers any more; the scope lives as long as the socket
    socket.scope["headers"] = []
    await node.gateway.serve(
        LitestarSocket(socket),
        auth.reader_id,
        after,
        auth_id=auth.session_id,
        expires_at=auth.expires_at.timestamp(),
    )


__all__ = ["LitestarSocket", "TicketOut", "create_ws_ticket", "ws_endpoint"]
