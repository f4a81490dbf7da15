"""Reader presence (online / offline) across API nodes, over core NATS, and who is told.

A reader is **online** while at least one of their WebSocket sessions is open on *any* node.

``ReaderPresence`` (the cluster state, as seen from this node)
    Each node counts its local sessions per reader and publishes, on the one subject
    ``liudong.readers.presence`` (``realtime.protocol.ReaderPresenceMessage``):

    - ``change`` when a reader's first socket on this node opens or their last one closes;
    - ``beat`` every ``interval`` seconds: the readers online on this node (in parts of at
      most ``chunk`` ids), and at once in answer to a ``sync``;
    - ``sync`` when it starts (or reconnects to NATS): the others answer with their beats;
    - ``gone`` when it stops: its readers are offline there at once.

    Every node remembers, per other node, the readers it reported and when each was last
    confirmed; an entry not confirmed for ``3 × interval`` (the sender's) is dropped (checked
    every half interval). A node that crashed therefore takes its readers offline 3 to 3.5
    intervals after its last beat (15–17.5 s at the default 5 s). A missed ``change`` is
    repaired by the next beat (online) or by expiry (offline). ``on_change(reader, online,
    at)`` is called on the event loop each time a reader's cluster-wide state flips, whichever
    node caused it; every node tells its own sockets. Presence is a cache with bounded
    staleness: never written to the database.

``PeerCache``
    The readers someone has a conversation with (their *peers*), read from the inbox read
    model through a blocking ``lookup(reader_id)`` in a worker thread and kept ``ttl``
    seconds, so that a storm of transitions costs one query per reader per ``ttl``.

``PresenceFanout``
    Turns cluster-wide transitions into ``presence`` frames for the local sockets of the
    reader's peers. Transitions wait in a per-reader slot (a newer one replaces an older one
    not yet sent), and are sent in batches by one task, so each reader's frames leave in the
    order of their transitions. Nothing is looked up while this node has no sockets.

Privacy: presence goes only to a reader's conversation peers (the gateway answers
``presence.query`` for peers only, ``realtime.gateway.dispatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from realtime.protocol import (
    AnyReaderPresenceMessage,
    PresenceChanged,
    ReaderChanged,
    ReaderRef,
    ReadersBeat,
    ReadersGone,
    ReadersSync,
    encode,
    encode_text,
    reader_presence_decoder,
)
from realtime.tasks import stop_task
from realtime.threads import in_thread

log = logging.getLogger(__name__)

SUBJECT = "liudong.readers.presence"
EXPIRY_BEATS = 3
"""A remote reader not confirmed for this many of its node's intervals is offline there."""
BEAT_CHUNK = 2000
"""Reader ids per ``beat`` message (about 80 KB of JSON; NATS allows 1 MB by default)."""

