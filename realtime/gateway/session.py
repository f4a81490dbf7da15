"""One socket of one reader: its state, its bounded outbound queue, writing and closing.

Sessions
    Each authenticated socket is a ``Session`` of one reader; a reader may have several (one per
    device), up to ``max_sockets_per_reader`` on a node (the oldest is then closed with 4000,
    by the ``Gateway``). A frame for a socket with nothing queued is written at once, in the
    caller's step (no task or loop iteration per frame, as ``websockets.broadcast`` does). Only
    when a write has to wait (the client reads slowly and the transport's buffer is full) does
    a writer task take over: the frames pushed meanwhile wait in the socket's bounded outbound
    queue (a ``deque`` of at most ``queue_size`` frames, 256), the writer drains it all per
    wake-up and ends once it is empty, so frames leave in the order they were pushed and an
    idle socket has no task of its own besides its reader. A frame for many sockets (a room
    message, a ping) is one ``Shared``: its text, and its bytes on the wire encoded once by
    the first socket that writes it; room messages that arrived together are one ``SharedRun``,
    all written in one go (``push_run``). A socket that can write without a coroutine
    (``DirectSocket.send_now``: the server's transport takes the bytes, nothing to wait for)
    is written that way; otherwise, or when that socket's transport is full, ``send``.

Backpressure
    A live frame that finds the queue full closes the socket with 4008 "slow consumer" (never
    an unbounded buffer); the client resumes from its last ``seq`` and loses nothing. A replay
    waits for queue space instead (``put_waiting``), for at most ``send_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from domain.errors import DomainError
from realtime.gateway.ports import SendLimits, Shared, SharedRun, Socket
from realtime.protocol import CloseCode, Error, ReaderRef, encode_text

NO_ROOMS: frozenset[str] = frozenset()
"""``Session.rooms`` of a socket in no room yet (shared; ``Rooms.join`` makes its own set)."""


@dataclass
class _Close:
    """Queued after the frames to flush before closing (``Session.close(flush=True)``)."""

    code: int
    reason: str


class Session:
    """One socket of one reader on this node. The gateway's parts keep its state here; its
    own methods write to the socket (``push``, ``put_waiting``) and close it (``close``).

    ``queue``: the frames (``str``) waiting for the writer, oldest first, at most
    ``queue_size`` (then a close marker may follow; ``()`` until a frame first waits);
    ``rooms``: the names of the rooms it is in (``NO_ROOMS`` until it first joins one);
    ``done``: a future resolved when the socket's writing side has ended (closed, or the
    client went away)."""

    __slots__ = (
        "auth_id",
        "closed",
        "close_code",
        "closing",
        "done",
        "expires_at",
        "flushing",
        "held",
        "held_overflow",
        "id",
        "key",
        "last_received",
        "last_seq",
        "next_ping",
        "online",
        "queue",
        "queue_size",
        "reader",
        "replay_task",
        "replaying",
        "rooms",
        "send_now",
        "serving",
        "socket",
        "space",
        "writer",
    )

    _ids = itertools.count(1)

    def __init__(self, reader: ReaderRef, socket: Socket, queue_size: int) -> None:
        self.id = next(self._ids)
        self.reader = reader
        self.key = str(reader.id)
        self.socket = socket
        self.send_now: Callable[[str | Shared | SharedRun], bool] | None = getattr(
            socket, "send_now", None
        )
        # no deque until a frame has to wait (an empty deque is ~0.6 KB, most sockets never
        # queue anything)
        self.queue: deque[str | _Close] | tuple[()] = ()
        self.queue_size = queue_size
        self.space: asyncio.Future[None] | None = None  # a replay waiting for queue space
        self.last_seq = 0
        self.replaying = True  # until the first (re)play has run: live items are held
        self.held: dict[int, str] = {}
        self.held_overflow = False
        self.replay_task: asyncio.Task[None] | None = None
        # no set until the socket joins a room (an empty set is 216 B; most never do)
        self.rooms: set[str] | frozenset[str] = NO_ROOMS
        self.last_received = time.monotonic()
        self.next_ping = 0.0  # loop time of the next heartbeat check
        self.closed = False
        self.close_code: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.flushing = False  # a close is queued behind the frames already queued
        self.closing: asyncio.Task[None] | None = None  # an immediate close in progress
        self.writer: asyncio.Task[None] | None = None  # while the queue is being written
        self.serving: asyncio.Task[Any] | None = None  # the task reading this socket
        self.online = False  # counted in reader presence (undone when it ends)
        self.auth_id: str | None = None  # the login session it was opened with (revocation)
        self.expires_at: float | None = None  # wall-clock time (time.time()) it expires

    def end_session(self, *, replaced: bool = False) -> None:
        """The login session ended (logout, revocation, expiry): one ``error`` frame
        ``session_ended`` after the frames queued, then close 4401. ``replaced``: a login on
        another device ended it (``LIUDONG_SINGLE_DEVICE``): ``session_replaced``, 4409."""
        if self.closed:
            return
        if replaced:
            error = Error(
                code="session_replaced",
                message="You logged in on another device; this session ended.",
            )
            code, reason = CloseCode.SESSION_REPLACED, "session_replaced"
        else:
            error = Error(code="session_ended", message="This session ended; log in again.")
            code, reason = CloseCode.UNAUTHORIZED, "session_ended"
        self.push(encode_text(error))
        self.close(code, reason, flush=True)

    def __repr__(self) -> str:
        return f"<Session {self.id} reader={self.key} last_seq={self.last_seq}>"

    # -- sending ------------------------------------------------------------------------------

    def push(self, frame: str | Shared) -> bool:
        """Send or queue one frame (its text, or a ``Shared`` frame of many sockets); a full
        queue closes the socket (4008). Returns False if dropped (closed, full, or the
        client is gone).

        A socket with nothing queued and no writer is written at once, in the caller's
        step (as ``websockets.broadcast`` does; no task, no loop iteration per frame):
        with ``send_now`` when the socket has it and its transport takes the bytes, else by
        stepping ``send``. Only a send that has to wait (the transport's buffer is full)
        goes on in a writer task, and the frames pushed meanwhile queue behind it."""
        if self.closed:
            return False
        queue = self.queue
        text = frame if type(frame) is str else frame.text  # type: ignore[union-attr]
        if self.writer is None and not queue:
            send_now = self.send_now
            if send_now is not None and send_now(frame):
                return True
            sending = self.socket.send(text)
            try:
                waiting_on = sending.send(None)
            except StopIteration:
                return True
            except Exception:  # the client went away
                self._gone()
                return False
            self.writer = asyncio.create_task(self._write_loop((sending, waiting_on)))
            return True
        if len(queue) >= self.queue_size:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        if type(queue) is tuple:
            queue = self.queue = deque()
        queue.append(text)  # type: ignore[union-attr]
        if self.writer is None:
            self.writer = asyncio.create_task(self._write_loop())
        return True

    def push_run(self, run: SharedRun) -> bool:
        """``push`` each frame of ``run`` in order, in one transport write when the socket
        has nothing queued and ``send_now`` takes them all (else frame by frame, as
        ``push``: a full queue closes the socket, 4008). Returns False if any was dropped."""
        if self.closed:
            return False
        if self.writer is None and not self.queue:
            send_now = self.send_now
            if send_now is not None and send_now(run):
                return True
        return all(self.push(text) for text in run.texts)  # stops at the first dropped

    async def put_waiting(self, text: str, timeout: float) -> None:
        """Queue one frame, waiting up to ``timeout`` s for space (replays); then the
        socket is a slow consumer (4008) and the caller is cancelled. A closed session
        takes nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.queue) >= self.queue_size and not self.closed:
            space = self.space = loop.create_future()
            try:
                await asyncio.wait_for(space, deadline - loop.time())
            except TimeoutError:
                self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
                raise asyncio.CancelledError from None
        self.push(text)

    def refuse(self, exc: DomainError, frame: str, ref: str | None) -> None:
        """Answer a refused client frame (``frame``: its type; ``ref``: its
        ``client_msg_id``) with an ``error`` frame of the domain error's code."""
        self.push(
            encode_text(Error(code=exc.code, message=exc.message, client_msg_id=ref, frame=frame))
        )

    def over_limit(self, limits: SendLimits | None, rule: str, frame: str, ref: str | None) -> bool:
        """Count one ``frame`` (its type; ``ref``: its ``client_msg_id``) of this socket's
        reader against ``limits``' ``rule``. Over it: answer ``error`` ``rate_limited`` with
        ``retry_after`` (seconds) and return ``True`` (the frame must then do nothing)."""
        if limits is None:
            return False
        retry_after = limits.take(rule, str(self.reader.id))
        if retry_after is None:
            return False
        self.push(
            encode_text(
                Error(
                    code="rate_limited",
                    message=f"Too many sends; try again in {retry_after} s.",
                    client_msg_id=ref,
                    frame=frame,
                    retry_after=retry_after,
                )
            )
        )
        return True

    # -- closing ------------------------------------------------------------------------------

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close the socket with ``code``. ``flush``: after the frames already queued (unless
        the queue is full: then at once)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if flush and len(self.queue) < self.queue_size:
            if type(self.queue) is tuple:
                self.queue = deque()
            self.queue.append(_Close(code, reason))  # type: ignore[union-attr]
            self.flushing = True
            if self.writer is None:
                self.writer = asyncio.create_task(self._write_loop())
            return
        if self.writer is not None:
            self.writer.cancel()
        if self.queue:
            self.queue.clear()
        self.closing = asyncio.create_task(self._close_now(code, reason))

    async def finish_writing(self) -> None:
        """When the session ends: let a flushing close send the queued frames and the close
        (up to 5 s), stop the writer, and wait for an immediate close in progress."""
        writer = self.writer
        if writer is not None and not writer.done():
            if self.flushing:  # let the queued frames and the close go out
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(writer), 5.0)
            writer.cancel()
        if self.closing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.closing), 6.0)

    async def _close_now(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.socket.close(code, reason), 5.0)
        except Exception:  # already gone, or the close handshake is stuck behind a full buffer
            pass
        finally:
            self._finish()

    def _finish(self) -> None:
        """The socket's writing side has ended: resolve ``done`` and stop reading it (a
        client that neither reads nor writes would otherwise hold the session)."""
        if not self.done.done():
            self.done.set_result(None)
        if self.serving is not None:
            self.serving.cancel()

    async def _write_loop(
        self, started: tuple[Coroutine[Any, Any, None], Any] | None = None
    ) -> None:
        """Finish the send ``push`` ``started`` (the coroutine and what it is waiting on),
        then write the queued frames until the queue is empty (then this task ends; ``push``
        writes or starts another), a close marker (written, then the session is done) or a
        failed send (the client went away)."""
        send = self.socket.send
        try:
            if started is not None:
                await _finish_started(*started)
            queue = self.queue  # made by the push that found this writer running, if any
            while queue:
                item = queue.popleft()
                if self.space is not None:  # a replay waits for room in the queue
                    if not self.space.done():
                        self.space.set_result(None)
                    self.space = None
                if type(item) is _Close:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.socket.close(item.code, item.reason), 5.0)
                    self._finish()
                    return
                await send(item)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away
            self._gone()
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None

    def _gone(self) -> None:
        """A send failed: the client went away."""
        self.closed = True
        if self.queue:
            self.queue.clear()
        self._finish()


async def _finish_started(sending: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Run the rest of ``sending``, a coroutine that was stepped once outside any task and
    yielded ``waiting_on`` (the asyncio future it awaits, or ``None`` for a bare yield):
    what a task does (Python 3.12's ``eager_start``). Raises what ``sending`` raises;
    cancelling this closes ``sending`` (its ``finally`` blocks run)."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((waiting_on,))  # its outcome is read by ``sending``
        except BaseException:
            sending.close()
            raise
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return


__all__ = ["NO_ROOMS", "Session"]
