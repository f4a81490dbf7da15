"""The inbox → JetStream relay against the real PostgreSQL (``relay_tracking``) and the real
NATS: nothing committed is lost when a publish fails, a gap is read back from the database,
re-publishing is de-duplicated by ``Nats-Msg-Id``, and the tracking position only advances
after JetStream acknowledged."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import nats
import pytest

from api.bootstrap.db import make_pool
from realtime.relay import MSG_ID, STREAM, Relay, RelayTracking, inbox_subject


class FakeInbox:
    """``InboxPages`` over a list: items at log positions of one source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[dict[str, Any]] = []
        self.committed = 0

    def commit(self, reader: str, count: int) -> tuple[int, int]:
        first = self.committed + 1
        seq = sum(1 for i in self.items if i["reader_id"] == reader)
        for _ in range(count):
            self.committed += 1
            seq += 1
            self.items.append(
                {
                    "reader_id": reader,
                    "seq": seq,
                    "kind": "test",
                    "at": datetime.now(UTC),
                    "data": {"p": self.committed},
                    "source": self.source,
                    "position": self.committed,
                }
            )
        return first, self.committed

    def items_for_positions(self, source: str, first: int, last: int) -> list[dict[str, Any]]:
        return [i for i in self.items if i["source"] == source and first <= i["position"] <= last]

    def position(self, source: str) -> int:
        return self.committed


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def tracking(database_url: str) -> Any:
    pool = make_pool(database_url, size=2, name="relay-test")
    yield RelayTracking(pool)
    pool.close()


async def _received(nc: Any, reader: str) -> tuple[list[int], Any]:
    seqs: list[int] = []

    async def on_msg(msg: Any) -> None:
        seqs.append(int(msg.headers[MSG_ID].rsplit(":", 1)[1]))

    sub = await nc.subscribe(inbox_subject(reader), cb=on_msg)
    return seqs, sub


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_failed_publish_is_retried_from_the_database_and_never_skipped(
    nc: Any, tracking: RelayTracking
) -> None:
    source, reader = f"test-{uuid4().hex[:8]}", str(uuid4())
    inbox = FakeInbox(source)
    inbox.commit(reader, 3)  # before the relay ever ran: not re-published (first run)
    seqs, sub = await _received(nc, reader)
    relay = Relay(nc, inbox, tracking, [source], interval=0.2)
    await relay.start()
    try:
        assert await asyncio.to_thread(tracking.load, source) == 3

        first, last = inbox.commit(reader, 5)
        await asyncio.to_thread(relay.on_page, source, first, last)  # as the projection does
        await _until(lambda: seqs == [4, 5, 6, 7, 8])
        await _until(lambda: tracking.load(source) == 8)

        # NATS refuses the next page: the position must not move past it
        real = relay.js.publish_async
        failures = {"left": 2}

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise ConnectionError("nats unavailable")
            return await real(*args, **kwargs)

        relay.js.publish_async = flaky  # type: ignore[method-assign]
        first, last = inbox.commit(reader, 4)
        await asyncio.to_thread(relay.on_page, source, first, last)
        await _until(lambda: relay.stats.failures >= 1)
        assert tracking.load(source) == 8
        await _until(lambda: seqs[-1] == 12, timeout=15)  # read back from the "database"
        assert seqs == list(range(4, 13))
        await _until(lambda: tracking.load(source) == 12)
    finally:
        await relay.stop()
        await sub.unsubscribe()


async def test_a_page_after_a_gap_reads_the_gap_from_the_database(
    nc: Any, tracking: RelayTracking
) -> None:
    source, reader = f"test-{uuid4().hex[:8]}", str(uuid4())
    inbox = FakeInbox(source)
    seqs, sub = await _received(nc, reader)
    relay = Relay(nc, inbox, tracking, [source], is_active=lambda: False, interval=60)
    await relay.start()
    try:
        inbox.commit(reader, 2)  # committed by another node that died before relaying
        first, last = inbox.commit(reader, 2)
        await asyncio.to_thread(relay.on_page, source, first, last)
        await _until(lambda: seqs == [1, 2, 3, 4])
        await _until(lambda: tracking.load(source) == 4)
    finally:
        await relay.stop()
        await sub.unsubscribe()


async def test_a_page_handed_over_in_memory_is_published_without_reading_it_back(
    nc: Any, tracking: RelayTracking
) -> None:
    source, reader = f"test-{uuid4().hex[:8]}", str(uuid4())
    inbox = FakeInbox(source)
    seqs, sub = await _received(nc, reader)
    relay = Relay(nc, inbox, tracking, [source], is_active=lambda: False, interval=60)
    await relay.start()
    try:
        first, last = inbox.commit(reader, 3)
        items = inbox.items_for_positions(source, first, last)
        reads: list[tuple[Any, ...]] = []

        def read(*page: Any) -> list[dict[str, Any]]:
            reads.append(page)
            return []

        inbox.items_for_positions = read  # type: ignore[method-assign]
        await asyncio.to_thread(relay.on_page, source, first, last, items)  # as the inbox does
        await _until(lambda: seqs == [1, 2, 3])
        await _until(lambda: tracking.load(source) == 3)
        assert reads == []
    finally:
        await relay.stop()
        await sub.unsubscribe()