OnChange = Callable[[UUID, bool, datetime], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReaderPresenceStats:
    published: int = 0
    publish_failures: int = 0
    received: int = 0
    expired: int = 0
    transitions: int = 0


class ReaderPresence:
    """Who is online in the whole cluster, as seen from this node (see the module doc).

    ``nc``: a connected ``nats.aio.client.Client`` (or anything with ``subscribe`` and
    ``publish``); ``node``: a unique id of this process; ``clock``: monotonic seconds (tests
    pass a fake one); ``now``: the wall clock of ``at``."""

    def __init__(
        self,
        nc: Any,
        node: str,
        *,
        interval: float = 5.0,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        chunk: int = BEAT_CHUNK,
    ) -> None:
        self.nc = nc
        self.node = node
        self.interval = interval
        self.on_change = on_change
        self.clock = clock
        self.now = now
        self.chunk = chunk
        self.stats = ReaderPresenceStats()
        self._local: dict[UUID, int] = {}  # reader → open sockets on this node
        self._remote: dict[str, dict[UUID, float]] = {}  # node → reader → expires at
        self._subs: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._subs.append(await self.nc.subscribe(SUBJECT, cb=self._on_message))
        await self._publish(ReadersSync(node=self.node))
        self._task = asyncio.create_task(self._loop(), name="reader-presence")

    async def stop(self) -> None:
        """Tell the others this node has nobody online any more, then stop listening."""
        task, self._task = self._task, None
        await stop_task(task)
        self._local.clear()
        await self._publish(ReadersGone(node=self.node))
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def resync(self) -> None:
        """After a NATS reconnect: publish our readers and ask for everyone's."""
        await self.beat()
        await self._publish(ReadersSync(node=self.node))

    # -- queries (safe from worker threads: they only read) -----------------------------------

    def is_online(self, reader: UUID) -> bool:
        """Whether ``reader`` has a socket open on some live node."""
        if self._local.get(reader):
            return True
        return any(reader in readers for readers in list(self._remote.values()))

    def online(self, readers: Iterable[UUID]) -> dict[UUID, bool]:
        return {reader: self.is_online(reader) for reader in readers}

    def online_readers(self, limit: int = 200) -> list[tuple[UUID, bool]]:
        """Up to ``limit`` readers online on all live nodes (for an operator), each with
        whether they have a socket on this node; those on this node first."""
        local = list(self._local)
        found: dict[UUID, bool] = {reader: True for reader in local[:limit]}
        for readers in list(self._remote.values()):
            for reader in list(readers):
                if len(found) >= limit:
                    return list(found.items())
                found.setdefault(reader, False)
        return list(found.items())

    def local_count(self) -> int:
        """Readers with a socket on this node."""
        return len(self._local)

    def online_count(self) -> int:
        """Distinct readers online on all live nodes."""
        found = set(self._local)
        for readers in list(self._remote.values()):
            found.update(readers)
        return len(found)

    # -- local sockets ------------------------------------------------------------------------

    async def connected(self, reader: UUID) -> bool:
        """One more socket of ``reader`` on this node. True if they just came online."""
        count = self._local.get(reader, 0)
        if count:
            self._local[reader] = count + 1
            return False
        was_online = self.is_online(reader)
        self._local[reader] = 1
        at = self.now()
        if not was_online:
            self._emit(reader, True, at)
        await self._publish(
            ReaderChanged(node=self.node, reader=reader, online=True, at=at, interval=self.interval)
        )
        return not was_online

    async def disconnected(self, reader: UUID) -> bool:
        """One socket of ``reader`` on this node closed. True if they just went offline."""
        count = self._local.get(reader, 0)
        if count <= 0:
            return False
        if count > 1:
            self._local[reader] = count - 1
            return False
        del self._local[reader]
        at = self.now()
        offline = not self.is_online(reader)
        if offline:
            self._emit(reader, False, at)
        await self._publish(
            ReaderChanged(
                node=self.node, reader=reader, online=False, at=at, interval=self.interval
            )
        )
        return offline

    # -- heartbeat and expiry -----------------------------------------------------------------

    async def beat(self) -> None:
        """Publish the readers online on this node (in parts of ``chunk``)."""
        readers = list(self._local)
        for i in range(0, len(readers), self.chunk):
            # filtered right before publishing (which queues without yielding first), so a
            # beat never names a reader whose ``offline`` change went out before it
            part = [r for r in readers[i : i + self.chunk] if self._local.get(r)]
            if part:
                await self._publish(
                    ReadersBeat(node=self.node, readers=part, interval=self.interval)
                )

    def sweep(self) -> None:
        """Drop the remote readers whose node stopped confirming them."""
        now = self.clock()
        dropped: list[UUID] = []
        for node, readers in list(self._remote.items()):
            expired = [r for r, expires_at in readers.items() if expires_at <= now]
            for reader in expired:
                del readers[reader]
            if not readers:
                del self._remote[node]
            dropped.extend(expired)
        if not dropped:
            return
        self.stats.expired += len(dropped)
        at = self.now()
        for reader in dict.fromkeys(dropped):
            if not self.is_online(reader):
                self._emit(reader, False, at)

    async def _loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.interval / 2)
            ticks += 1
            try:
                if ticks % 2 == 0:
                    await self.beat()
                self.sweep()
            except Exception:
                log.exception("reader presence: heartbeat failed")

    # -- NATS ---------------------------------------------------------------------------------

    async def _publish(self, message: AnyReaderPresenceMessage) -> None:
        try:
            await self.nc.publish(SUBJECT, encode(message))
            self.stats.published += 1
        except Exception as exc:  # NATS down: beats and expiry repair it
            self.stats.publish_failures += 1
            log.warning("reader presence: could not publish: %s", exc)

    async def _on_message(self, msg: Any) -> None:
        try:
            message = reader_presence_decoder.decode(msg.data)
        except Exception:
            log.warning("reader presence: ignoring a malformed message")
            return
        if message.node == self.node:
            return
        self.stats.received += 1
        try:
            await self.receive(message)
        except Exception:
            log.exception("reader presence: handling %s failed", type(message).__name__)

    async def receive(self, message: AnyReaderPresenceMessage) -> None:
        """Apply another node's message (``_on_message`` after decoding; tests call it)."""
        node = message.node
        if isinstance(message, ReaderChanged):
            reader = message.reader
            before = self.is_online(reader)
            if message.online:
                expires_at = self.clock() + EXPIRY_BEATS * message.interval
                self._remote.setdefault(node, {})[reader] = expires_at
            else:
                readers = self._remote.get(node)
                if readers is not None:
                    readers.pop(reader, None)
                    if not readers:
                        del self._remote[node]
            if self.is_online(reader) != before:
                self._emit(reader, message.online, message.at)
        elif isinstance(message, ReadersBeat):
            if not message.readers:
                return
            expires_at = self.clock() + EXPIRY_BEATS * message.interval
            readers = self._remote.setdefault(node, {})
            at: datetime | None = None
            for reader in message.readers:
                if reader not in readers and not self.is_online(reader):
                    at = at or self.now()
                    readers[reader] = expires_at
                    self._emit(reader, True, at)  # its ``change`` was missed
                else:
                    readers[reader] = expires_at
        elif isinstance(message, ReadersSync):
            await self.beat()
        elif isinstance(message, ReadersGone):
            gone = self._remote.pop(node, {})
            at = self.now()
            for reader in gone:
                if not self.is_online(reader):
                    self._emit(reader, False, at)

    def _emit(self, reader: UUID, online: bool, at: datetime) -> None:
        self.stats.transitions += 1
        if self.on_change is None:
            return
        try:
            self.on_change(reader, online, at)
        except Exception:
            log.exception("reader presence: on_change failed")


