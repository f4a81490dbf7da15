"""Client frames: reading one socket and handing each frame to its handler.

``resume`` goes to the replay (``realtime.gateway.replay``), ``room.*`` to the rooms
(``realtime.gateway.rooms``); ``ping``, ``chat.send``, ``read`` and ``presence.query`` are
answered here.

Malformed frames (not JSON, binary, unknown type, invalid fields) are answered with an
``error`` frame and the socket keeps serving; a frame over 16 KiB gets ``error`` and close
1009. Nothing a client sends can raise out of its session.

``presence.query`` is answered for the querier's conversation peers only; other ids are
reported as ``unknown``. An id that is not a cached peer makes the querier's peers be read
again (at most every ``peer_refresh`` seconds): a conversation opened a moment ago counts at
once. Without reader presence every id is unknown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from limits import parse, strategies

from domain import chat_commands as cc
from domain.errors import DomainError
from domain.media import MediaRef
from realtime.gateway.config import GatewayConfig, GatewayStats
from realtime.gateway.ports import CHAT_SENDS, ChatPort, SendLimits
from realtime.gateway.replay import Replay
from realtime.gateway.rooms import Rooms
from realtime.gateway.session import Session
from realtime.protocol import (
    Ack,
    AnyClientFrame,
    ChatSend,
    ClientPing,
    ClientPong,
    CloseCode,
    Error,
    FrameError,
    Pong,
    PresenceQuery,
    PresenceStates,
    Read,
    ReaderOnline,
    Resume,
    RoomJoin,
    RoomLeave,
    RoomSend,
    decode_client_frame,
    encode_text,
)
from realtime.ratelimit import SweptMemoryStorage
from realtime.reader_presence import PeerCache, ReaderPresence
from realtime.threads import in_thread

log = logging.getLogger(__name__)


class Dispatcher:
    """Reads sessions' frames and runs their handlers. ``readers`` and ``peers``: reader
    presence (both or neither); ``config()``: the gateway's current ``GatewayConfig``."""

    def __init__(
        self,
        *,
        chat: ChatPort,
        replay: Replay,
        rooms: Rooms,
        stats: GatewayStats,
        config: Callable[[], GatewayConfig],
        readers: ReaderPresence | None = None,
        peers: PeerCache | None = None,
        limits: Callable[[], SendLimits | None] = lambda: None,
    ) -> None:
        self.chat = chat
        self.replay = replay
        self.rooms = rooms
        self.stats = stats
        self.config = config
        self._frames = strategies.MovingWindowRateLimiter(SweptMemoryStorage())
        self._frame_rate: tuple[str, Any] | None = None  # (rule, parsed) of config.frame_rate
        self.readers = readers
        self.peers = peers
        self.limits = limits

    async def read_loop(self, session: Session) -> None:
        """Read and handle ``session``'s frames until the client goes away or it closes."""
        while not session.closed:
            data = await session.socket.receive()
            if data is None:
                return
            session.last_received = time.monotonic()
            self.stats.frames_in += 1
            retry_after = self._over_frame_rate(session)
            if retry_after is not None:
                self.stats.rate_limited += 1
                session.push(
                    encode_text(
                        Error(
                            code="rate_limited",
                            message="Too many frames; slow down.",
                            retry_after=retry_after,
                        )
                    )
                )
                continue
            try:
                frame = decode_client_frame(data)
            except FrameError as exc:
                self.stats.bad_frames += 1
                session.push(
                    encode_text(Error(code=exc.code, message=exc.message, frame=exc.frame))
                )
                if exc.code == "frame_too_large":
                    session.close(CloseCode.MESSAGE_TOO_BIG, "frame too large", flush=True)
                    return
                continue
            try:
                await self.dispatch(session, frame)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway: %s frame of %r failed", type(frame).__name__, session)
                session.push(
                    encode_text(Error(code="internal_error", message="Something went wrong."))
                )

    def _over_frame_rate(self, session: Session) -> int | None:
        """Count one frame of ``session``; the seconds to wait when over the frame rate."""
        rule = self.config().frame_rate
        if not rule:
            return None
        if self._frame_rate is None or self._frame_rate[0] != rule:
            self._frame_rate = (rule, parse(rule))
        item = self._frame_rate[1]
        if self._frames.hit(item, "frames", str(session.id)):
            return None
        stats = self._frames.get_window_stats(item, "frames", str(session.id))
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def dispatch(self, session: Session, frame: AnyClientFrame) -> None:
        """Run the handler of one decoded client frame."""
        if isinstance(frame, ClientPing):
            session.push(encode_text(Pong()))
        elif isinstance(frame, ClientPong):
            pass
        elif isinstance(frame, Resume):
            self.replay.start(session, frame.after, resume=True)
        elif isinstance(frame, ChatSend):
            await self._chat_send(session, frame)
        elif isinstance(frame, Read):
            await self._read(session, frame)
        elif isinstance(frame, RoomJoin):
            await self.rooms.join(session, frame.room)
        elif isinstance(frame, RoomLeave):
            await self.rooms.leave(session, frame.room, notify_self=True)
        elif isinstance(frame, RoomSend):
            await self.rooms.send(session, frame)
        elif isinstance(frame, PresenceQuery):
            await self._presence_query(session, frame)

    async def _chat_send(self, session: Session, frame: ChatSend) -> None:
        if session.over_limit(self.limits(), CHAT_SENDS, "chat.send", frame.client_msg_id):
            self.stats.rate_limited += 1
            return
        command = cc.SendMessage(
            conversation_id=frame.conversation_id,
            sender_id=session.reader.id,
            text=frame.text,
            client_msg_id=frame.client_msg_id,
            media=None if frame.media_id is None else MediaRef(id=frame.media_id),
        )
        try:
            recorded = await in_thread(self.chat.handle, command)
        except DomainError as exc:
            session.refuse(exc, "chat.send", frame.client_msg_id)
            return
        session.push(
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
            session.refuse(exc, "read", frame.client_msg_id)
            return
        if frame.client_msg_id is not None:
            session.push(
                encode_text(
                    Ack(
                        client_msg_id=frame.client_msg_id,
                        conversation_id=frame.conversation_id,
                        seq=frame.up_to,
                    )
                ),
            )

    async def _presence_query(self, session: Session, frame: PresenceQuery) -> None:
        asked = list(dict.fromkeys(frame.reader_ids))
        me = session.reader.id
        peers: frozenset[UUID] = frozenset()
        if self.readers is not None and self.peers is not None and asked:
            peers = await self.peers.get(me, self.config().peer_ttl)
            if any(rid not in peers and rid != me for rid in asked):
                fresher = await self.peers.get(me, self.config().peer_refresh)
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
        session.push(
            encode_text(
                PresenceStates(readers=known, unknown=unknown, client_msg_id=frame.client_msg_id)
            ),
        )


__all__ = ["Dispatcher"]
