"""A minimal WebSocket client for load generation (RFC 6455, text frames, no extensions).

Thousands of sockets and a hundred thousand frames a second must cost the load generator
less than the server it measures, so this is an ``asyncio.Protocol`` that parses frame
headers straight from the transport's buffer, timestamps each text frame as it arrives and
hands it to a callback; nothing else (no per-frame task, queue or UTF-8 validation).
It answers WebSocket pings and the gateway's ``{"type":"ping"}`` frames, offers no
permessage-deflate (as a WeChat client), and masks what it sends, as a client must.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import Any

TextHandler = Callable[["WsClient", bytes, float], None]

_APP_PING = b'{"type":"ping"}'
_APP_PONG = '{"type":"pong"}'


class HandshakeError(ConnectionError):
    def __init__(self, status: bytes) -> None:
        super().__init__(f"WebSocket handshake refused: {status!r}")
        self.status = status


class WsClient(asyncio.Protocol):
    """One client socket. ``frames``: text frames received; ``close_code`` once closed."""

    def __init__(self, request: bytes, on_text: TextHandler | None = None) -> None:
        self._request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._handshaken = False
        self._fragments: list[bytes] = []
        self.frames = 0
        self.close_code: int | None = None
        self.user: Any = None  # free for the scenario

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                if not self.opened.done():
                    self.opened.set_exception(HandshakeError(status))
                if self.transport is not None:
                    self.transport.close()
                return
            del buf[: end + 4]
            self._handshaken = True
            self.opened.set_result(None)
        now = time.perf_counter()
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._frame(b0, payload, now)
        if pos:
            del buf[:pos]

    # -- frames -------------------------------------------------------------------------------

    def _frame(self, b0: int, payload: bytes, now: float) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode in (0x1, 0x0):
            if not fin:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join((*self._fragments, payload))
                self._fragments.clear()
            self.frames += 1
            if payload == _APP_PING:
                self.send_text(_APP_PONG)
                return
            if self.on_text is not None:
                self.on_text(self, payload, now)
        elif opcode == 0x9:
            self._send(0xA, payload)
        elif opcode == 0x8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self._send(0x8, payload[:2])
            if self.transport is not None:
                self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = _mask(payload, mask)
        self.transport.write(head + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def close(self, code: int = 1000) -> None:
        self._send(0x8, struct.pack("!H", code))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _mask(payload: bytes, mask: bytes) -> bytes:
    length = len(payload)
    if not length:
        return b""
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")


def upgrade_request(host: str, port: int, path: str, token: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{auth}\r\n"
    ).encode()


async def connect(
    base_url: str,
    path: str = "/v1/ws",
    token: str | None = None,
    on_text: TextHandler | None = None,
    timeout: float = 30.0,
) -> WsClient:
    """Open one socket to ``base_url`` (``http://host:port``) and complete the handshake.
    Raises ``HandshakeError`` (not 101), ``OSError``, ``TimeoutError``."""
    host, _, port = base_url.split("://", 1)[1].rstrip("/").partition(":")
    loop = asyncio.get_running_loop()
    request = upgrade_request(host, int(port), path, token)
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WsClient(request, on_text), host, int(port)), timeout
    )
    await asyncio.wait_for(asyncio.shield(client.opened), timeout)
    return client


async def connect_many(
    base_url: str,
    tokens: list[str | None],
    *,
    concurrency: int = 64,
    on_text: TextHandler | None = None,
    path: str = "/v1/ws",
    first_frame: bool = True,
) -> list[WsClient]:
    """Open one socket per token, ``concurrency`` handshakes at a time. With ``first_frame``,
    each counts as open only once its first frame (the gateway's ``hello``) arrived."""
    sem = asyncio.Semaphore(concurrency)

    async def one(token: str | None) -> WsClient:
        async with sem:
            got: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def handler(client: WsClient, payload: bytes, at: float) -> None:
                if not got.done():
                    got.set_result(None)
                if on_text is not None:
                    on_text(client, payload, at)

            client = await connect(base_url, path, token, handler)
            if first_frame:
                await asyncio.wait_for(got, 30)
            return client

    return list(await asyncio.gather(*(one(t) for t in tokens)))