# -- peers ----------------------------------------------------------------------------------


_NO_PEERS: frozenset[UUID] = frozenset()


class PeerCache:
    """``lookup(reader_id)`` (blocking: the readers ``reader_id`` has a conversation with),
    cached per reader for ``ttl`` seconds, at most ``max_entries`` readers (least recently
    loaded dropped first). Concurrent misses for one reader share one lookup."""

    def __init__(
        self,
        lookup: Callable[[UUID], Iterable[UUID]],
        *,
        ttl: float = 10.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.lookups = 0
        self._entries: OrderedDict[UUID, tuple[float, frozenset[UUID]]] = OrderedDict()
        self._loading: dict[UUID, asyncio.Future[frozenset[UUID]]] = {}

    def cached(self, reader: UUID, max_age: float | None = None) -> frozenset[UUID] | None:
        """The cached peers of ``reader`` if younger than ``max_age`` (default: ``ttl``)."""
        entry = self._entries.get(reader)
        limit = self.ttl if max_age is None else max_age
        if entry is not None and self.clock() - entry[0] < limit:
            return entry[1]
        return None

    async def get(self, reader: UUID, max_age: float | None = None) -> frozenset[UUID]:
        """The peers of ``reader``, read again if the cached ones are older than ``max_age``
        (default: ``ttl``). Raises what ``lookup`` raised."""
        found = self.cached(reader, max_age)
        if found is not None:
            return found
        loading = self._loading.get(reader)
        if loading is None:
            loading = asyncio.ensure_future(self._load(reader))
            self._loading[reader] = loading
        return await asyncio.shield(loading)

    def invalidate(self, *readers: UUID) -> None:
        for reader in readers:
            self._entries.pop(reader, None)

    async def _load(self, reader: UUID) -> frozenset[UUID]:
        started = self.clock()
        try:
            found = await in_thread(lambda: list(self.lookup(reader)))
            # one shared empty set for the readers without a conversation (CPython makes a
            # new 216 B one each time, kept as long as the entry)
            peers = frozenset(found) if found else _NO_PEERS
        finally:
            self._loading.pop(reader, None)
        self.lookups += 1
        self._entries[reader] = (started, peers)
        self._entries.move_to_end(reader)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return peers


class PresenceFanout:
    """Sends ``presence`` frames to the local sockets of a reader's peers (module doc).

    ``deliver(reader_id, text)`` queues one frame on every local socket of ``reader_id``;
    ``has_sockets()`` says whether this node has any socket at all."""

    def __init__(
        self,
        peers: PeerCache,
        deliver: Callable[[UUID, str], None],
        has_sockets: Callable[[], bool],
        *,
        concurrency: int = 8,
    ) -> None:
        self.peers = peers
        self.deliver = deliver
        self.has_sockets = has_sockets
        self.concurrency = concurrency
        self.sent = 0
        self._pending: dict[UUID, tuple[bool, datetime]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="presence-fanout")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        self._pending.clear()
        self._idle.set()

    def notify(self, reader: UUID, online: bool, at: datetime) -> None:
        """``reader`` came online / went offline cluster-wide (``ReaderPresence.on_change``)."""
        self._pending.pop(reader, None)  # re-inserted last: a newer state replaces an older
        self._pending[reader] = (online, at)
        self._idle.clear()
        self._wake.set()

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait until every transition notified so far was handled (tests)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _run(self) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, {}
                if not self.has_sockets():
                    continue  # nobody here to tell
                await asyncio.gather(
                    *(
                        self._send(limit, reader, online, at)
                        for reader, (online, at) in batch.items()
                    )
                )
            if not self._pending:
                self._idle.set()

    async def _send(
        self, limit: asyncio.Semaphore, reader: UUID, online: bool, at: datetime
    ) -> None:
        try:
            async with limit:
                peers = await self.peers.get(reader)
        except Exception as exc:  # the database is unavailable: this transition is not told
            log.warning("presence: no peers of %s: %s", reader, exc)
            return
        if not peers:
            return
        text = encode_text(PresenceChanged(reader=ReaderRef(id=reader), online=online, at=at))
        for peer in peers:
            self.deliver(peer, text)
        self.sent += 1


__all__ = [
    "BEAT_CHUNK",
    "EXPIRY_BEATS",
    "SUBJECT",
    "PeerCache",
    "PresenceFanout",
    "ReaderPresence",
    "ReaderPresenceStats",
]
