"""Room presence across API nodes, over core NATS.

Each node keeps who is in each room *on this node* (a reader with several sockets counts
once) and publishes that whole list as a ``PresenceState`` on ``liudong.presence.<room>``:

- at once on every change (a reader's first socket joins, their last one leaves);
- every ``interval`` seconds for every room it has members in (heartbeat);
- an empty list for every room when it stops.

Every node remembers the last state of every other node per room and forgets it after
``3 × interval`` without a heartbeat (a crashed node's members disappear within that time).
A room's members are the union over live nodes, so counts agree on every node once the
states have crossed NATS. A node that starts publishes ``PresenceSync`` on
``liudong.presence_sync``; the others answer by publishing their states at once.

Presence is a cache with a bounded staleness, not history: it is never written to the
database. ``on_change(room, members, joined, left)`` is called (on the event loop) when the
union of a room changes because of *another* node; local changes are returned by
``join`` / ``leave`` so the gateway can tell the other sockets itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from realtime.protocol import (
    PresenceState,
    PresenceSync,
    ReaderRef,
    encode,
    presence_origin_decoder,
    presence_state_decoder,
    presence_sync_decoder,
)
from realtime.tasks import stop_task

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "liudong.presence."
SYNC_SUBJECT = "liudong.presence_sync"

ChangeCallback = Callable[[str, int, list[ReaderRef], list[ReaderRef]], None]


@dataclass
class _Remote:
    members: dict[UUID, ReaderRef]
    expires_at: float


@dataclass
class _LocalRoom:
    sockets: dict[UUID, int] = field(default_factory=dict)  # reader → sockets in the room
    refs: dict[UUID, ReaderRef] = field(default_factory=dict)


class Presence:
    """Room membership of the whole cluster as seen from this node (see the module doc).

    ``nc`` is a connected ``nats.aio.client.Client``; ``node`` a unique id of this process.
    """

    def __init__(
        self,
        nc: Any,
        node: str,
        *,
        interval: float = 5.0,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.nc = nc
        self.node = node
        self.interval = interval
        self.on_change = on_change
        self._local: dict[str, _LocalRoom] = {}
        self._remote: dict[str, dict[str, _Remote]] = {}
        self._subs: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._subs.append(await self.nc.subscribe(SUBJECT_PREFIX + "*", cb=self._on_state))
        self._subs.append(await self.nc.subscribe(SYNC_SUBJECT, cb=self._on_sync))
        await self.nc.publish(SYNC_SUBJECT, encode(PresenceSync(node=self.node)))
        self._task = asyncio.create_task(self._beat(), name="presence-heartbeat")

    async def stop(self) -> None:
        """Tell the others this node has nobody anywhere, then stop listening."""
        task, self._task = self._task, None
        await stop_task(task)
        for room in list(self._local):
            self._local[room] = _LocalRoom()
            with contextlib.suppress(Exception):
                await self._publish(room)
        self._local.clear()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def resync(self) -> None:
        """After a NATS reconnect: publish our states and ask for everyone's."""
        for room in list(self._local):
            await self._publish(room)
        await self.nc.publish(SYNC_SUBJECT, encode(PresenceSync(node=self.node)))

    # -- queries ------------------------------------------------------------------------------

    def members(self, room: str) -> dict[UUID, ReaderRef]:
        """Distinct readers in ``room`` on all live nodes."""
        now = time.monotonic()
        found: dict[UUID, ReaderRef] = {}
        for remote in self._remote.get(room, {}).values():
            if remote.expires_at > now:
                found.update(remote.members)
        local = self._local.get(room)
        if local is not None:
            found.update(local.refs)
        return found

    def count(self, room: str) -> int:
        return len(self.members(room))

    def counts(self) -> dict[str, int]:
        """Member count of every room that has members somewhere."""
        rooms = set(self._local) | set(self._remote)
        return {room: n for room in rooms if (n := self.count(room))}

    # -- local changes ------------------------------------------------------------------------

    async def join(self, room: str, reader: ReaderRef) -> tuple[int, bool]:
        """One more socket of ``reader`` in ``room`` on this node. Returns ``(members,
        newly)``: the room's member count and whether ``reader`` was not in it before."""
        before = reader.id in self.members(room)
        local = self._local.setdefault(room, _LocalRoom())
        local.sockets[reader.id] = local.sockets.get(reader.id, 0) + 1
        local.refs[reader.id] = reader
        if local.sockets[reader.id] == 1:
            await self._publish_quietly(room)
        return self.count(room), not before

    async def leave(self, room: str, reader_id: UUID) -> tuple[int, bool]:
        """One socket of ``reader_id`` left ``room``. Returns ``(members, gone)``: the count
        and whether the reader is no longer in the room anywhere."""
        local = self._local.get(room)
        if local is None or reader_id not in local.sockets:
            return self.count(room), False
        local.sockets[reader_id] -= 1
        if local.sockets[reader_id] <= 0:
            del local.sockets[reader_id]
            del local.refs[reader_id]
            await self._publish_quietly(room)
            if not local.sockets:
                del self._local[room]
        return self.count(room), reader_id not in self.members(room)

    # -- NATS ---------------------------------------------------------------------------------

    async def _publish(self, room: str) -> None:
        local = self._local.get(room) or _LocalRoom()
        state = PresenceState(
            node=self.node, room=room, members=list(local.refs.values()), interval=self.interval
        )
        await self.nc.publish(SUBJECT_PREFIX + room, encode(state))

    async def _publish_quietly(self, room: str) -> None:
        try:
            await self._publish(room)
        except Exception as exc:  # NATS down: the heartbeat will publish again
            log.warning("presence: could not publish %s: %s", room, exc)

    async def _on_state(self, msg: Any) -> None:
        try:
            if presence_origin_decoder.decode(msg.data).node == self.node:
                return  # our own (NATS echoes it): 10× cheaper than the member list
            state = presence_state_decoder.decode(msg.data)
        except Exception:
            log.warning("presence: ignoring a malformed state on %s", msg.subject)
            return
        room = state.room
        before = self.members(room)
        nodes = self._remote.setdefault(room, {})
        if state.members:
            nodes[state.node] = _Remote(
                members={m.id: m for m in state.members},
                expires_at=time.monotonic() + 3 * state.interval,
            )
        else:
            nodes.pop(state.node, None)
            if not nodes:
                del self._remote[room]
        self._changed(room, before)

    async def _on_sync(self, msg: Any) -> None:
        try:
            sync = presence_sync_decoder.decode(msg.data)
        except Exception:
            return
        if sync.node == self.node:
            return
        for room in list(self._local):
            await self._publish_quietly(room)

    def _changed(self, room: str, before: dict[UUID, ReaderRef]) -> None:
        after = self.members(room)
        joined = [ref for rid, ref in after.items() if rid not in before]
        left = [ref for rid, ref in before.items() if rid not in after]
        if (joined or left) and self.on_change is not None:
            try:
                self.on_change(room, len(after), joined, left)
            except Exception:
                log.exception("presence: on_change failed")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for room in list(self._local):
                await self._publish_quietly(room)
            now = time.monotonic()
            for room, nodes in list(self._remote.items()):
                expired = [n for n, r in nodes.items() if r.expires_at <= now]
                if not expired:
                    continue
                before = {rid: ref for r in nodes.values() for rid, ref in r.members.items()}
                if room in self._local:
                    before.update(self._local[room].refs)
                for node in expired:
                    del nodes[node]
                if not nodes:
                    del self._remote[room]
                self._changed(room, before)


__all__ = ["SUBJECT_PREFIX", "SYNC_SUBJECT", "Presence"]
