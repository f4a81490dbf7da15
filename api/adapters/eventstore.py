"""The event store's recorder, with one addition: an idempotent request's key is marked as
committed in the same transaction as the command's events.

A command run under an ``Idempotency-Key`` (``api.http.idempotency``) runs inside
``claimed(reader_id, key)``. When the Library or the Chat application saves events in that
context, ``MarkingRecorder`` also sets ``committed_log`` (``"library"`` or ``"chat"``) and
``committed_position`` (the last event's notification id) of that key's row in
``idempotency_keys`` (migration ``0015_idempotency_commits``), in the transaction that
inserts the events: the mark exists if and only if the events do. A retry after a crash
between the commit and the stored response reads the mark and answers from what was
recorded instead of running the command again. The first save of a request marks it (a
request that saves in both logs, such as a loan request opening its conversation, keeps
the first).

It is eventsourcing's ``PostgresApplicationRecorder`` in its default insert mode (table
lock, gap-free reading order); the factory uses it through ``APPLICATION_RECORDER_TOPIC``
(``RECORDER_TOPIC``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

RECORDER_TOPIC = "api.adapters.eventstore:MarkingRecorder"


@dataclass(frozen=True)
class Claim:
    """The idempotent request running in this context: its reader and ``Idempotency-Key``."""

    reader_id: UUID
    key: str


_claim: ContextVar[Claim | None] = ContextVar("liudong_idempotency_claim", default=None)
_batch: ContextVar[Sequence[tuple[Claim | None, int]] | None] = ContextVar(
    "liudong_idempotency_batch", default=None
)


def current_claim() -> Claim | None:
    """The claim of the request running in this context, if any."""
    return _claim.get()


@contextmanager
def acting_for(claim: Claim | None) -> Iterator[None]:
    """Run the body as the request of ``claim`` (``None``: none), e.g. in another thread
    that inserts a save on its behalf."""
    token = _claim.set(claim)
    try:
        yield
    finally:
        _claim.reset(token)


@contextmanager
def batch_of(saves: Sequence[tuple[Claim | None, int]]) -> Iterator[None]:
    """Run the body as one insert of several saves (group commit): ``(claim, number of
    events)`` of each, in the order of their events; each claim is marked with the last
    position of its own events."""
    token = _batch.set(saves)
    try:
        yield
    finally:
        _batch.reset(token)


@contextmanager
def claimed(reader_id: UUID, key: str) -> Iterator[Claim]:
    """Run the body as the request ``(reader_id, key)``: events saved in it mark the key."""
    claim = Claim(reader_id, key)
    token = _claim.set(claim)
    try:
        yield claim
    finally:
        _claim.reset(token)


_MARK = (
    "UPDATE idempotency_keys SET committed_log = %s, committed_position = %s "
    "WHERE reader_id = %s AND key = %s AND committed_position IS NULL"
)


class MarkingRecorder(PostgresApplicationRecorder):
    """``PostgresApplicationRecorder`` that marks the claimed idempotency key (see module)."""

    @property
    def log_name(self) -> str:
        """``library`` for ``library_events``: the name positions carry in the API."""
        return self.events_table_name.rsplit(".", 1)[-1].removesuffix("_events")

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_after(self, versions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of each ``(originator_id, version)`` pair with a higher version, each
        aggregate's in version order: the fast-forward of several cached aggregates in one
        statement (``domain.library.Library``) where ``select_events(gt=…)`` takes one
        each. Retried like eventsourcing's own ``select_events``."""
        one = SQL(
            "(SELECT originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version)"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        statement = SQL(" UNION ALL ").join([one] * len(versions))
        params = [value for pair in versions for value in pair]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if not ids:
            return ids
        saves = _batch.get()
        if saves is None:
            saves = [(_claim.get(), len(ids))]
        start = 0
        for claim, count in saves:
            own = ids[start : start + count]
            start += count
            if claim is not None and own:
                curs.execute(_MARK, (self.log_name, max(own), claim.reader_id, claim.key))
        return ids


__all__ = [
    "RECORDER_TOPIC",
    "Claim",
    "MarkingRecorder",
    "acting_for",
    "batch_of",
    "claimed",
    "current_claim",
]
