"""Reader presence with in-memory fakes (no network): the transition logic of
``ReaderPresence`` across several nodes on a fake NATS (multi-device, heartbeats, expiry of a
crashed node, sync at start, missed messages, shutdown), the peer cache, the fan-out, and the
gateway's ``presence`` / ``presence.query`` frames (peers only)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from realtime.gateway import Gateway, GatewayConfig
from realtime.presence import Presence
from realtime.protocol import (
    ReaderChanged,
    ReadersBeat,
    decode_client_frame,
    reader_presence_decoder,
)
from realtime.reader_presence import (
    EXPIRY_BEATS,
    SUBJECT,
    PeerCache,
    PresenceFanout,
    ReaderPresence,
)
from tests.unit.test_gateway import FakeInbox, FakeNats, FakeSocket

pytestmark = pytest.mark.asyncio(loop_scope="function")

INTERVAL = 5.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject = subject
        self.data = data


class FakeBus:
    """Core NATS between in-process nodes: ``publish`` queues, ``pump`` delivers in order
    (what is published while delivering too). ``drop`` loses what matches; a ``dead``
    connection neither sends nor receives (a crashed node)."""

    def __init__(self) -> None:
        self.queue: list[Msg] = []
        self.subs: list[tuple[FakeConn, str, Callable[[Msg], Any]]] = []
        self.sent: list[Any] = []
        self.drop: Callable[[Any], bool] = lambda _message: False

    def connect(self) -> FakeConn:
        return FakeConn(self)

    async def pump(self) -> None:
        while self.queue:
            msg = self.queue.pop(0)
            for conn, subject, cb in list(self.subs):
                if subject == msg.subject and not conn.dead:
                    await cb(msg)


class FakeSub:
    def __init__(self, bus: FakeBus, entry: Any) -> None:
        self.bus, self.entry = bus, entry

    async def unsubscribe(self) -> None:
        self.bus.subs.remove(self.entry)


class FakeConn:
    def __init__(self, bus: FakeBus) -> None:
        self.bus = bus
        self.dead = False

    async def subscribe(self, subject: str, cb: Callable[[Msg], Any]) -> FakeSub:
        entry = (self, subject, cb)
        self.bus.subs.append(entry)
        return FakeSub(self.bus, entry)

    async def publish(self, subject: str, data: bytes) -> None:
        if self.dead:
            raise ConnectionError("no connection")
        message = reader_presence_decoder.decode(data) if subject == SUBJECT else data
        self.bus.sent.append(message)
        if not self.bus.drop(message):
            self.bus.queue.append(Msg(subject, data))


class Node:
    """One ``ReaderPresence`` and the transitions it reported."""

    def __init__(self, bus: FakeBus, name: str, clock: Clock, **kw: Any) -> None:
        self.conn = bus.connect()
        self.changes: list[tuple[UUID, bool]] = []
        self.presence = ReaderPresence(
            self.conn,
            name,
            interval=INTERVAL,
            clock=clock,
            on_change=lambda r, online, _at: self.changes.append((r, online)),
            **kw,
        )

    def take(self) -> list[tuple[UUID, bool]]:
        changes, self.changes = self.changes, []
        return changes


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def started(bus: FakeBus, clock: Clock, *names: str, **kw: Any) -> list[Node]:
    nodes = [Node(bus, name, clock, **kw) for name in names]
    for node in nodes:
        await node.presence.start()
        await bus.pump()
    return nodes


async def stop_all(*nodes: Node) -> None:
    for node in nodes:
        node.conn.dead = False
        await node.presence.stop()


# -- ReaderPresence -------------------------------------------------------------------------


async def test_a_reader_with_two_devices_on_one_node_goes_offline_with_the_last(
    bus: FakeBus, clock: Clock
) -> None:
    (n1,) = await started(bus, clock, "n1")
    reader = uuid4()
    try:
        assert await n1.presence.connected(reader) is True
        assert await n1.presence.connected(reader) is False  # second device
        assert n1.take() == [(reader, True)] and n1.presence.is_online(reader)
        assert await n1.presence.disconnected(reader) is False
        assert n1.take() == [] and n1.presence.is_online(reader)
        assert await n1.presence.disconnected(reader) is True
        assert n1.take() == [(reader, False)] and not n1.presence.is_online(reader)
        assert await n1.presence.disconnected(reader) is False  # more closes than opens
        assert n1.take() == []
    finally:
        await stop_all(n1)


async def test_every_node_sees_the_transitions_of_a_reader_on_any_node(
    bus: FakeBus, clock: Clock
) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    reader = uuid4()
    try:
        await n1.presence.connected(reader)
        await bus.pump()
        assert n1.take() == [(reader, True)] and n2.take() == [(reader, True)]
        assert n2.presence.is_online(reader) and n2.presence.online_count() == 1

        await n2.presence.connected(reader)  # another device, on the other node
        await bus.pump()
        assert n1.take() == [] and n2.take() == []

        await n1.presence.disconnected(reader)  # still on n2
        await bus.pump()
        assert n1.take() == [] and n2.take() == []
        assert n1.presence.is_online(reader) and n2.presence.is_online(reader)

        await n2.presence.disconnected(reader)
        await bus.pump()
        assert n1.take() == [(reader, False)] and n2.take() == [(reader, False)]
        assert not n1.presence.is_online(reader) and n1.presence.online_count() == 0
    finally:
        await stop_all(n1, n2)


async def test_the_at_of_a_remote_transition_is_the_origins(bus: FakeBus, clock: Clock) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    seen: list[datetime] = []
    n2.presence.on_change = lambda _r, _online, at: seen.append(at)
    fixed = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    n1.presence.now = lambda: fixed
    try:
        await n1.presence.connected(uuid4())
        await bus.pump()
        assert seen == [fixed]
    finally:
        await stop_all(n1, n2)


async def test_heartbeats_keep_readers_online_and_a_crashed_nodes_expire(
    bus: FakeBus, clock: Clock
) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    a, b = uuid4(), uuid4()
    try:
        await n1.presence.connected(a)
        await n2.presence.connected(b)
        await bus.pump()
        n1.take(), n2.take()
        for _ in range(10):  # ten intervals of heartbeats: nothing expires
            clock.t += INTERVAL
            await n1.presence.beat()
            await n2.presence.beat()
            await bus.pump()
            n1.presence.sweep()
            n2.presence.sweep()
        assert n1.take() == [] and n2.take() == []
        assert n2.presence.is_online(a)

        n1.conn.dead = True  # n1 crashes: no goodbye, no more beats
        clock.t += EXPIRY_BEATS * INTERVAL - 0.1
        n2.presence.sweep()
        assert n2.presence.is_online(a) and n2.take() == []
        clock.t += 0.2
        n2.presence.sweep()
        assert not n2.presence.is_online(a) and n2.take() == [(a, False)]
        assert n2.presence.is_online(b)  # its own reader is untouched
        assert n2.presence.stats.expired == 1
    finally:
        await stop_all(n1, n2)


async def test_a_starting_node_asks_the_others_and_knows_at_once(
    bus: FakeBus, clock: Clock
) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    readers = [uuid4() for _ in range(5)]
    try:
        for reader in readers:
            await n1.presence.connected(reader)
        await n2.presence.connected(readers[0])
        await bus.pump()
        (n3,) = await started(bus, clock, "n3")  # sync → beats of n1 and n2, no waiting
        assert all(n3.presence.is_online(r) for r in readers)
        assert sorted(n3.take()) == sorted((r, True) for r in readers)  # each once
    finally:
        await stop_all(n1, n2, n3)


async def test_beats_come_in_parts_and_repair_a_missed_online(bus: FakeBus, clock: Clock) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2", chunk=2)
    readers = [uuid4() for _ in range(5)]
    bus.drop = lambda m: isinstance(m, ReaderChanged)  # every change is lost
    try:
        for reader in readers:
            await n1.presence.connected(reader)
        await bus.pump()
        assert n2.take() == []
        bus.sent.clear()
        await n1.presence.beat()
        assert [len(m.readers) for m in bus.sent if isinstance(m, ReadersBeat)] == [2, 2, 1]
        await bus.pump()
        assert sorted(n2.take()) == sorted((r, True) for r in readers)
    finally:
        await stop_all(n1, n2)


async def test_a_missed_offline_expires(bus: FakeBus, clock: Clock) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    gone, staying = uuid4(), uuid4()
    try:
        await n1.presence.connected(gone)
        await n1.presence.connected(staying)
        await bus.pump()
        n2.take()
        bus.drop = lambda m: isinstance(m, ReaderChanged) and not m.online
        await n1.presence.disconnected(gone)
        await bus.pump()
        assert n2.presence.is_online(gone)
        for _ in range(EXPIRY_BEATS + 1):  # n1 keeps beating, without ``gone``
            clock.t += INTERVAL
            await n1.presence.beat()
            await bus.pump()
            n2.presence.sweep()
        assert n2.take() == [(gone, False)]
        assert n2.presence.is_online(staying)
    finally:
        await stop_all(n1, n2)


async def test_a_stopping_node_takes_its_readers_offline_at_once(
    bus: FakeBus, clock: Clock
) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    a, both = uuid4(), uuid4()
    try:
        await n1.presence.connected(a)
        await n1.presence.connected(both)
        await n2.presence.connected(both)
        await bus.pump()
        n2.take()
        await n1.presence.stop()
        await bus.pump()
        assert n2.take() == [(a, False)]  # ``both`` is still on n2
        assert n2.presence.is_online(both)
    finally:
        await stop_all(n2)


async def test_a_nats_outage_is_survived(bus: FakeBus, clock: Clock) -> None:
    n1, n2 = await started(bus, clock, "n1", "n2")
    reader = uuid4()
    try:
        n1.conn.dead = True
        assert await n1.presence.connected(reader) is True  # local state still right
        assert n1.presence.stats.publish_failures == 1
        n1.conn.dead = False
        await n1.presence.resync()  # after the reconnect
        await bus.pump()
        assert n2.presence.is_online(reader) and n2.take() == [(reader, True)]
    finally:
        await stop_all(n1, n2)


async def test_the_heartbeat_loop_runs_by_itself(bus: FakeBus) -> None:
    """The real loop (real clock, short interval): a node that stops beating expires."""
    a = ReaderPresence(bus.connect(), "a", interval=0.1)
    b = ReaderPresence(bus.connect(), "b", interval=0.1)
    seen: list[tuple[UUID, bool]] = []
    b.on_change = lambda r, online, _at: seen.append((r, online))
    reader = uuid4()

    async def pumping() -> None:
        while True:
            await bus.pump()
            await asyncio.sleep(0.005)

    pump = asyncio.create_task(pumping())
    try:
        await a.start()
        await b.start()
        await a.connected(reader)
        await asyncio.sleep(0.6)  # six intervals: heartbeats keep it
        assert seen == [(reader, True)]
        a.nc.dead = True
        assert a._task is not None
        a._task.cancel()
        died = time.monotonic()
        while len(seen) < 2 and time.monotonic() - died < 3:
            await asyncio.sleep(0.01)
        assert seen == [(reader, True), (reader, False)]
        assert time.monotonic() - died >= 0.2  # expired, not dropped at once
    finally:
        pump.cancel()
        a.nc.dead = False
        await a.stop()
        await b.stop()


# -- PeerCache and PresenceFanout -------------------------------------------------------------


class Peers:
    """A blocking peer lookup over a dict, counting (and optionally slowing) its calls."""

    def __init__(self, pairs: list[tuple[UUID, UUID]] = ()) -> None:  # type: ignore[assignment]
        self.of: dict[UUID, set[UUID]] = {}
        self.calls: list[UUID] = []
        self.gate: threading.Event | None = None
        for a, b in pairs:
            self.link(a, b)

    def link(self, a: UUID, b: UUID) -> None:
        self.of.setdefault(a, set()).add(b)
        self.of.setdefault(b, set()).add(a)

    def __call__(self, reader: UUID) -> list[UUID]:
        self.calls.append(reader)
        if self.gate is not None:
            self.gate.wait(5)
        return sorted(self.of.get(reader, ()))


async def test_the_peer_cache_keeps_lookups_for_ttl_and_shares_concurrent_ones(
    clock: Clock,
) -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    peers = Peers([(a, b)])
    cache = PeerCache(peers, ttl=10, clock=clock, max_entries=2)
    peers.gate = threading.Event()
    first = [asyncio.ensure_future(cache.get(a)) for _ in range(5)]
    await asyncio.sleep(0.05)
    peers.gate.set()
    assert await asyncio.gather(*first) == [frozenset({b})] * 5
    assert peers.calls == [a]  # one lookup for five callers
    peers.gate = None
    clock.t += 9
    assert await cache.get(a) == {b} and peers.calls == [a]
    peers.link(a, c)
    assert await cache.get(a, max_age=1) == {b, c} and peers.calls == [a, a]  # refresh
    clock.t += 11
    await cache.get(a)
    assert peers.calls == [a, a, a]  # expired
    cache.invalidate(a)
    await cache.get(a)
    assert len(peers.calls) == 4
    await cache.get(b)
    await cache.get(c)  # max_entries=2: ``a`` (loaded first) is dropped
    assert cache.cached(a) is None and cache.cached(c) == frozenset({a})


async def test_the_fanout_tells_the_peers_sockets_only_and_coalesces(clock: Clock) -> None:
    a, b, stranger = uuid4(), uuid4(), uuid4()
    peers = Peers([(a, b)])
    delivered: list[tuple[UUID, dict[str, Any]]] = []
    sockets = {a, stranger}
    fanout = PresenceFanout(
        PeerCache(peers, clock=clock),
        lambda reader, text: (
            delivered.append((reader, json.loads(text))) if reader in sockets else None
        ),
        lambda: bool(sockets),
    )
    fanout.start()
    at = datetime(2026, 5, 1, tzinfo=UTC)
    try:
        fanout.notify(b, True, at)
        await fanout.settled()
        assert delivered == [
            (
                a,
                {
                    "type": "presence",
                    "reader": {"id": str(b)},
                    "online": True,
                    "at": "2026-05-01T00:00:00Z",
                },
            )
        ]
        delivered.clear()
        # several transitions of one reader before the fan-out runs: the newest wins
        fanout.notify(b, False, at)
        fanout.notify(b, True, at)
        fanout.notify(b, False, at)
        await fanout.settled()
        assert [(r, f["online"]) for r, f in delivered] == [(a, False)]
        assert peers.calls == [b]  # cached

        sockets.clear()  # nobody on this node: nothing is looked up
        fanout.notify(uuid4(), True, at)
        await fanout.settled()
        assert peers.calls == [b]
    finally:
        await fanout.stop()


async def test_a_failing_peer_lookup_is_not_fatal(clock: Clock) -> None:
    def broken(_reader: UUID) -> list[UUID]:
        raise RuntimeError("database down")

    fanout = PresenceFanout(PeerCache(broken, clock=clock), lambda r, t: None, lambda: True)
    fanout.start()
    try:
        fanout.notify(uuid4(), True, datetime.now(UTC))
        await fanout.settled()
        assert fanout.sent == 0
    finally:
        await fanout.stop()


# -- the gateway's frames ---------------------------------------------------------------------


class Cluster:
    """A gateway with reader presence on a fake bus, and its sockets."""

    def __init__(self, bus: FakeBus, peers: Peers, name: str = "g1") -> None:
        self.readers = ReaderPresence(bus.connect(), name, interval=INTERVAL)
        self.gateway = Gateway(
            bus.connect(),
            FakeInbox(),
            chat=None,
            presence=Presence(FakeNats(), name),  # type: ignore[arg-type]
            readers=self.readers,
            peers=peers,
            config=GatewayConfig(peer_refresh=0.0),
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.readers.start()
        await self.gateway.start()

    async def connect(self, reader: UUID) -> FakeSocket:
        socket = FakeSocket()
        self.tasks.append(asyncio.create_task(self.gateway.serve(socket, reader)))
        await socket.wait_for(lambda: any(f["type"] == "hello" for f in socket.sent))
        await asyncio.sleep(0.01)  # counted online after hello
        return socket

    async def settled(self) -> None:
        assert self.gateway.fanout is not None
        await asyncio.sleep(0.01)
        await self.gateway.fanout.settled()
        await asyncio.sleep(0.01)  # the writers

    async def stop(self) -> None:
        await self.gateway.stop()
        await self.readers.stop()
        for task in self.tasks:
            task.cancel()


def presence_frames(socket: FakeSocket) -> list[tuple[str, bool]]:
    return [(f["reader"]["id"], f["online"]) for f in socket.sent if f["type"] == "presence"]


async def query(socket: FakeSocket, *ids: UUID, ref: str | None = None) -> dict[str, Any]:
    count = sum(f["type"] == "presence.state" for f in socket.sent)
    frame: dict[str, Any] = {"type": "presence.query", "reader_ids": [str(i) for i in ids]}
    if ref:
        frame["client_msg_id"] = ref
    socket.incoming.put_nowait(json.dumps(frame))
    await socket.wait_for(lambda: sum(f["type"] == "presence.state" for f in socket.sent) > count)
    return [f for f in socket.sent if f["type"] == "presence.state"][-1]


async def test_peers_sockets_get_presence_frames_and_strangers_do_not(bus: FakeBus) -> None:
    a, b, stranger = uuid4(), uuid4(), uuid4()
    node = Cluster(bus, Peers([(a, b)]))
    await node.start()
    try:
        a_ws = await node.connect(a)
        s_ws = await node.connect(stranger)
        b_phone = await node.connect(b)
        await node.settled()
        assert presence_frames(a_ws) == [(str(b), True)]
        b_tablet = await node.connect(b)
        b_phone.incoming.put_nowait(None)  # the phone goes away; the tablet keeps b online
        await node.settled()
        assert presence_frames(a_ws) == [(str(b), True)]
        b_tablet.incoming.put_nowait(None)
        await node.settled()
        assert presence_frames(a_ws) == [(str(b), True), (str(b), False)]
        assert presence_frames(s_ws) == [] and presence_frames(b_phone) == []
        assert presence_frames(b_tablet) == []  # a came online before b had a socket
    finally:
        await node.stop()


async def test_presence_query_answers_for_peers_only(bus: FakeBus) -> None:
    a, b, c, nobody = uuid4(), uuid4(), uuid4(), uuid4()
    peers = Peers([(a, b), (a, c)])
    node = Cluster(bus, peers)
    await node.start()
    try:
        a_ws = await node.connect(a)
        await node.connect(b)
        state = await query(a_ws, b, c, b, nobody, a, ref="q1")
        assert state == {
            "type": "presence.state",
            "client_msg_id": "q1",
            "readers": [{"id": str(b), "online": True}, {"id": str(c), "online": False}],
            "unknown": [str(nobody), str(a)],
        }
        b_ws = await node.connect(b)
        assert (await query(b_ws, a, c))["readers"] == [{"id": str(a), "online": True}]
        assert (await query(b_ws, a, c))["unknown"] == [str(c)]  # c is a's peer, not b's

        # a conversation opened a moment ago counts at once (the cached peers are re-read)
        peers.link(b, c)
        assert (await query(b_ws, c))["readers"] == [{"id": str(c), "online": False}]
        assert (await query(b_ws))["readers"] == []
    finally:
        await node.stop()


async def test_presence_query_is_limited_to_a_hundred_ids() -> None:
    from realtime.protocol import FrameError, PresenceQuery

    ids = [str(uuid4()) for _ in range(101)]
    frame = decode_client_frame(json.dumps({"type": "presence.query", "reader_ids": ids[:100]}))
    assert isinstance(frame, PresenceQuery) and len(frame.reader_ids) == 100
    with pytest.raises(FrameError) as refused:
        decode_client_frame(json.dumps({"type": "presence.query", "reader_ids": ids}))
    assert refused.value.code == "invalid_frame" and "100" in refused.value.message


async def test_a_remote_transition_reaches_the_local_peers(bus: FakeBus, clock: Clock) -> None:
    a, b = uuid4(), uuid4()
    node = Cluster(bus, Peers([(a, b)]))
    await node.start()
    (other,) = await started(bus, clock, "other")
    try:
        a_ws = await node.connect(a)
        await other.presence.connected(b)
        await bus.pump()
        await node.settled()
        assert presence_frames(a_ws) == [(str(b), True)]
        assert (await query(a_ws, b))["readers"] == [{"id": str(b), "online": True}]
        await other.presence.stop()  # the other node shuts down
        await bus.pump()
        await node.settled()
        assert presence_frames(a_ws) == [(str(b), True), (str(b), False)]
    finally:
        await node.stop()