async def test_pages_queued_behind_a_busy_relay_are_published_together_in_order(
    nc: Any, tracking: RelayTracking
) -> None:
    source, reader = f"test-{uuid4().hex[:8]}", str(uuid4())
    inbox = FakeInbox(source)
    seqs, sub = await _received(nc, reader)
    relay = Relay(nc, inbox, tracking, [source], is_active=lambda: False, interval=60)
    saves: list[int] = []
    release = threading.Event()
    save = tracking.save

    def slow_save(src: str, position: int) -> None:
        saves.append(position)
        release.wait(10)  # the first page's tracking write holds the relay up
        save(src, position)

    await relay.start()
    tracking.save = slow_save  # type: ignore[method-assign]
    try:
        pages = [inbox.commit(reader, 2) for _ in range(4)]
        for first, last in pages:
            items = inbox.items_for_positions(source, first, last)
            await asyncio.to_thread(relay.on_page, source, first, last, items)
            if first == 1:
                await _until(lambda: saves == [2])
        release.set()
        await _until(lambda: tracking.load(source) == 8)
        await _until(lambda: seqs == list(range(1, 9)))
        assert saves == [2, 8]  # pages 2-4 were published as one batch, tracked once
        assert relay.stats.published == 8
    finally:
        release.set()
        await relay.stop()
        await sub.unsubscribe()


async def test_re_publishing_is_deduplicated_by_jetstream(nc: Any, tracking: RelayTracking) -> None:
    source, reader = f"test-{uuid4().hex[:8]}", str(uuid4())
    inbox = FakeInbox(source)
    relay = Relay(nc, inbox, tracking, [source], interval=60)
    await relay.start()
    try:
        inbox.commit(reader, 3)
        await relay._publish(inbox.items)
        await relay._publish(inbox.items)  # e.g. two nodes catching up at once
        # Only 3 publishes were accepted; every other attempt was a JetStream duplicate. The
        # relay's own start-up catch-up may race the explicit calls, so duplicates can be > 3.
        assert relay.stats.published == 3
        assert relay.stats.duplicates >= 3
        info = await relay.js.stream_info(STREAM)
        assert info.config.duplicate_window == 120.0
    finally:
        await relay.stop()


async def test_pages_handed_over_in_memory_reach_local_sockets_before_nats(
    nc: Any, tracking: RelayTracking
) -> None:
    source, reader = f"test-{uuid4().hex[:8]}", str(uuid4())
    inbox = FakeInbox(source)
    relay = Relay(nc, inbox, tracking, [source], is_active=lambda: False, interval=60)
    local: list[tuple[str, int, dict[str, Any], bool]] = []
    published: list[int] = []

    def deliver(reader_id: str, seq: int, frame: Callable[[], tuple[str, bool]]) -> None:
        text, withheld = frame()
        local.append((reader_id, seq, json.loads(text), withheld))

    async def on_msg(msg: Any) -> None:
        published.append(int(msg.headers[MSG_ID].rsplit(":", 1)[1]))

    sub = await nc.subscribe(inbox_subject(reader), cb=on_msg)
    relay.local = deliver
    await relay.start()
    real = relay.js.publish_async

    async def checked(*args: Any, **kwargs: Any) -> Any:
        assert len(local) >= 3  # the page went to the local sockets first
        return await real(*args, **kwargs)

    relay.js.publish_async = checked  # type: ignore[method-assign]
    try:
        first, last = inbox.commit(reader, 3)
        items = inbox.items_for_positions(source, first, last)
        items[1]["kind"] = "loan.requested"
        items[1]["data"] = {"contact": "13800000000", "note": "hi", "loan_id": "l1"}
        await asyncio.to_thread(relay.on_page, source, first, last, items)
        await _until(lambda: published == [1, 2, 3])
        assert [(r, s, w) for r, s, _f, w in local] == [
            (reader, 1, False),
            (reader, 2, True),  # personal fields withheld: the gateway reads it from the inbox
            (reader, 3, False),
        ]
        frame = local[0][2]
        assert (frame["type"], frame["seq"], frame["data"]) == ("event", 1, {"p": 1})
        assert "contact" not in local[1][2]["data"]
    finally:
        await relay.stop()
        await sub.unsubscribe()
