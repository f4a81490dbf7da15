"""Public chat rooms on the sockets of one node: join, leave, send, messages and member counts.

A ``room.send`` (from a member of the room, within the reader's ``room_sends`` limit: else
``error`` ``rate_limited``) is recorded by the Chat application (history), acknowledged to the
sender, and then published once on ``liudong.room.<room id>`` (best effort: the history has
it); every node subscribes to ``liudong.room.*`` and writes the message, encoded once, to its
own sockets in that room. The room messages that reach the node in one loop iteration (a
burst read from NATS at once) are written together: each socket gets the consecutive
messages of one room in one transport write (``SharedRun``), in the order they came. Member
counts are the cluster's (``realtime.presence.Presence``): a join or leave that changes them,
and changes seen on other nodes (``on_presence_change``), are sent to the room's local
sockets as ``room.presence``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from domain import chat_commands as cc
from domain.chat import room_id_for
from domain.errors import DomainError
from domain.media import MediaRef, picture_view
from realtime.gateway.config import GatewayStats
from realtime.gateway.ports import ROOM_SENDS, ChatPort, SendLimits, Shared, SharedRun
from realtime.gateway.session import Session
from realtime.presence import Presence
from realtime.protocol import (
    Ack,
    Error,
    Picture,
    ReaderRef,
    RoomJoined,
    RoomLeft,
    RoomMessage,
    RoomPresence,
    RoomSend,
    encode,
    encode_text,
)
from realtime.threads import in_thread

log = logging.getLogger(__name__)

ROOM_SUBJECT_PREFIX = "liudong.room."
RUN_BYTES = 64 * 1024
"""At most this many bytes of room messages go to a socket in one write (asyncio's default
write high-water mark): past it, ``send_now`` refuses the next run and the frames queue, so a
socket's transport never holds much more than it did with one write per frame."""


