"""Group commit for eventsourcing's PostgreSQL event store: concurrent saves share one
transaction.

eventsourcing 9.5 inserts a save's events in one transaction that takes
``LOCK TABLE … IN EXCLUSIVE MODE`` (so notification ids commit in order), ``NOTIFY``-s the
table's channel and commits: every save waits for the previous one's commit (an fsync)
while holding nothing useful. ``GroupCommit`` wraps the recorder's ``insert_events``:

- a save that finds no insert under way becomes the *leader*: it takes every save queued
  so far (its own included), inserts all their events with the recorder's own
  ``insert_events`` (one transaction: one lock, one ``INSERT``, one ``NOTIFY``, one commit),
  hands each save its notification ids, and passes the lead to the first save queued
  meanwhile;
- the others wait (their handler thread blocks on an ``Event``) and return as if they had
  inserted alone.

Correctness is the recorder's: the batch is one transaction, so it commits whole or not at
all. Saves of one batch that write the same aggregate version (rivals: concurrent
approvals of one book in this process) never share a transaction: the first one goes into
the batch and the others wait for it; once it committed they get ``IntegrityError`` (the
version is taken, as the events table's key would say), and if it did not, each is inserted
on its own. So a race in this process costs its losers no transaction and does not spoil
the bystanders' batch. When a batch fails on a uniqueness violation all the same
(``IntegrityError``: a save made from an aggregate another process changed meanwhile), each
save of the batch is inserted again on its own, so exactly the stale ones get
``IntegrityError`` (optimistic concurrency is unchanged: of 16 concurrent approvals of one
book one wins). Any other error reaches every save of the batch, as it would have reached
each alone. Each save's ``Idempotency-Key`` claim travels with it, so the
leader's insert marks every key with the position of its own save's events
(``api.adapters.eventstore.batch_of``), not with the leader's. Saves with a tracking record
(or another extra argument) and empty saves go straight to the recorder; ``tracking=None``,
which ``Application.save`` always passes, is a plain save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, StoredEvent
from prometheus_client import Counter

from api.adapters.eventstore import Claim, acting_for, batch_of, current_claim

__all__ = ["GroupCommit", "group_commit"]

Insert = Callable[..., Sequence[int] | None]

SAVES = Counter(
    "liudong_group_commit_saves", "Saves inserted through a group commit, by log.", ["log"]
)
TRANSACTIONS = Counter(
    "liudong_group_commit_transactions",
    "Event-store transactions those saves took (fall-backs included), by log: saves per "
    "transaction is the batching.",
    ["log"],
)


class _Save:
    __slots__ = ("claim", "error", "events", "ids", "lead", "ready")

    def __init__(self, events: Sequence[StoredEvent]) -> None:
        self.events = events
        # the leader inserts it from its own thread: the Idempotency-Key it marks travels along
        self.claim: Claim | None = current_claim()
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.lead = False
        self.ready = threading.Event()


class GroupCommit:
    """See the module docstring. ``insert``: the recorder's own ``insert_events``;
    ``max_events``: at most this many events a transaction (a save is never split);
    ``log``: the label of its counters on ``/metrics`` (``liudong_group_commit_*``)."""

    def __init__(self, insert: Insert, *, max_events: int = 1000, log: str = "") -> None:
        self._insert = insert
        self.max_events = max_events
        self._saves = SAVES.labels(log)
        self._transactions = TRANSACTIONS.labels(log)
        self._lock = threading.Lock()
        self._queue: list[_Save] = []
        self._busy = False
        self.transactions = 0
        """Transactions the batches took (fall-backs included)."""
        self.saves = 0
        """Saves inserted through the group."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The recorder's ``insert_events``, batched with concurrent calls. Returns the
        notification ids of ``stored_events`` (in order); raises what the recorder raises
        (``IntegrityError`` only for a save that conflicts on its own)."""
        # eventsourcing passes ``tracking=None`` with every save of a plain Application
        if not stored_events or any(value is not None for value in kwargs.values()):
            return self._insert(stored_events, **kwargs)
        me = _Save(stored_events)
        with self._lock:
            self._queue.append(me)
            me.lead = not self._busy
            self._busy = True
        if not me.lead:
            me.ready.wait()
        if me.lead:
            self._lead()
        if me.error is not None:
            raise me.error
        return me.ids

    def _lead(self) -> None:
        with self._lock:
            batch, count = [], 0
            while self._queue and (
                not batch or count + len(self._queue[0].events) <= self.max_events
            ):
                save = self._queue.pop(0)
                batch.append(save)
                count += len(save.events)
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:  # arrived meanwhile: the first of them leads the next batch
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.ready.set()
                else:
                    self._busy = False
            for save in batch:
                if not save.lead:
                    save.ready.set()

    def _commit(self, batch: list[_Save]) -> None:
        self.saves += len(batch)
        self._saves.inc(len(batch))
        first, rivals = _split_rivals(batch)
        self._commit_together(first)
        taken = {key for save in first if save.error is None for key in _keys(save)}
        for save in rivals:
            if taken.intersection(_keys(save)):
                save.error = IntegrityError(
                    "duplicate key: a save of the same batch took this aggregate version"
                )
            else:  # its rival failed: the version may still be free
                self._commit_alone(save)
                if save.error is None:
                    taken.update(_keys(save))

    def _commit_together(self, batch: list[_Save]) -> None:
        if len(batch) == 1:
            self._commit_alone(batch[0])
            return
        self.transactions += 1
        self._transactions.inc()
        try:
            with batch_of([(save.claim, len(save.events)) for save in batch]):
                ids = self._insert([event for save in batch for event in save.events])
        except IntegrityError:
            for save in batch:  # find the stale ones: each on its own
                self._commit_alone(save)
            return
        except BaseException as exc:  # noqa: BLE001 - every save of the batch sees it
            for save in batch:
                save.error = exc
            return
        if ids is None:
            return
        start = 0
        for save in batch:
            save.ids = list(ids[start : start + len(save.events)])
            start += len(save.events)

    def _commit_alone(self, save: _Save) -> None:
        self.transactions += 1
        self._transactions.inc()
        try:
            with acting_for(save.claim):
                save.ids = self._insert(save.events)
        except BaseException as exc:  # noqa: BLE001 - handed to its caller
            save.error = exc


def _keys(save: _Save) -> set[tuple[Any, int]]:
    return {(event.originator_id, event.originator_version) for event in save.events}


def _split_rivals(batch: list[_Save]) -> tuple[list[_Save], list[_Save]]:
    """``(first, rivals)``: the saves that write no version an earlier save of ``batch``
    writes, in order, and the others."""
    seen: set[tuple[Any, int]] = set()
    first, rivals = [], []
    for save in batch:
        keys = _keys(save)
        if seen.isdisjoint(keys):
            first.append(save)
        else:
            rivals.append(save)
        seen |= keys
    return first, rivals


def group_commit(app: Any, *, max_events: int = 1000) -> GroupCommit:
    """Make ``app`` (an eventsourcing ``Application`` on PostgreSQL) save through a
    ``GroupCommit``; returns it (its counters). Raises ``TypeError`` for a recorder without
    ``insert_events``."""
    recorder = app.recorder
    insert = getattr(recorder, "insert_events", None)
    if insert is None:
        raise TypeError(f"{type(recorder).__name__} has no insert_events")
    log = getattr(recorder, "log_name", None) or str(app.name).lower()
    group = GroupCommit(insert, max_events=max_events, log=log)
    recorder.insert_events = group.insert_events
    return group
