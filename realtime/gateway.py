"""The WebSocket gateway of one API node: sessions, fan-out, resume, rooms, heartbeat.

Sessions
    Each authenticated socket is a ``Session`` of one reader; a reader may have several (one per
    device), up to ``max_sockets_per_reader`` on a node (the oldest is then closed with 4000).
    A frame for a socket with nothing queued is written at once, in the caller's step (no
    task or loop iteration per frame, as ``websockets.broadcast`` does). Only when a write
    has to wait (the client reads slowly and the transport's buffer is full) does a writer
    task take over: the frames pushed meanwhile wait in the socket's bounded outbound queue
    (a ``deque`` of at most ``queue_size`` frames, 256), the writer drains it all per
    wake-up and ends once it is empty, so frames leave in the order they were pushed and an
    idle socket has no task of its own besides its reader. A frame for many sockets (a room
    message, a ping) is one ``str``, encoded once.

Fan-out
    One core NATS subscription per node on ``liudong.inbox.*`` (the relay publishes every inbox
    item there through JetStream, ``realtime.relay``). A message is offered to every local
    session of its reader, identified by its ``Nats-Msg-Id`` ``<reader>:<seq>``.

Order, gaps and duplicates (per socket)
    A session knows the last ``seq`` it queued (``last_seq``). A live item with
    ``seq <= last_seq`` is dropped (duplicate); ``last_seq + 1`` is queued; a higher ``seq``
    means something was missed (NATS is at-most-once between the stream and this node) and
    starts a replay from the inbox table, which is the source of truth.

Resume / replay
    ``resume{after}`` (or ``?after=`` on connect; without either, the socket starts at the
    reader's head given in ``hello``) sets ``last_seq = after`` and reads ``items(after)`` from
    the inbox in pages of ``replay_page``. Live items arriving meanwhile are held (by seq) and
    released after the database pages, skipping those already sent, then the socket is live.
    The replay waits for queue space (a slow reader slows it down; stuck for ``send_timeout``
    seconds, it is a slow consumer).

Backpressure
    A live frame that finds the queue full closes the socket with 4008 "slow consumer" (never
    an unbounded buffer); the client resumes from its last ``seq`` and loses nothing.

Heartbeat
    The server sends ``ping`` every ``heartbeat`` seconds (25); any frame from the client
    counts as a sign of life, and a socket silent for 1.5 intervals (it missed two pings) is
    closed with 4012. Clients answer ``ping`` with ``pong`` and may send ``ping`` (answered
    with ``pong``). One timer per node sweeps the sockets whose ping is due (at most
    ``heartbeat / 10`` seconds late), instead of a task and a timer per socket. (uvicorn's
    own protocol-level pings are off: ``liudong serve`` runs it with ``ws_ping_interval=None``.)

Reader presence
    With a ``ReaderPresence`` (``realtime.reader_presence``), every authenticated socket counts
    its reader online (on all nodes) until it closes; cluster-wide transitions are sent as
    ``presence`` frames to the sockets of the reader's conversation peers (``peers``, cached
    ``peer_ttl`` seconds). ``presence.query`` is answered for peers only; other ids are
    reported as ``unknown``. An id that is not a cached peer makes the querier's peers be
    read again (at most every ``peer_refresh`` seconds): a conversation opened a moment ago
    counts at once.

Malformed frames (not JSON, binary, unknown type, invalid fields) are answered with an
``error`` frame and the socket keeps serving; a frame over 16 KiB gets ``error`` and close
1009. Nothing a client sends can raise out of its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from domain import chat_commands as cc
from domain.chat import room_id_for
from domain.errors import DomainError
from realtime.presence import Presence
from realtime.protocol import (
    MAX_FRAME_BYTES,
    Ack,
    AnyClientFrame,
    ChatSend,
    ClientPing,
    ClientPong,
    CloseCode,
    Error,
    FrameError,
    Hello,
    Ping,
    Pong,
    PresenceQuery,
    PresenceStates,
    Read,
    ReaderOnline,
    ReaderRef,
    Resume,
    RoomJoin,
    RoomJoined,
    RoomLeave,
    RoomLeft,
    RoomMessage,
    RoomPresence,
    RoomSend,
    decode_client_frame,
    encode,
    encode_text,
)
from realtime.reader_presence import PeerCache, PresenceFanout, ReaderPresence
from realtime.relay import MSG_ID, SUBJECT_PREFIX, event_frame, parse_msg_id
from realtime.threads import in_thread

log = logging.getLogger(__name__)

ROOM_SUBJECT_PREFIX = "liudong.room."


# -- ports --------------------------------------------------------------------------------------


class Socket(Protocol):
    """One WebSocket, as the gateway sees it (``api.http.controllers.ws`` adapts Litestar's)."""

    async def receive(self) -> str | bytes | None:
        """The next message: ``str`` (text), ``bytes`` (binary) or ``None`` (disconnected)."""
        ...

    async def send(self, text: str) -> None:
        """Send one text message. Raises when the connection is gone. A coroutine function:
        the gateway steps the coroutine itself, outside any task, and hands it to a task
        only if it has to wait (see ``Gateway.push``)."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


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


@dataclass
class GatewayConfig:
    heartbeat: float = 25.0
    """Seconds between server pings; silent 1.5× this long → close 4012."""
    queue_size: int = 256
    """Frames queued per socket before it is a slow consumer (4008)."""
    replay_page: int = 200
    """Inbox items read per database query during a replay."""
    send_timeout: float = 10.0
    """Seconds a replay waits for queue space before calling the socket slow."""
    max_sockets_per_reader: int = 10
    """Sockets of one reader on one node; one more closes the oldest with 4000."""
    max_held: int = 4096
    """Live items held per socket during a replay (beyond: dropped, then re-read)."""
    peer_ttl: float = 10.0
    """Seconds a reader's conversation peers are cached (presence fan-out and queries)."""
    peer_refresh: float = 1.0
    """A ``presence.query`` naming a non-peer re-reads the querier's peers if the cached ones
    are older than this (so a conversation opened a moment ago is seen)."""


@dataclass
class GatewayStats:
    connections: int = 0
    opened: int = 0
    closed_by_code: dict[int, int] = field(default_factory=dict)
    frames_in: int = 0
    bad_frames: int = 0
    events_live: int = 0
    events_replayed: int = 0
    duplicates_dropped: int = 0
    gap_replays: int = 0


@dataclass
class _Close:
    code: int
    reason: str


class Session:
    """One socket of one reader on this node (state only; the gateway drives it).

    ``queue``: the frames (``str``) waiting for the writer, oldest first, at most
    ``queue_size`` (then a ``_Close`` marker may follow); ``done``: a future resolved when
    the socket's writing side has ended (closed, or the client went away)."""

    __slots__ = (
        "closed", "close_code", "closing", "done", "flushing", "held", "held_overflow", "id",
        "key", "last_received", "last_seq", "next_ping", "online", "queue", "queue_size",
        "reader", "replay_task", "replaying", "rooms", "serving", "socket", "space",
        "writer",
    )  # fmt: skip

    _ids = itertools.count(1)

    def __init__(self, reader: ReaderRef, socket: Socket, queue_size: int) -> None:
        self.id = next(self._ids)
        self.reader = reader
        self.key = str(reader.id)
        self.socket = socket
        self.queue: deque[str | _Close] = deque()
        self.queue_size = queue_size
        self.space: asyncio.Future[None] | None = None  # a replay waiting for queue space
        self.last_seq = 0
        self.replaying = True  # until the first (re)play has run: live items are held
        self.held: dict[int, str] = {}
        self.held_overflow = False
        self.replay_task: asyncio.Task[None] | None = None
        self.rooms: set[str] = set()
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

    def __repr__(self) -> str:
        return f"<Session {self.id} reader={self.key} last_seq={self.last_seq}>"


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


class Gateway:
    """See the module docstring. ``nc``: a connected nats-py client; ``directory(reader_id)``
    returns ``{"id", "nickname", ...}`` or ``None`` (blocking: called in a thread).
    ``readers`` and ``peers(reader_id)`` (blocking: the ids of the readers ``reader_id`` has a
    conversation with) enable reader presence; without them nobody is told anything and
    ``presence.query`` reports every id as unknown."""

    def __init__(
        self,
        nc: Any,
        inbox: InboxFeed,
        chat: ChatPort,
        presence: Presence,
        *,
        directory: Callable[[UUID], dict[str, Any] | None] = lambda _id: None,
        config: GatewayConfig | None = None,
        readers: ReaderPresence | None = None,
        peers: Callable[[UUID], Iterable[UUID]] | None = None,
    ) -> None:
        self.nc = nc
        self.inbox = inbox
        self.chat = chat
        self.presence = presence
        self.directory = directory
        self.config = config or GatewayConfig()
        self.stats = GatewayStats()
        self.sessions: dict[str, list[Session]] = {}
        self._room_sessions: dict[str, set[Session]] = {}
        self._room_titles: dict[str, str] = {}
        self._room_names: dict[str, str] = {}  # str(room id) → name
        self._subs: list[Any] = []
        self._stopping = False
        self._sweep: asyncio.TimerHandle | None = None  # the node's heartbeat timer
        self._sweep_at = 0.0
        self._ping = encode_text(Ping())
        presence.on_change = self._on_presence_change
        self.readers = readers
        self.peers: PeerCache | None = None
        self.fanout: PresenceFanout | None = None
        if readers is not None and peers is not None:
            self.peers = PeerCache(peers, ttl=self.config.peer_ttl)
            self.fanout = PresenceFanout(self.peers, self._to_reader, lambda: bool(self.sessions))
            readers.on_change = self._on_reader_presence

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._subs.append(await self.nc.subscribe(SUBJECT_PREFIX + "*", cb=self._on_inbox))
        self._subs.append(await self.nc.subscribe(ROOM_SUBJECT_PREFIX + "*", cb=self._on_room))
        if self.fanout is not None:
            self.fanout.start()

    async def stop(self) -> None:
        """Close every socket with 1001 (going away) and stop listening."""
        self._stopping = True
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        sessions = [s for group in self.sessions.values() for s in group]
        for session in sessions:
            self.close(session, CloseCode.GOING_AWAY, "server shutting down", flush=True)
        if sessions:
            await asyncio.wait([s.done for s in sessions], timeout=5)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self.fanout is not None:
            await self.fanout.stop()

    def resync(self) -> None:
        """After a NATS reconnect: live items may have been missed, re-read every socket's
        gap from the inbox."""
        for group in self.sessions.values():
            for session in group:
                if not session.closed and not session.replaying:
                    self._start_replay(session, session.last_seq)

    def local_count(self) -> int:
        return sum(len(group) for group in self.sessions.values())

    # -- one connection -----------------------------------------------------------------------

    async def serve(self, socket: Socket, reader_id: UUID, after: int | None = None) -> None:
        """Run the session of an accepted, authenticated ``socket`` until it closes.

        ``after``: replay inbox items with ``seq > after`` first (``?after=``). The socket
        is read in the calling task; a close that cannot reach a stuck client ends it by
        cancelling that task's read (the cancellation does not escape)."""
        try:
            profile = await in_thread(self.directory, reader_id) or {}
        except Exception as exc:  # a nickname is not worth refusing the socket
            log.warning("gateway: no profile for %s: %s", reader_id, exc)
            profile = {}
        reader = ReaderRef(id=reader_id, nickname=str(profile.get("nickname") or ""))
        session = Session(reader, socket, self.config.queue_size)
        me = asyncio.current_task()
        self._register(session)
        try:
            if self._stopping:
                self.close(session, CloseCode.GOING_AWAY, "server shutting down")
                return
            head = await in_thread(self.inbox.head, reader_id)
            self.push(
                session,
                encode_text(
                    Hello(reader=reader, head=head, heartbeat=self.config.heartbeat,
                          max_frame_bytes=MAX_FRAME_BYTES)
                ),
            )  # fmt: skip
            if after is not None and after > head:
                # the client saw seqs this inbox does not have (a rebuilt inbox renumbers)
                self.push(session, encode_text(Error(
                    code="after_beyond_head",
                    message=f"after={after} is beyond your inbox head {head}: "
                    "resynchronise (GET /v1/inbox?after=0) and continue from head.",
                )))  # fmt: skip
                after = head
            self._start_replay(session, head if after is None else after)
            if self.readers is not None and not session.closed:
                session.online = True
                await self.readers.connected(reader_id)
            # read only now, so a client's early ``resume`` comes after the initial replay
            if not session.done.done():
                session.serving = me
                try:
                    await self._read_loop(session)
                except asyncio.CancelledError:
                    if me is None or not session.done.done():
                        raise
                    me.uncancel()  # our own: the session ended while its client was silent
                except Exception as exc:
                    log.warning("ws session %s: reading failed: %r", session.id, exc)
                finally:
                    session.serving = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ws session %s failed", session.id)
            self.close(session, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            session.closed = True
            self._unregister(session)
            if session.replay_task is not None:
                session.replay_task.cancel()
            for room in list(session.rooms):
                with contextlib.suppress(Exception):
                    await self._leave(session, room, notify_self=False)
            if session.online and self.readers is not None:
                session.online = False
                with contextlib.suppress(Exception):
                    await self.readers.disconnected(reader_id)
            writer = session.writer
            if writer is not None and not writer.done():
                if session.flushing:  # let the queued frames and the close go out
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(writer), 5.0)
                writer.cancel()
            if session.closing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(session.closing), 6.0)
            code = session.close_code or CloseCode.NORMAL
            self.stats.closed_by_code[code] = self.stats.closed_by_code.get(code, 0) + 1

    def _register(self, session: Session) -> None:
        group = self.sessions.setdefault(session.key, [])
        group.append(session)
        self.stats.connections = self.local_count()
        self.stats.opened += 1
        session.next_ping = asyncio.get_running_loop().time() + self.config.heartbeat
        self._schedule_sweep(session.next_ping)
        while len(group) > self.config.max_sockets_per_reader:
            oldest = group.pop(0)
            self.close(oldest, CloseCode.REPLACED, "too many connections of this reader")

    def _unregister(self, session: Session) -> None:
        group = self.sessions.get(session.key)
        if group and session in group:
            group.remove(session)
            if not group:
                del self.sessions[session.key]
        self.stats.connections = self.local_count()

    # -- sending ------------------------------------------------------------------------------

    def push(self, session: Session, text: str) -> bool:
        """Send or queue one frame; a full queue closes the socket (4008). Returns False if
        dropped (closed, full, or the client is gone).

        A socket with nothing queued and no writer is written at once, in the caller's
        step (as ``websockets.broadcast`` does; no task, no loop iteration per frame). Only
        a send that has to wait (the transport's buffer is full) goes on in a writer task,
        and the frames pushed meanwhile queue behind it."""
        if session.closed:
            return False
        queue = session.queue
        if session.writer is None and not queue:
            sending = session.socket.send(text)
            try:
                waiting_on = sending.send(None)
            except StopIteration:
                return True
            except Exception:  # the client went away
                self._gone(session)
                return False
            session.writer = asyncio.create_task(self._write_loop(session, (sending, waiting_on)))
            return True
        if len(queue) >= session.queue_size:
            self.close(session, CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        queue.append(text)
        if session.writer is None:
            session.writer = asyncio.create_task(self._write_loop(session))
        return True

    async def _put_waiting(self, session: Session, text: str) -> None:
        """Queue one frame, waiting up to ``send_timeout`` s for space (replays); then the
        socket is a slow consumer (4008) and the replay is cancelled. A closed session
        takes nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.send_timeout
        while len(session.queue) >= session.queue_size and not session.closed:
            space = session.space = loop.create_future()
            try:
                await asyncio.wait_for(space, deadline - loop.time())
            except TimeoutError:
                self.close(session, CloseCode.SLOW_CONSUMER, "slow consumer")
                raise asyncio.CancelledError from None
        self.push(session, text)

    def close(self, session: Session, code: int, reason: str, *, flush: bool = False) -> None:
        """Close ``session`` with ``code``. ``flush``: after the frames already queued (unless
        the queue is full: then at once)."""
        if session.closed:
            return
        session.closed = True
        session.close_code = code
        if flush and len(session.queue) < session.queue_size:
            session.queue.append(_Close(code, reason))
            session.flushing = True
            if session.writer is None:
                session.writer = asyncio.create_task(self._write_loop(session))
            return
        if session.writer is not None:
            session.writer.cancel()
        session.queue.clear()
        session.closing = asyncio.create_task(self._close_now(session, code, reason))

    async def _close_now(self, session: Session, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(session.socket.close(code, reason), 5.0)
        except Exception:  # already gone, or the close handshake is stuck behind a full buffer
            pass
        finally:
            self._finish(session)

    def _finish(self, session: Session) -> None:
        """The socket's writing side has ended: resolve ``done`` and stop reading it (a
        client that neither reads nor writes would otherwise hold the session)."""
        if not session.done.done():
            session.done.set_result(None)
        if session.serving is not None:
            session.serving.cancel()

    async def _write_loop(
        self, session: Session, started: tuple[Coroutine[Any, Any, None], Any] | None = None
    ) -> None:
        """Finish the send ``push`` ``started`` (the coroutine and what it is waiting on),
        then write the queued frames until the queue is empty (then this task ends; ``push``
        writes or starts another), a ``_Close`` (written, then the session is done) or a
        failed send (the client went away)."""
        queue = session.queue
        send = session.socket.send
        try:
            if started is not None:
                await _finish_started(*started)
            while queue:
                item = queue.popleft()
                if session.space is not None:  # a replay waits for room in the queue
                    if not session.space.done():
                        session.space.set_result(None)
                    session.space = None
                if type(item) is _Close:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(session.socket.close(item.code, item.reason), 5.0)
                    self._finish(session)
                    return
                await send(item)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away
            self._gone(session)
        finally:
            if session.writer is asyncio.current_task():
                session.writer = None

    def _gone(self, session: Session) -> None:
        """A send failed: the client went away."""
        session.closed = True
        session.queue.clear()
        self._finish(session)

    # -- heartbeat ----------------------------------------------------------------------------

    def _schedule_sweep(self, when: float) -> None:
        """Make the node's heartbeat timer fire by ``when`` (loop time) plus the grain."""
        grain = max(0.01, self.config.heartbeat / 10)
        if self._sweep is not None:
            if self._sweep_at <= when + grain:
                return
            self._sweep.cancel()
        self._sweep_at = when + grain
        self._sweep = asyncio.get_running_loop().call_at(self._sweep_at, self._heartbeats)

    def _heartbeats(self) -> None:
        """The node's heartbeat sweep: every socket whose ping is due gets one, or is closed
        with 4012 if nothing came from it for 1.5 intervals."""
        self._sweep = None
        if self._stopping:
            return
        now = asyncio.get_running_loop().time()
        interval = self.config.heartbeat
        silent_since = time.monotonic() - 1.5 * interval
        soonest = float("inf")
        for group in list(self.sessions.values()):
            for session in list(group):
                if session.closed:
                    continue
                if session.next_ping <= now:
                    if session.last_received < silent_since:
                        self.close(session, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                        continue
                    self.push(session, self._ping)
                    session.next_ping = now + interval
                soonest = min(soonest, session.next_ping)
        if soonest != float("inf"):
            self._schedule_sweep(soonest)

    # -- inbox items: live, held, replayed ------------------------------------------------------

    async def _on_inbox(self, msg: Any) -> None:
        group = self.sessions.get(msg.subject[len(SUBJECT_PREFIX) :])
        if not group:
            return
        try:
            _, seq = parse_msg_id((msg.headers or {})[MSG_ID])
        except (KeyError, ValueError):
            log.warning("gateway: inbox message without a usable %s on %s", MSG_ID, msg.subject)
            return
        text = msg.data.decode()
        for session in list(group):
            self.offer(session, seq, text)
        await asyncio.sleep(0)  # let the writers run between messages of a burst

    def offer(self, session: Session, seq: int, text: str) -> None:
        """A live inbox item for ``session`` (see "Order, gaps and duplicates")."""
        if session.closed:
            return
        if seq <= session.last_seq:
            self.stats.duplicates_dropped += 1
            return
        if session.replaying:
            if len(session.held) >= self.config.max_held:
                session.held.clear()
                session.held_overflow = True
            session.held[seq] = text
            return
        if seq == session.last_seq + 1:
            if self.push(session, text):
                session.last_seq = seq
                self.stats.events_live += 1
            return
        self.stats.gap_replays += 1
        session.held[seq] = text
        self._start_replay(session, session.last_seq)

    def _start_replay(self, session: Session, after: int) -> None:
        if session.closed:
            return
        if session.replay_task is not None and not session.replay_task.done():
            session.replay_task.cancel()  # suspended at an await: it queues nothing more
        session.replaying = True
        session.last_seq = after
        session.replay_task = asyncio.create_task(
            self._replay(session), name=f"ws-replay-{session.id}"
        )

    async def _replay(self, session: Session) -> None:
        me = asyncio.current_task()
        page = self.config.replay_page
        idle_rounds = 0
        try:
            while not session.closed:
                items, _head = await in_thread(
                    self.inbox.items, session.reader.id, session.last_seq, page
                )
                for item in items:
                    seq = int(item["seq"])
                    if seq <= session.last_seq:
                        continue
                    session.held.pop(seq, None)
                    await self._put_waiting(session, encode_text(event_frame(item)))
                    session.last_seq = seq
                    self.stats.events_replayed += 1
                if len(items) >= page:
                    continue
                # the database has nothing newer: release the held live items in order
                while (text := session.held.pop(session.last_seq + 1, None)) is not None:
                    await self._put_waiting(session, text)
                    session.last_seq += 1
                    self.stats.events_live += 1
                for seq in [s for s in session.held if s <= session.last_seq]:
                    del session.held[seq]
                if not session.held and not session.held_overflow:
                    break  # caught up: from here on, live (no await since the check)
                session.held_overflow = False
                idle_rounds = 0 if items else idle_rounds + 1
                if idle_rounds > 50:  # held items the database does not show: give up on them
                    log.warning("gateway: %r held items beyond the inbox head; dropped", session)
                    session.held.clear()
                    break
                if not items:
                    await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway: replay of %r failed", session)
            self.close(session, CloseCode.INTERNAL_ERROR, "replay failed")
        finally:
            if session.replay_task is me:
                session.replaying = False
                session.replay_task = None

    # -- reading ------------------------------------------------------------------------------

    async def _read_loop(self, session: Session) -> None:
        while not session.closed:
            data = await session.socket.receive()
            if data is None:
                return
            session.last_received = time.monotonic()
            self.stats.frames_in += 1
            try:
                frame = decode_client_frame(data)
            except FrameError as exc:
                self.stats.bad_frames += 1
                self.push(
                    session, encode_text(Error(code=exc.code, message=exc.message, frame=exc.frame))
                )
                if exc.code == "frame_too_large":
                    self.close(session, CloseCode.MESSAGE_TOO_BIG, "frame too large", flush=True)
                    return
                continue
            try:
                await self._dispatch(session, frame)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway: %s frame of %r failed", type(frame).__name__, session)
                self.push(
                    session,
                    encode_text(Error(code="internal_error", message="Something went wrong.")),
                )

    async def _dispatch(self, session: Session, frame: AnyClientFrame) -> None:
        if isinstance(frame, ClientPing):
            self.push(session, encode_text(Pong()))
        elif isinstance(frame, ClientPong):
            pass
        elif isinstance(frame, Resume):
            self._start_replay(session, frame.after)
        elif isinstance(frame, ChatSend):
            await self._chat_send(session, frame)
        elif isinstance(frame, Read):
            await self._read(session, frame)
        elif isinstance(frame, RoomJoin):
            await self._join(session, frame.room)
        elif isinstance(frame, RoomLeave):
            await self._leave(session, frame.room, notify_self=True)
        elif isinstance(frame, RoomSend):
            await self._room_send(session, frame)
        elif isinstance(frame, PresenceQuery):
            await self._presence_query(session, frame)

    def _refuse(self, session: Session, exc: DomainError, frame: str, ref: str | None) -> None:
        self.push(
            session,
            encode_text(Error(code=exc.code, message=exc.message, client_msg_id=ref, frame=frame)),
        )

    async def _chat_send(self, session: Session, frame: ChatSend) -> None:
        command = cc.SendMessage(
            conversation_id=frame.conversation_id,
            sender_id=session.reader.id,
            text=frame.text,
            client_msg_id=frame.client_msg_id,
        )
        try:
            recorded = await in_thread(self.chat.handle, command)
        except DomainError as exc:
            self._refuse(session, exc, "chat.send", frame.client_msg_id)
            return
        self.push(
            session,
            encode_text(
                Ack(
                    client_msg_id=frame.client_msg_id,
                    conversation_id=frame.conversation_id,
                    message_id=recorded.message_id,
                    seq=recorded.seq,
                    at=recorded.at,
                    created=recorded.created,
                )
            ),
        )

    async def _read(self, session: Session, frame: Read) -> None:
        command = cc.MarkRead(
            conversation_id=frame.conversation_id, reader_id=session.reader.id, up_to=frame.up_to
        )
        try:
            await in_thread(self.chat.handle, command)
        except DomainError as exc:
            self._refuse(session, exc, "read", frame.client_msg_id)
            return
        if frame.client_msg_id is not None:
            self.push(
                session,
                encode_text(
                    Ack(client_msg_id=frame.client_msg_id, conversation_id=frame.conversation_id,
                        seq=frame.up_to)
                ),
            )  # fmt: skip

    # -- rooms --------------------------------------------------------------------------------

    async def room_title(self, name: str) -> str:
        """The title of room ``name``. Raises ``RoomNotFound`` (a ``DomainError``)."""
        title = self._room_titles.get(name)
        if title is None:
            room = await in_thread(self.chat.room, room_id_for(name))
            title = self._room_titles[name] = str(room.title)
        return title

    async def _join(self, session: Session, name: str) -> None:
        try:
            title = await self.room_title(name)
        except DomainError as exc:
            self._refuse(session, exc, "room.join", None)
            return
        if name in session.rooms:
            members = self.presence.count(name)
            self.push(session, encode_text(RoomJoined(room=name, title=title, members=members)))
            return
        session.rooms.add(name)
        self._room_sessions.setdefault(name, set()).add(session)
        self._room_names[str(room_id_for(name))] = name
        members, newly = await self.presence.join(name, session.reader)
        self.push(session, encode_text(RoomJoined(room=name, title=title, members=members)))
        if newly:
            notice = encode_text(RoomPresence(room=name, members=members, joined=session.reader))
            self._to_room(name, notice, skip=session)

    async def _leave(self, session: Session, name: str, *, notify_self: bool) -> None:
        if name not in session.rooms:
            if notify_self:
                members = self.presence.count(name)
                self.push(session, encode_text(RoomLeft(room=name, members=members)))
            return
        session.rooms.discard(name)
        local = self._room_sessions.get(name)
        if local is not None:
            local.discard(session)
            if not local:
                del self._room_sessions[name]
        members, gone = await self.presence.leave(name, session.reader.id)
        if notify_self:
            self.push(session, encode_text(RoomLeft(room=name, members=members)))
        if gone:
            notice = encode_text(RoomPresence(room=name, members=members, left=session.reader))
            self._to_room(name, notice, skip=session)

    async def _room_send(self, session: Session, frame: RoomSend) -> None:
        if frame.room not in session.rooms:
            self.push(
                session,
                encode_text(
                    Error(code="not_in_room", message="Join the room before sending to it.",
                          client_msg_id=frame.client_msg_id, frame="room.send")
                ),
            )  # fmt: skip
            return
        room_id = room_id_for(frame.room)
        command = cc.SendRoomMessage(
            room_id=room_id,
            sender_id=session.reader.id,
            text=frame.text,
            client_msg_id=frame.client_msg_id,
        )
        try:
            recorded = await in_thread(self.chat.handle, command)
        except DomainError as exc:
            self._refuse(session, exc, "room.send", frame.client_msg_id)
            return
        self.push(
            session,
            encode_text(
                Ack(client_msg_id=frame.client_msg_id, conversation_id=room_id, room=frame.room,
                    message_id=recorded.message_id, seq=recorded.seq, at=recorded.at,
                    created=recorded.created)
            ),
        )  # fmt: skip
        if recorded.created:
            message = RoomMessage(
                room=frame.room,
                message_id=recorded.message_id,
                sender=session.reader,
                text=frame.text,
                at=recorded.at,
                seq=recorded.seq,
            )
            try:
                await self.nc.publish(f"{ROOM_SUBJECT_PREFIX}{room_id}", encode(message))
            except Exception as exc:  # recorded (history has it); the broadcast is best effort
                log.warning("gateway: room broadcast of %s failed: %s", frame.room, exc)

    async def _on_room(self, msg: Any) -> None:
        name = self._room_names.get(msg.subject[len(ROOM_SUBJECT_PREFIX) :])
        if name is None or name not in self._room_sessions:
            return
        self._to_room(name, msg.data.decode())
        await asyncio.sleep(0)  # let the writers run between messages of a burst

    def _to_room(self, name: str, text: str, skip: Session | None = None) -> None:
        for session in list(self._room_sessions.get(name, ())):
            if session is not skip:
                self.push(session, text)

    # -- reader presence ----------------------------------------------------------------------

    def _to_reader(self, reader_id: UUID, text: str) -> None:
        """Queue ``text`` on every local socket of ``reader_id``."""
        for session in list(self.sessions.get(str(reader_id), ())):
            self.push(session, text)

    def _on_reader_presence(self, reader_id: UUID, online: bool, at: datetime) -> None:
        if self.fanout is not None and not self._stopping:
            self.fanout.notify(reader_id, online, at)

    async def _presence_query(self, session: Session, frame: PresenceQuery) -> None:
        asked = list(dict.fromkeys(frame.reader_ids))
        me = session.reader.id
        peers: frozenset[UUID] = frozenset()
        if self.readers is not None and self.peers is not None and asked:
            peers = await self.peers.get(me, self.config.peer_ttl)
            if any(rid not in peers and rid != me for rid in asked):
                fresher = await self.peers.get(me, self.config.peer_refresh)
                # the relation is symmetric: new peers have a new peer too (us)
                self.peers.invalidate(*(fresher - peers))
                peers = fresher
        readers = self.readers
        known = [
            ReaderOnline(id=rid, online=readers.is_online(rid))
            for rid in asked
            if rid in peers and readers is not None
        ]
        unknown = [rid for rid in asked if rid not in peers]
        self.push(
            session,
            encode_text(
                PresenceStates(readers=known, unknown=unknown, client_msg_id=frame.client_msg_id)
            ),
        )

    def _on_presence_change(
        self, room: str, members: int, joined: list[ReaderRef], left: list[ReaderRef]
    ) -> None:
        if room not in self._room_sessions:
            return
        frames = [RoomPresence(room=room, members=members, joined=r) for r in joined]
        frames += [RoomPresence(room=room, members=members, left=r) for r in left]
        for frame in frames:
            self._to_room(room, encode_text(frame))


__all__ = [
    "ChatPort",
    "Gateway",
    "GatewayConfig",
    "GatewayStats",
    "InboxFeed",
    "Session",
    "Socket",
]