class Rooms:
    """The rooms of this node's sockets. ``nc``: a connected nats-py client (publishing room
    messages; the gateway subscribes ``on_message``); ``presence``: the cluster's member
    counts (the gateway sets its ``on_change`` to ``on_presence_change``); ``limits()``: the
    per-reader send limits (rule ``room_sends``; over it a ``room.send`` gets ``error``
    ``rate_limited`` with ``retry_after`` and is not recorded)."""

    def __init__(
        self,
        nc: Any,
        chat: ChatPort,
        presence: Presence,
        *,
        limits: Callable[[], SendLimits | None] = lambda: None,
        stats: GatewayStats | None = None,
    ) -> None:
        self.nc = nc
        self.chat = chat
        self.presence = presence
        self.limits = limits
        self.stats = stats
        self._sessions: dict[str, set[Session]] = {}  # room name → its sockets on this node
        self._titles: dict[str, str] = {}
        self._names: dict[str, str] = {}  # str(room id) → name
        # room messages from NATS not written yet, oldest first: (room name, frame text, its
        # size in bytes); written by ``_write_arrived``, scheduled for the loop's next iteration
        self._arrived: list[tuple[str, str, int]] = []

    async def title(self, name: str) -> str:
        """The title of room ``name``. Raises ``RoomNotFound`` (a ``DomainError``)."""
        title = self._titles.get(name)
        if title is None:
            room = await in_thread(self.chat.room, room_id_for(name))
            title = self._titles[name] = str(room.title)
        return title

    async def join(self, session: Session, name: str) -> None:
        try:
            title = await self.title(name)
        except DomainError as exc:
            session.refuse(exc, "room.join", None)
            return
        if name in session.rooms:
            members = self.presence.count(name)
            session.push(encode_text(RoomJoined(room=name, title=title, members=members)))
            return
        rooms = session.rooms
        if not isinstance(rooms, set):  # its first room (session.NO_ROOMS until now)
            rooms = session.rooms = set()
        rooms.add(name)
        self._sessions.setdefault(name, set()).add(session)
        self._names[str(room_id_for(name))] = name
        members, newly = await self.presence.join(name, session.reader)
        session.push(encode_text(RoomJoined(room=name, title=title, members=members)))
        if newly:
            notice = encode_text(RoomPresence(room=name, members=members, joined=session.reader))
            self._broadcast(name, notice, skip=session)

    async def leave(self, session: Session, name: str, *, notify_self: bool) -> None:
        """``session`` leaves room ``name``; ``notify_self``: answer ``room.left`` (a
        ``room.leave`` frame; not when the socket is closing)."""
        if name not in session.rooms:
            if notify_self:
                members = self.presence.count(name)
                session.push(encode_text(RoomLeft(room=name, members=members)))
            return
        if isinstance(session.rooms, set):  # it is: name is in it
            session.rooms.discard(name)
        local = self._sessions.get(name)
        if local is not None:
            local.discard(session)
            if not local:
                del self._sessions[name]
        members, gone = await self.presence.leave(name, session.reader.id)
        if notify_self:
            session.push(encode_text(RoomLeft(room=name, members=members)))
        if gone:
            notice = encode_text(RoomPresence(room=name, members=members, left=session.reader))
            self._broadcast(name, notice, skip=session)

    async def send(self, session: Session, frame: RoomSend) -> None:
        if frame.room not in session.rooms:
            session.push(
                encode_text(
                    Error(
                        code="not_in_room",
                        message="Join the room before sending to it.",
                        client_msg_id=frame.client_msg_id,
                        frame="room.send",
                    )
                ),
            )
            return
        if session.over_limit(self.limits(), ROOM_SENDS, "room.send", frame.client_msg_id):
            if self.stats is not None:
                self.stats.rate_limited += 1
            return
        room_id = room_id_for(frame.room)
        command = cc.SendRoomMessage(
            room_id=room_id,
            sender_id=session.reader.id,
            text=frame.text,
            client_msg_id=frame.client_msg_id,
            media=None if frame.media_id is None else MediaRef(id=frame.media_id),
        )
        try:
            recorded = await in_thread(self.chat.handle, command)
        except DomainError as exc:
            session.refuse(exc, "room.send", frame.client_msg_id)
            return
        session.push(
            encode_text(
                Ack(
                    client_msg_id=frame.client_msg_id,
                    conversation_id=room_id,
                    room=frame.room,
                    message_id=recorded.message_id,
                    seq=recorded.seq,
                    at=recorded.at,
                    created=recorded.created,
                )
            ),
        )
        if recorded.created:
            await self._publish(
                frame.room, room_id, session.reader, frame.text, recorded, recorded.media
            )

    async def _publish(
        self,
        name: str,
        room_id: UUID,
        sender: ReaderRef,
        text: str,
        recorded: Any,
        media: dict[str, Any] | None = None,
    ) -> None:
        view = picture_view(media)
        message = RoomMessage(
            room=name,
            message_id=recorded.message_id,
            sender=sender,
            text=text,
            at=recorded.at,
            seq=recorded.seq,
            media=None if view is None else Picture(**view),
        )
        try:
            await self.nc.publish(f"{ROOM_SUBJECT_PREFIX}{room_id}", encode(message))
        except Exception as exc:  # recorded (history has it); the broadcast is best effort
            log.warning("gateway: room broadcast of %s failed: %s", name, exc)

    async def on_message(self, msg: Any) -> None:
        """A room message from NATS (``liudong.room.<room id>``, any node's)."""
        name = self._names.get(msg.subject[len(ROOM_SUBJECT_PREFIX) :])
        if name is None or name not in self._sessions:
            return
        if not self._arrived:
            # nats-py hands this subscription every message it has read before it yields: they
            # all arrive before the loop's next iteration, and go out together then
            asyncio.get_running_loop().call_soon(self._write_arrived)
        data = msg.data
        self._arrived.append((name, data.decode(), len(data)))

    def _write_arrived(self) -> None:
        """Write the room messages that arrived since the last call, in order: each run of
        consecutive messages of one room (at most ``RUN_BYTES``) to its sockets at once
        (``Session.push_run``)."""
        arrived, self._arrived = self._arrived, []
        start = 0
        while start < len(arrived):
            name, _, size = arrived[start]
            end = start + 1
            while end < len(arrived) and arrived[end][0] == name:
                size += arrived[end][2]
                if size > RUN_BYTES:
                    break
                end += 1
            if end - start == 1:
                self._broadcast(name, arrived[start][1])
            else:
                run = SharedRun([text for _, text, _ in arrived[start:end]])
                for session in list(self._sessions.get(name, ())):
                    session.push_run(run)
            start = end

    def on_presence_change(
        self, room: str, members: int, joined: list[ReaderRef], left: list[ReaderRef]
    ) -> None:
        """The member count of ``room`` changed on another node (``Presence.on_change``)."""
        if room not in self._sessions:
            return
        frames = [RoomPresence(room=room, members=members, joined=r) for r in joined]
        frames += [RoomPresence(room=room, members=members, left=r) for r in left]
        for frame in frames:
            self._broadcast(room, encode_text(frame))

    def _broadcast(self, name: str, text: str, skip: Session | None = None) -> None:
        if self._arrived:  # the room messages that came before this frame go out before it
            self._write_arrived()
        frame = Shared(text)  # encoded for the wire once, by the first socket written
        for session in list(self._sessions.get(name, ())):
            if session is not skip:
                session.push(frame)


__all__ = ["ROOM_SUBJECT_PREFIX", "RUN_BYTES", "Rooms"]
