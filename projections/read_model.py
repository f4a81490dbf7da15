"""``ReadModelProjection``: the base class of our read models (shelf, inbox, rooms).

A projection owns a set of tables (its read model), built from one or more notification
logs (``sources``). It says what its tables are (``ddl``, created in each version's schema,
``projections.versions``) and how an event changes them: ``apply``, one event at a time,
and optionally ``fold_page``, a whole page folded in memory and written back set-wise
(``projections.batch``). The runner (``projections.runner``) decides which of the two a
page goes through and writes it, with the tracking position, in one transaction.

Not to be confused with eventsourcing's ``eventsourcing.projection.Projection``
(``process_event(event, tracking)`` into a ``TrackingRecorder``), which we do not use:
``docs/adr/0001-projection-runner.md`` says why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from projections.batch import Page

Cursor = psycopg.Cursor[dict[str, Any]]


class ReadModelProjection(ABC):
    """A read model built from one or more notification logs.

    Subclasses set ``name``, ``sources`` (names of the logs followed), ``ddl`` (SQL creating
    the tables inside ``{schema}``) and ``tables`` (the names exposed as views), and
    implement ``apply``.

    ``records = True``: events arrive as ``projections.records.Record`` (fast decoding,
    ``record.type`` is ``"Book.Published"``, fields in ``record.data`` and as attributes)
    instead of domain events decoded by the Application's mapper.

    Set-wise pages: a projection may also implement ``fold_page``, which returns a
    ``projections.batch.Page``: the page's events folded in memory over the rows they touch,
    written back with a few statements. The runner uses it for pages of at least
    ``batch_min`` events (``apply`` otherwise, and to find the failing event when a page
    fails); both must leave the same rows. A subclass that overrides ``apply`` but not
    ``fold_page`` gets ``apply`` for every event (``folds_pages``), so refining one event's
    handling never goes unnoticed.
    """

    name: ClassVar[str]
    sources: ClassVar[tuple[str, ...]]
    ddl: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    records: ClassVar[bool] = False
    batch_min: ClassVar[int] = 2
    durable_pages: ClassVar[bool] = True
    """Whether the live runner's pages commit durably. ``False``: the runner's page
    connection runs with ``synchronous_commit = off`` (no wait for a page's WAL flush; a
    database crash may lose the last pages committed, ≤ 3 × ``wal_writer_delay``; WAL is
    flushed in order, so what is lost is a suffix of the pages). Safe only for a
    read model that is a function of the (durable) log and has no side effect outside its
    tables: rows and tracking position are lost together, and the runner projects the
    same events again to the same rows. Not for a projection whose ``after_commit``
    publishes what a page wrote (the inbox: its items' ``seq`` depend on how the logs'
    pages interleave, and a re-projected item could get another item's published id)."""
    deferred_indexes: ClassVar[tuple[str, ...]] = ()
    """Names of indexes in ``ddl`` (each ``CREATE INDEX IF NOT EXISTS <name> …;``) that
    nothing reads while the projection writes: a rebuild creates them after filling the
    version (``create_version(defer_indexes=True)``, ``create_deferred_indexes``), which is
    faster than maintaining them row by row."""

    @abstractmethod
    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        """Apply one event to the tables in ``schema`` (inside the page's transaction).
        Raise to signal a poison event."""

    def fold_page(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> Page | None:
        """A ``Page`` folding ``events`` (``Record``s of ``source``) into the tables in
        ``schema``, or ``None`` to apply them one by one. ``carry``: the ``Page`` before,
        when the runner overlaps pages (``projections.batch``)."""
        return None

    event_types: frozenset[str] | None = None
    """The event types (``"Loan.Requested"``…) ``apply`` and ``fold_page`` act on, when
    they ignore the others: those are then not decoded (``records`` only). ``None``: all."""

    @property
    def decode_types(self) -> frozenset[str] | None:
        """What to decode (``event_types``), unless a subclass refines ``apply`` (it may
        look at any event)."""
        return self.event_types if self.records and self.folds_pages else None

    @property
    def folds_pages(self) -> bool:
        """Whether pages go through ``fold_page``: it is overridden, and ``apply`` is not
        overridden below the class that defines it."""
        mro = type(self).__mro__
        page_cls = next(k for k in mro if "fold_page" in k.__dict__)
        apply_cls = next(k for k in mro if "apply" in k.__dict__)
        return page_cls is not ReadModelProjection and issubclass(page_cls, apply_cls)

    def after_commit(self, source: str, first: int, last: int) -> None:  # noqa: B027
        """Called after a page [first, last] of ``source`` committed (e.g. to relay it)."""
