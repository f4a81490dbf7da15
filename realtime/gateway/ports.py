"""What the gateway needs from outside ``realtime``, as small protocols: the WebSocket, the inbox
read model and the Chat application. The composition root (``api``) satisfies them; tests pass
in-memory fakes."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID


class Socket(Protocol):
    """One WebSocket, as the gateway sees it (``api.http.controllers.ws`` adapts Litestar's)."""

    async def receive(self) -> str | bytes | None:
        """The next message: ``str`` (text), ``bytes`` (binary) or ``None`` (disconnected)."""
        ...

    async def send(self, text: str) -> None:
        """Send one text message. Raises when the connection is gone. A coroutine function:
        the gateway steps the coroutine itself, outside any task, and hands it to a task
        only if it has to wait (see ``Session.push``)."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class Shared:
    """One text frame for many sockets (a room message, a ping): ``text``, and ``wire``, the
    frame as encoded for the connection by the first ``DirectSocket`` that wrote it (``None``
    until then; every socket of a node encodes a text frame the same way), so a broadcast is
    encoded once, not once per socket."""

    __slots__ = ("text", "wire")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wire: bytes | None = None


class SharedRun:
    """Several text frames for many sockets, in order (room messages that reached the node
    in one loop iteration): ``texts``, and ``wire``, all of them encoded for the connection
    back to back by the first ``DirectSocket`` that wrote them (``None`` until then), so a
    socket gets them in one transport write (one ``send`` syscall, one read for its client)
    instead of one per frame."""

    __slots__ = ("texts", "wire")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.wire: bytes | None = None


class DirectSocket(Socket, Protocol):
    """A ``Socket`` that can also write a frame at once, without a coroutine (what the
    ``websockets`` library's ``broadcast()`` does). ``Session`` uses ``send_now`` when the
    socket has it, else ``send``."""

    def send_now(self, frame: str | Shared | SharedRun) -> bool:
        """Write ``frame`` (or all the frames of a ``SharedRun``, in one write) now if the
        connection takes it without waiting (open, its transport's buffer under the
        high-water mark). ``False``: nothing was written (the caller then uses ``send``,
        which waits or raises)."""
        ...


class InboxFeed(Protocol):
    """The inbox read model, as the gateway reads it (``projections.inbox.InboxQueries``)."""

    def items(self, reader_id: UUID, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """``(items, head)``: items with ``seq > after`` oldest first, and the head seq."""
        ...

    def head(self, reader_id: UUID) -> int: ...


class ChatPort(Protocol):
    """The Chat application (``domain.chat.Chat``): runs in a worker thread."""

    def handle(self, command: Any) -> Any: ...

    def room(self, room_id: UUID) -> Any: ...


CHAT_SENDS = "chat_sends"
"""The rule of ``chat.send`` frames per reader (the same as HTTP ``POST …/messages``)."""
ROOM_SENDS = "room_sends"
"""The rule of ``room.send`` frames per reader."""


class SendLimits(Protocol):
    """Per-reader limits of sends (``api.adapters.ratelimit.RateLimits``, the one HTTP uses:
    a reader's sends over HTTP and over all its sockets on a node share one count)."""

    def take(self, name: str, *identifiers: str) -> int | None:
        """Count one send of ``identifiers`` against rule ``name`` (``CHAT_SENDS``,
        ``ROOM_SENDS``): ``None`` when allowed (or the rule is off), else the seconds (≥ 1)
        until one more is allowed; a refused send is not counted."""
        ...


__all__ = [
    "CHAT_SENDS",
    "ROOM_SENDS",
    "ChatPort",
    "DirectSocket",
    "InboxFeed",
    "SendLimits",
    "Shared",
    "Socket",
]
