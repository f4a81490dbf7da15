"""The ``Gateway`` of one API node: it wires the parts of the package and runs each connection.

It owns the node's sessions (``sessions``: reader id → that reader's ``Session``s here), the
NATS subscriptions and the lifecycle; the parts do the rest: ``Heartbeat`` (pings, 4012),
``Replay`` (inbox items: live, gaps, resume), ``Rooms``, ``Dispatcher`` (client frames).

Fan-out
    One core NATS subscription per node on ``liudong.inbox.*`` (the relay publishes every inbox
    item there through JetStream, ``realtime.relay``). A message is offered to every local
    session of its reader, identified by its ``Nats-Msg-Id`` ``<reader>:<seq>``. After a NATS
    reconnect (``resync``) every socket's gap is re-read from the inbox.

Reader presence
    With a ``ReaderPresence`` (``realtime.reader_presence``), every authenticated socket counts
    its reader online (on all nodes) until it closes; cluster-wide transitions are sent as
    ``presence`` frames to the sockets of the reader's conversation peers (``peers``, cached
    ``peer_ttl`` seconds). ``presence.query`` is answered for peers only (``Dispatcher``).

Send limits
    ``limits()`` (``ports.SendLimits``; the composition root passes the node's
    ``RateLimits``, the same HTTP uses) counts ``chat.send`` (rule ``chat_sends``, shared with
    HTTP ``POST …/messages``) and ``room.send`` (``room_sends``) per reader, whatever socket
    they come from; over it: ``error`` ``rate_limited`` with ``retry_after`` and the
    ``client_msg_id``, nothing recorded. Besides, each socket has its frame rate
    (``GatewayConfig.frame_rate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from realtime.gateway.config import GatewayConfig, GatewayStats
from realtime.gateway.dispatch import Dispatcher
from realtime.gateway.heartbeat import Heartbeat
from realtime.gateway.ports import ChatPort, InboxFeed, SendLimits, Socket
from realtime.gateway.replay import Replay, after_beyond_head
from realtime.gateway.rooms import ROOM_SUBJECT_PREFIX, Rooms
from realtime.gateway.session import Session
from realtime.presence import Presence
from realtime.protocol import MAX_FRAME_BYTES, CloseCode, Hello, ReaderRef, encode_text
from realtime.reader_presence import PeerCache, PresenceFanout, ReaderPresence
from realtime.relay import MSG_ID, SUBJECT_PREFIX, WITHHELD, parse_msg_id
from realtime.threads import in_thread

log = logging.getLogger(__name__)

REVOKED_SUBJECT = "liudong.sessions.revoked"
REPLACED_SUBJECT = "liudong.sessions.replaced"
"""Like ``REVOKED_SUBJECT``, for sessions a login on another device ended (4409)."""
"""Core NATS subject of login-session revocations: the payload is session ids separated by
spaces (``api.adapters.sessions.session_id``); every node closes its sockets of them."""


class Gateway:
    """See the package docstring. ``nc``: a connected nats-py client; ``directory(reader_id)``
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
        limits: Callable[[], SendLimits | None] = lambda: None,
    ) -> None:
        self.nc = nc
        self.inbox = inbox
        self.chat = chat
        self.presence = presence
        self.directory = directory
        self.config = config or GatewayConfig()
        self.stats = GatewayStats()
        self.sessions: dict[str, list[Session]] = {}
        self._subs: list[Any] = []
        self._stopping = False
        self.heartbeat = Heartbeat(self._all_sessions, lambda: self.config.heartbeat)
        self.replay = Replay(inbox, self.stats, lambda: self.config)
        self.rooms = Rooms(nc, chat, presence, limits=limits, stats=self.stats)
        presence.on_change = self.rooms.on_presence_change
        self.readers = readers
        self.peers: PeerCache | None = None
        self.fanout: PresenceFanout | None = None
        if readers is not None and peers is not None:
            self.peers = PeerCache(peers, ttl=self.config.peer_ttl)
            self.fanout = PresenceFanout(self.peers, self._to_reader, lambda: bool(self.sessions))
            readers.on_change = self._on_reader_presence
        self.dispatcher = Dispatcher(
            chat=chat,
            replay=self.replay,
            rooms=self.rooms,
            stats=self.stats,
            config=lambda: self.config,
            readers=readers,
            peers=self.peers,
            limits=limits,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._subs.append(await self.nc.subscribe(SUBJECT_PREFIX + "*", cb=self._on_inbox))
        self._subs.append(await self.nc.subscribe(REVOKED_SUBJECT, cb=self._on_revoked))
        self._subs.append(await self.nc.subscribe(REPLACED_SUBJECT, cb=self._on_replaced))
        self._subs.append(
            await self.nc.subscribe(ROOM_SUBJECT_PREFIX + "*", cb=self.rooms.on_message)
        )
        if self.fanout is not None:
            self.fanout.start()

    async def stop(self) -> None:
        """Close every socket with 1001 (going away) and stop listening."""
        self._stopping = True
        self.heartbeat.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        sessions = self._all_sessions()
        for session in sessions:
            session.close(CloseCode.GOING_AWAY, "server shutting down", flush=True)
        if sessions:
            await asyncio.wait([s.done for s in sessions], timeout=5)
        if self.fanout is not None:
            await self.fanout.stop()

    def resync(self) -> None:
        """After a NATS reconnect: live items may have been missed, re-read every socket's
        gap from the inbox."""
        for group in self.sessions.values():
            for session in group:
                if not session.closed and not session.replaying:
                    self.replay.start(session, session.last_seq)

    def local_count(self) -> int:
        return sum(len(group) for group in self.sessions.values())

    @property
    def _sweep(self) -> asyncio.TimerHandle | None:
        """The heartbeat timer under its name from before the split (a unit test reads it);
        ``heartbeat.timer`` is the public way."""
        return self.heartbeat.timer

    # -- one connection -----------------------------------------------------------------------

    async def serve(
        self,
        socket: Socket,
        reader_id: UUID,
        after: int | None = None,
        *,
        auth_id: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Run the session of an accepted, authenticated ``socket`` until it closes.

        ``after``: replay inbox items with ``seq > after`` first (``?after=``). The socket
        is read in the calling task; a close that cannot reach a stuck client ends it by
        cancelling that task's read (the cancellation does not escape). ``auth_id``: the
        ``session_id`` of the login session (a revocation of it closes the socket);
        ``expires_at``: when that session expires (``time.time()`` scale)."""
        try:
            profile = await in_thread(self.directory, reader_id) or {}
        except Exception as exc:  # a nickname is not worth refusing the socket
            log.warning("gateway: no profile for %s: %s", reader_id, exc)
            profile = {}
        reader = ReaderRef(id=reader_id, nickname=str(profile.get("nickname") or ""))
        session = Session(reader, socket, self.config.queue_size)
        session.auth_id = auth_id
        session.expires_at = expires_at
        me = asyncio.current_task()
        self._register(session)
        try:
            if self._stopping:
                session.close(CloseCode.GOING_AWAY, "server shutting down")
                return
            head = await in_thread(self.inbox.head, reader_id)
            session.push(
                encode_text(
                    Hello(
                        reader=reader,
                        head=head,
                        heartbeat=self.config.heartbeat,
                        max_frame_bytes=MAX_FRAME_BYTES,
                    )
                ),
            )
            if after is not None and after > head:
                # the client saw seqs this inbox does not have (a rebuilt inbox renumbers)
                session.push(after_beyond_head(after, head))
                after = head
            self.replay.start(session, head if after is None else after)
            if self.readers is not None and not session.closed:
                session.online = True
                await self.readers.connected(reader_id)
            # read only now, so a client's early ``resume`` comes after the initial replay
            if not session.done.done():
                session.serving = me
                try:
                    await self.dispatcher.read_loop(session)
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
            session.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            session.closed = True
            self._unregister(session)
            if session.replay_task is not None:
                session.replay_task.cancel()
            for room in list(session.rooms):
                with contextlib.suppress(Exception):
                    await self.rooms.leave(session, room, notify_self=False)
            if session.online and self.readers is not None:
                session.online = False
                with contextlib.suppress(Exception):
                    await self.readers.disconnected(reader_id)
            await session.finish_writing()
            code = session.close_code or CloseCode.NORMAL
            self.stats.closed_by_code[code] = self.stats.closed_by_code.get(code, 0) + 1

    def _register(self, session: Session) -> None:
        group = self.sessions.setdefault(session.key, [])
        group.append(session)
        self.stats.connections = self.local_count()
        self.stats.opened += 1
        self.heartbeat.add(session)
        while len(group) > self.config.max_sockets_per_reader:
            oldest = group.pop(0)
            oldest.close(CloseCode.REPLACED, "too many connections of this reader")

    def _unregister(self, session: Session) -> None:
        group = self.sessions.get(session.key)
        if group and session in group:
            group.remove(session)
            if not group:
                del self.sessions[session.key]
        self.stats.connections = self.local_count()

    def _all_sessions(self) -> list[Session]:
        return [s for group in self.sessions.values() for s in group]

    # -- what the parts do, by their former names ---------------------------------------------

    def push(self, session: Session, text: str) -> bool:
        """``session.push(text)``."""
        return session.push(text)

    def close(self, session: Session, code: int, reason: str, *, flush: bool = False) -> None:
        """``session.close(code, reason, flush=flush)``."""
        session.close(code, reason, flush=flush)

    def offer(self, session: Session, seq: int, text: str) -> None:
        """A live inbox item for ``session`` (``Replay.offer``)."""
        self.replay.offer(session, seq, text)

    async def room_title(self, name: str) -> str:
        """The title of room ``name`` (``Rooms.title``). Raises ``RoomNotFound``."""
        return await self.rooms.title(name)

    # -- fan-out: inbox items and reader presence ---------------------------------------------

    async def _on_inbox(self, msg: Any) -> None:
        group = self.sessions.get(msg.subject[len(SUBJECT_PREFIX) :])
        if not group:
            return
        try:
            _, seq = parse_msg_id((msg.headers or {})[MSG_ID])
        except (KeyError, ValueError):
            log.warning("gateway: inbox message without a usable %s on %s", MSG_ID, msg.subject)
            return
        self._offer(group, seq, msg.data.decode(), bool((msg.headers or {}).get(WITHHELD)))
        await asyncio.sleep(0)  # let the writers run between messages of a burst

    def offer_local(self, reader_id: str, seq: int, frame: Callable[[], tuple[str, bool]]) -> None:
        """An inbox item from this node's relay (``Relay.local``), before it goes through
        NATS: offered like ``_on_inbox`` offers the NATS copy (which is then a duplicate).
        ``frame()`` (made only when the reader has a socket here): ``(event frame text,
        withheld)``, withheld meaning published without its personal fields."""
        group = self.sessions.get(reader_id)
        if group:
            self._offer(group, seq, *frame())

    def _offer(self, group: Iterable[Session], seq: int, text: str, withheld: bool) -> None:
        """Item ``seq`` to each socket of one reader; a withheld one (no personal fields)
        is read by each socket from the inbox instead."""
        for session in list(group):
            if withheld:
                self.replay.offer_withheld(session, seq)
            else:
                self.replay.offer(session, seq, text)

    async def _on_revoked(self, msg: Any) -> None:
        """Login sessions revoked on some node (``liudong.sessions.revoked``, the session ids
        separated by spaces): close this node's sockets of them (``session_ended``, 4401)."""
        self.end_sessions(msg.data.decode(errors="replace").split())

    async def _on_replaced(self, msg: Any) -> None:
        """Login sessions a login on another device ended (``liudong.sessions.replaced``):
        close this node's sockets of them (``session_replaced``, 4409)."""
        self.end_sessions(msg.data.decode(errors="replace").split(), replaced=True)

    def end_sessions(self, auth_ids: Iterable[str], *, replaced: bool = False) -> int:
        """Close the local sockets opened with any of ``auth_ids``; how many. ``replaced``:
        ``session_replaced`` / 4409 instead of ``session_ended`` / 4401."""
        wanted = set(auth_ids)
        ended = 0
        for session in self._all_sessions():
            if session.auth_id in wanted and not session.closed:
                session.end_session(replaced=replaced)
                ended += 1
        return ended

    def _to_reader(self, reader_id: UUID, text: str) -> None:
        """Queue ``text`` on every local socket of ``reader_id``."""
        for session in list(self.sessions.get(str(reader_id), ())):
            session.push(text)

    def _on_reader_presence(self, reader_id: UUID, online: bool, at: datetime) -> None:
        if self.fanout is not None and not self._stopping:
            self.fanout.notify(reader_id, online, at)


__all__ = ["REPLACED_SUBJECT", "REVOKED_SUBJECT", "Gateway"]
