"""``GET /v1/ws``: the WebSocket of a mini-program (protocol: ``docs/REALTIME.md``).

Authentication: ``Authorization: Bearer <token>`` (``wx.connectSocket({header})``), or
``?token=<token>`` for clients that cannot set headers (browsers). The socket is accepted
first and then, when the token is missing, invalid, expired or revoked, sent one ``error``
frame (``code``: ``missing_token`` | ``invalid_token`` | ``token_expired`` |
``token_revoked``) and closed with **4401**: a WeChat client cannot read an HTTP 401 of a
refused handshake, but it does see a close code. ``?after=<seq>`` resumes on connect (a
value that is not a non-negative integer: ``error`` ``invalid_after`` + close 4400).

Everything after authentication is the gateway's (``realtime.gateway``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from api.bootstrap.realtime import realtime_of
from api.http.auth import authenticate_token, bearer_token
from api.http.errors import ApiError, Unauthorized
from realtime.protocol import CloseCode, Error, encode_text


class LitestarSocket:
    """``realtime.gateway.Socket`` over a Litestar ``WebSocket``: frames go straight to the
    connection's ASGI ``send`` (one event dict per frame, not ``send_text``'s layers)."""

    __slots__ = ("_send", "socket")

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self.socket = socket
        self._send = socket.send

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

    async def close(self, code: int, reason: str) -> None:
        await self.socket.close(code, reason)


async def _refuse(socket: WebSocket[Any, Any, Any], code: int, error: str, message: str) -> None:
    await socket.accept()
    await socket.send_text(encode_text(Error(code=error, message=message)))
    await socket.close(code, error)


@websocket("/v1/ws", name="ws", opt={"exclude_from_auth": True})
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """The reader's realtime socket: inbox events, chat sends and read receipts, rooms,
    the presence of conversation peers."""
    container = socket.app.state.container
    token = bearer_token(socket) or socket.query_params.get("token") or None  # type: ignore[arg-type]
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
        reader_id: UUID = await anyio.to_thread.run_sync(authenticate_token, container, token)
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
    await node.gateway.serve(LitestarSocket(socket), reader_id, after)


__all__ = ["LitestarSocket", "ws_endpoint"]
