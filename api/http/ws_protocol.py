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

``liudong serve`` runs uvicorn with ``ws=GatewayWebSocketProtocol`` (``api.cli.serve``); under
any other server the extension is absent and every frame goes through ``send``.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

SEND_NOW = "liudong.send_now"
"""The scope extension: ``send_now(data: bytes) -> bool`` (see ``GatewayWebSocketProtocol``)."""


def text_frame(text: str) -> bytes:
    """The bytes of one unmasked WebSocket text frame (a server's, RFC 6455 §5.2) of ``text``,
    unfragmented, no extension."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol plus ``send_now`` in the scope's extensions."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            # the ASGI task is created but has not run yet: it sees the extension
            scope["extensions"][SEND_NOW] = self.send_now

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


__all__ = ["SEND_NOW", "GatewayWebSocketProtocol", "text_frame"]
