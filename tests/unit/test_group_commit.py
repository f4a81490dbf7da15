"""Group commit (``api.bootstrap.group_commit``) over a fake recorder: concurrent saves share
transactions, each gets its own notification ids, and a conflicting save alone fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from api.bootstrap.group_commit import SAVES, TRANSACTIONS, GroupCommit


class FakeRecorder:
    """Inserts like the events table: a unique (originator_id, originator_version) key,
    all or nothing per call, ids in order; each call takes ``delay`` seconds (the commit)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.rows: dict[tuple[UUID, int], int] = {}
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def insert_events(self, events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        time.sleep(self.delay)
        with self._lock:
            keys = [(e.originator_id, e.originator_version) for e in events]
            if len(set(keys)) != len(keys) or any(k in self.rows for k in keys):
                raise IntegrityError("duplicate key")
            self.calls.append(len(events))
            ids = []
            for key in keys:
                self.rows[key] = len(self.rows) + 1
                ids.append(self.rows[key])
            return ids


def event(aggregate: UUID, version: int) -> StoredEvent:
    return StoredEvent(aggregate, version, "topic", b"{}")


def run_concurrently(group: GroupCommit, saves: list[list[StoredEvent]]) -> list[Any]:
    results: list[Any] = [None] * len(saves)
    barrier = threading.Barrier(len(saves))

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = group.insert_events(saves[i])
        except IntegrityError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(saves))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_concurrent_saves_share_transactions_and_get_their_own_ids() -> None:
    recorder = FakeRecorder(delay=0.02)
    group = GroupCommit(recorder.insert_events, log="shares")
    saves = [[event(uuid4(), 1), event(uuid4(), 1)] for _ in range(16)]
    results = run_concurrently(group, saves)
    # /metrics shows the same counts
    assert SAVES.labels("shares")._value.get() == 16
    assert TRANSACTIONS.labels("shares")._value.get() == len(recorder.calls)
    for save, ids in zip(saves, results, strict=True):
        assert ids == [recorder.rows[(e.originator_id, e.originator_version)] for e in save]
    assert sum(recorder.calls) == 32
    assert len(recorder.calls) < 16  # batched: fewer transactions than saves
    assert group.saves == 16 and group.transactions == len(recorder.calls)


def test_of_sixteen_saves_of_one_version_exactly_one_wins() -> None:
    recorder = FakeRecorder(delay=0.01)
    group = GroupCommit(recorder.insert_events)
    book = uuid4()
    others = [[event(uuid4(), 1)] for _ in range(8)]
    rivals = [[event(book, 7), event(uuid4(), 2)] for _ in range(16)]
    results = run_concurrently(group, rivals + others)
    won = [r for r in results[:16] if not isinstance(r, IntegrityError)]
    assert len(won) == 1
    assert all(isinstance(r, list) for r in results[16:])  # bystanders are not refused
    assert len(recorder.rows) == 2 + 8


def test_one_save_alone_and_empty_or_tracked_saves_go_straight_through() -> None:
    recorder = FakeRecorder()
    group = GroupCommit(recorder.insert_events)
    a = uuid4()
    assert group.insert_events([event(a, 1)]) == [1]
    with pytest.raises(IntegrityError):
        group.insert_events([event(a, 1)])
    assert group.insert_events([]) == []
    # Application.save always passes tracking=None: a plain save, grouped
    assert group.insert_events([event(a, 2)], tracking=None) == [2]
    assert group.saves == 3
    tracked = Tracking(application_name="upstream", notification_id=1)
    assert group.insert_events([event(a, 3)], tracking=tracked) == [3]  # not batched
    assert group.saves == 3


def test_an_error_reaches_every_save_of_its_batch_and_the_group_recovers() -> None:
    calls = {"n": 0}

    def broken(events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        calls["n"] += 1
        time.sleep(0.01)
        if calls["n"] <= 2:
            raise ConnectionError("database down")
        return list(range(len(events)))

    group = GroupCommit(broken)
    results = []
    for _ in range(2):
        try:
            results.append(group.insert_events([event(uuid4(), 1)]))
        except ConnectionError as exc:
            results.append(exc)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert group.insert_events([event(uuid4(), 1)]) == [0]  # a failed leader passed on
    assert group.insert_events([event(uuid4(), 1)]) == [0]


def test_rivals_in_one_batch_cost_no_transaction_and_spare_the_bystanders() -> None:
    """16 saves of one aggregate version and 8 bystanders queued behind a leader: they go in
    one more transaction (the first rival and the bystanders); the other 15 rivals get
    ``IntegrityError`` without a transaction of their own, no bystander is retried."""
    recorder = FakeRecorder()
    group = GroupCommit(recorder.insert_events)
    queued = threading.Event()
    inner = recorder.insert_events

    def gated(events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        if not recorder.calls:  # the leader's transaction waits until the others queued
            assert queued.wait(10)
        return inner(events, **kwargs)

    group._insert = gated
    book = uuid4()
    rivals = [[event(book, 7), event(uuid4(), 2)] for _ in range(16)]
    others = [[event(uuid4(), 1)] for _ in range(8)]
    results: list[Any] = [None] * 25  # the leader's, then the rivals', then the others'

    def one(i: int, save: list[StoredEvent]) -> None:
        try:
            results[i] = group.insert_events(save)
        except IntegrityError as exc:
            results[i] = exc

    leader = threading.Thread(target=one, args=(0, [event(uuid4(), 1)]))
    leader.start()
    while not group._busy:
        time.sleep(0.001)
    threads = [
        threading.Thread(target=one, args=(i + 1, save)) for i, save in enumerate(rivals + others)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(group._queue) < 24 and time.monotonic() < deadline:
        time.sleep(0.001)
    queued.set()
    for thread in [leader, *threads]:
        thread.join(10)
    won = [r for r in results[1:17] if not isinstance(r, IntegrityError)]
    assert len(won) == 1
    assert all(isinstance(r, list) for r in results[17:])
    assert isinstance(results[0], list)
    assert recorder.calls == [1, 2 + 8]  # the leader alone, then one batch
    assert group.transactions == 2 and group.saves == 25
