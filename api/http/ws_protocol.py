"""uvicorn's WebSocket protocol for ``/v1/ws``, with a direct write for the gateway.

ASGI has one way out for a frame, ``await send({"type": "websocket.send", ...})``: for a room
message to 1,000 sockets that is 1,000 coroutines through Litestar's two send wrappers and
uvicorn's ``send`` (an ``Event`` wait, a ``Frame`` built, serialised and joined), around the
one thing that costs: the transport's write. ``GatewayWebSocketProtocol`` is uvicorn's
``websockets-sansio`` protocol that also offers, in the connection's ASGI scope
(``scope["extensions"][SEND_NOW]``, the ASGI way for a server to offer more), a function
writing an already encoded frame to the transport at once, as the ``websockets`` library's
own ``broadcast()`` does. It writes only when ``send`` would have written without waiting
(the connection open, no close sent or received, no extension negotiated, the transport
under its high-water mark) and otherwise returns ``False``, so that ``send`` keeps every rule
it has (waiting for the buffer to drain, raising once the client is gone).

Memory: an idle socket of uvicorn's protocol holds an ``asyncio.Queue`` of received events
(three deques and an ``Event`` with a fourth, ~3 KB), an ``Event`` for the write buffer (a
deque, ~0.7 KB) and the parsed handshake request and response with their headers (~3 KB),
kept for the connection's life (the request also by ``websockets``' parser). Here the
queue and the event are ``ReceiveQueue`` and ``Gate`` (what uvicorn calls of them, without
a deque each), the handshake's request and response are let go once the connection is
accepted, uvicorn's 37 attributes are slots (not an instance dict of ~1.6 KB), and
``receive`` waits on the queue itself (one coroutine frame less in the app task's chain).

``liudong serve`` runs uvicorn with ``ws=GatewayWebSocketProtocol`` (``api.cli.serve``); under
any other server the extension is absent and every frame goes through ``send``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

SEND_NOW = "liudong.send_now"
"""The scope extension: ``send_now(data: bytes) -> bool`` (see ``GatewayWebSocketProtocol``)."""


def text_frame(text: str) -> bytes:
    """The bytes of one unmasked WebSocket text frame (a server's, RFC 6455 §5.2) of ``text``,
    unfragmented, no extension."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class Gate:
    """What uvicorn's protocol uses of ``asyncio.Event`` (``set``, ``clear``, ``is_set``,
    ``wait``), with its waiters in a list made only when someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        """Return ``True`` once set (at once if it is)."""
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class ReceiveQueue:
    """What uvicorn's protocol uses of its ``asyncio.Queue`` of received ASGI events
    (``put_nowait``, ``get``, ``empty``; unbounded, as uvicorn's is), for the one task that
    receives (the ASGI app's), without the queue's three deques and ``Event``."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def arrival(self) -> asyncio.Future[None]:
        """A future resolved by the next ``put_nowait`` (the event stays in the queue: a
        receiver cancelled meanwhile loses nothing). Raises ``RuntimeError`` if another
        receiver is already waiting (uvicorn's ``receive`` has one caller: the app)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("ReceiveQueue.get: one receiver at a time")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def get_nowait(self) -> Any:
        """The oldest event. Raises ``IndexError`` if there is none."""
        return self._items.pop(0)

    async def get(self) -> Any:
        """The oldest event, waiting for one. Raises ``RuntimeError`` if another task is
        already waiting."""
        while not self._items:
            await self.arrival()
        return self._items.pop(0)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol plus ``send_now`` in the scope's extensions,
    and a smaller footprint per connection (see the module docstring)."""

    # uvicorn's protocol (0.55) sets 37 attributes per connection: past CPython's 30 shared
    # keys, its instance dict is a table of its own (~1.6 KB); as slots they are ~0.3 KB. An
    # attribute a later uvicorn adds still works (in the dict; tests/unit/test_ws_protocol.py
    # says so).
    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]
        self.writable.set()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.request = None  # type: ignore[assignment]  # the scope has what the app reads
        conn = self.conn
        if conn.state is State.CONNECTING and not conn.reader.buffer:
            # websockets' handshake parser goes on parsing frames as a generator that keeps
            # the parsed request (a local) for the connection's life; with nothing received
            # after the request (a client waits for the 101: RFC 6455 §4.1) a new frame
            # parser is in the same state and keeps nothing
            parser = Protocol.parse(conn)
            next(parser)
            conn.parser = parser
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            # the ASGI task is created but has not run yet: it sees the extension
            scope["extensions"][SEND_NOW] = self.send_now

    async def receive(self) -> Any:
        """uvicorn's ``receive`` with ``ReceiveQueue.get`` inlined: one coroutine frame less
        per idle socket (~0.2 KB) in the chain its app's task waits on."""
        queue = self.queue
        while queue.empty():
            await queue.arrival()  # type: ignore[attr-defined]
        message = queue.get_nowait()
        if self.read_paused and queue.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and self.response is not None:
            self.response = None  # type: ignore[assignment]  # sent (accepted or refused)

    def send_now(self, data: bytes) -> bool:
        """Write ``data``, one encoded frame (``text_frame``), to the transport if ``send``
        would write it without waiting; ``False`` (nothing written) otherwise."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()  # over the high-water mark: let send wait
            or self.conn.state is not State.OPEN
            or self.conn.extensions  # a negotiated extension would change the frame
        ):
            return False
        transport = self.transport
        if transport.is_closing():
            return False
        transport.write(data)
        return True


__all__ = ["SEND_NOW", "Gate", "GatewayWebSocketProtocol", "ReceiveQueue", "text_frame"]
