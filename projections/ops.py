"""Operating projections: rebuild with an atomic switch, skipping a poison event, retrying.

What an operator (``liudong projections …``), ``/metrics`` and ``/readyz`` use. Everything is
read from and written to the database, so it works whichever process runs the projection
(``liudong serve`` on this machine or another one) and whether or not one runs at all.

Status: ``projections.status``.

Rebuild (``rebuild``)
    1. create the next version (schema ``<name>_v<N>``), inactive, without the projection's
       ``deferred_indexes`` (nothing reads it yet); the active one keeps serving;
    2. fill it in pages (10,000 events by default) from position 0 with
       ``ReadModelRunner.catch_up(schema=new)`` (overlapped, folded pages; no side effects:
       no relay, no board), chasing the live version's position but never passing it; these
       pages commit without waiting for the WAL flush (a crash loses the version's rows and
       position together: a resumed rebuild redoes them); then create the deferred indexes;
    3. in one transaction: lock the live version's tracking rows ``FOR UPDATE`` (this waits
       for the live runner's page in progress and holds its next page), bring the new
       version to exactly the live positions, ``switch_to`` it (registry + views), commit;
    4. drop the old version (schema, registry, tracking and failure rows).

    The switch happens at the live version's position, not at the log head: the live runner
    resumes on the new version from there and runs the side effects (``after_commit``) of
    every later event itself, so none is lost or doubled. With no runner alive, the new
    version simply waits at that position for the next one. Only one rebuild of a
    projection runs at a time (an advisory lock, ``rebuild_lock_key``).

Skip (``skip``) and retry (``retry``)
    A poison event stops its projection (``projections.runner`` docstring). ``skip`` marks
    the recorded failure skipped (by whom, when, why) and moves the tracking position past
    it, in one transaction; ``retry`` clears the failure so the event is tried again (after
    a code fix). A failed runner notices either within ``retry_interval`` (5 s) and
    resumes.

Errors: ``OpsError`` and its subclasses carry a message meant for the operator.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from projections.read_model import ReadModelProjection
from projections.runner import ReadModelRunner
from projections.source import Source

# -- errors -------------------------------------------------------------------------------------
from projections.status import (
    Failure,
    ProjectionStatus,
    SourceStatus,
    VersionStatus,
    connect,
    log_head,
    projection_status,
    rebuild_lock_key,
    status,
    tracking_rows,
    version_lock_key,
)
from projections.versions import (
    active_schema,
    create_deferred_indexes,
    create_version,
    switch_to,
)


class OpsError(RuntimeError):
    """An operation was refused or could not finish; the message says why."""


class RebuildInProgress(OpsError):
    """Another rebuild of the same projection is running."""


class NothingToSkip(OpsError):
    """No unskipped failure is recorded at that position."""


@dataclass(frozen=True)
class RebuildResult:
    projection: str
    old_schema: str | None
    new_schema: str
    events: int  # notifications processed into the new version
    seconds: float
    positions: dict[str, int]  # where the new version was switched in
    dropped_old: bool

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


Progress = Callable[[int, int], None]
"""``progress(processed_now, estimated_total)``: called after each page."""


def drop_version(conn: psycopg.Connection[Any], projection: str, schema: str) -> None:
    """Drop an inactive version: its schema, registry, tracking and failure rows (in the
    caller's transaction). Raises ``OpsError`` for the active version."""
    row = conn.execute(
        "SELECT active FROM projection_versions WHERE projection = %s AND schema_name = %s",
        (projection, schema),
    ).fetchone()
    if row is not None and row["active"]:
        raise OpsError(f"{schema} is the active version of {projection}; it cannot be dropped")
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    for table in ("projection_tracking", "projection_failures", "projection_versions"):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE schema_name = %s").format(sql.Identifier(table)),
            (schema,),
        )


def _prepare_version(
    conn: psycopg.Connection[Any], projection: ReadModelProjection, *, resume: bool
) -> tuple[str | None, str, bool]:
    """``(active schema or None, schema to fill, resumed)``; drops leftovers of interrupted
    rebuilds unless resuming the newest one."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (version_lock_key(projection.name),))
        old = active_schema(conn, projection.name)
        rows = conn.execute(
            "SELECT version, schema_name FROM projection_versions "
            "WHERE projection = %s AND NOT active ORDER BY version",
            (projection.name,),
        ).fetchall()
        old_version = conn.execute(
            "SELECT version FROM projection_versions WHERE schema_name = %s", (old,)
        ).fetchone()
        newer = [r for r in rows if old_version is None or r["version"] > old_version["version"]]
        if resume and newer:
            target = newer[-1]["schema_name"]
            for r in rows:
                if r["schema_name"] != target:
                    drop_version(conn, projection.name, r["schema_name"])
            return old, target, True
        for r in rows:
            drop_version(conn, projection.name, r["schema_name"])
        return old, create_version(conn, projection, activate=False, defer_indexes=True), False


def rebuild(  # noqa: PLR0913
    database_url: str,
    projection: ReadModelProjection,
    sources: Mapping[str, Source],
    *,
    page_size: int = 10_000,
    progress: Progress | None = None,
    keep_old: bool = False,
    resume: bool = False,
    lock_timeout: float = 30.0,
) -> RebuildResult:
    """Rebuild ``projection`` into a new version and switch to it (module docstring).

    ``page_size``: notifications per transaction (10,000: a rebuild folds each page in
    memory, and larger pages fold more of a row's changes into one write; the throughput
    levels off above). ``keep_old``: keep the previous version
    (inactive) instead of dropping it. ``resume``: continue the newest version an
    interrupted rebuild left, instead of starting again. ``lock_timeout``: seconds the switch
    may wait for the live runner's page. Raises ``RebuildInProgress``,
    ``runner.ProjectionFailed`` (a poison event; the new version stays, inactive, with
    the failure recorded), ``OpsError``."""
    missing = [s for s in projection.sources if s not in sources]
    if missing:
        raise OpsError(f"{projection.name} follows {missing}, which are not available here")
    started = time.monotonic()
    with (
        connect(
            database_url,
            autocommit=True,
            application_name=f"liudong rebuild {projection.name}"[:63],
        ) as admin,
        connect(database_url, autocommit=True) as conn,
    ):
        got = admin.execute(
            "SELECT pg_try_advisory_lock(%s) AS ok", (rebuild_lock_key(projection.name),)
        ).fetchone()
        if not got or not got["ok"]:
            raise RebuildInProgress(f"a rebuild of {projection.name} is already running")
        # A rebuild's pages need not wait for the WAL flush: if the server crashes, the
        # version's rows and tracking position are lost together and the (resumed) rebuild
        # redoes those pages. The switch itself is committed durably (``_switch``).
        conn.execute("SET synchronous_commit = off")
        old, new, _ = _prepare_version(conn, projection, resume=resume)
        builder = ReadModelRunner(projection, database_url, dict(sources), page_size=page_size)
        try:
            processed = _fill(conn, builder, projection, sources, old, new, progress)
            with conn.transaction():
                create_deferred_indexes(conn, projection, new)
            positions, more = _switch(conn, builder, projection, sources, old, new, lock_timeout)
        finally:
            builder.close()
        processed += more
        if progress and more:
            progress(more, 0)
        dropped = False
        if old is not None and not keep_old:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
                drop_version(conn, projection.name, old)
            dropped = True
    return RebuildResult(
        projection=projection.name,
        old_schema=old,
        new_schema=new,
        events=processed,
        seconds=time.monotonic() - started,
        positions=positions,
        dropped_old=dropped,
    )


def _targets(
    conn: psycopg.Connection[Any],
    projection: ReadModelProjection,
    sources: Mapping[str, Source],
    old: str | None,
) -> dict[str, int]:
    """How far the new version may go now: the live version's positions (the log heads when
    there is no live version)."""
    if old is None:
        return {name: log_head(conn, sources[name]) for name in projection.sources}
    tracked = tracking_rows(conn, old)
    return {
        name: int(tracked[name]["position"]) if name in tracked else 0
        for name in projection.sources
    }


def _fill(  # noqa: PLR0913
    conn: psycopg.Connection[Any],
    builder: ReadModelRunner,
    projection: ReadModelProjection,
    sources: Mapping[str, Source],
    old: str | None,
    new: str,
    progress: Progress | None,
) -> int:
    """Fill ``new`` page by page up to the live positions, chasing them while they move.
    Returns the notifications processed.

    ``builder.catch_up`` overlaps the pages (it writes one on ``conn`` while it prepares
    the next); the live positions are read on a connection of their own."""
    processed = 0
    start = {name: int(row["position"]) for name, row in tracking_rows(conn, new).items()}
    targets: dict[str, int] = {}

    def progressed(done: int) -> None:
        nonlocal processed
        processed += done
        if progress:
            total = sum(max(0, targets.get(s, 0) - start.get(s, 0)) for s in projection.sources)
            progress(done, total)

    with connect(builder.database_url, autocommit=True) as probe:

        def stop(name: str) -> int:
            targets.update(_targets(probe, projection, sources, old))
            return targets[name]

        for name in projection.sources:
            while builder.catch_up(
                conn,
                sources[name],
                schema=new,
                stop=functools.partial(stop, name),
                progress=progressed,
            ):
                pass
    return processed


def _switch(  # noqa: PLR0913
    conn: psycopg.Connection[Any],
    builder: ReadModelRunner,
    projection: ReadModelProjection,
    sources: Mapping[str, Source],
    old: str | None,
    new: str,
    lock_timeout: float,
) -> tuple[dict[str, int], int]:
    """Catch ``new`` up to the live version under its tracking-row locks and switch to it,
    in one transaction. Returns ``(positions switched at, notifications processed)``."""
    processed = 0
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (version_lock_key(projection.name),))
        if active_schema(conn, projection.name) != old:
            raise OpsError(f"the active version of {projection.name} changed during the rebuild")
        if old is not None:
            live = {
                r["source"]: int(r["position"])
                for r in conn.execute(
                    "SELECT source, position FROM projection_tracking WHERE schema_name = %s "
                    "ORDER BY source FOR UPDATE",
                    (old,),
                ).fetchall()
            }
        else:
            live = {name: log_head(conn, sources[name]) for name in projection.sources}
        for name in projection.sources:
            target = live.get(name, 0)
            while done := builder.process_page(conn, sources[name], schema=new, stop=target):
                processed += done
            row = conn.execute(
                "UPDATE projection_tracking SET position = greatest(position, %s), "
                "updated_at = now() WHERE schema_name = %s AND source = %s RETURNING position",
                (target, new, name),
            ).fetchone()
            if row is None or int(row["position"]) != target:
                raise OpsError(
                    f"{new} is past the live version on {name} ({row and row['position']} > "
                    f"{target}); not switching"
                )
        switch_to(conn, projection, new)
    return live, processed


# -- skip and retry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkipResult:
    projection: str
    source: str
    position: int
    schemas: list[str]


def skip(  # noqa: PLR0913
    database_url: str,
    projection: str,
    source: str,
    position: int,
    *,
    reason: str,
    by: str,
) -> SkipResult:
    """Skip the failed event at ``position`` of ``source`` in every version of
    ``projection`` that recorded it as failed: mark the failure skipped (``by``, ``reason``,
    now) and move the version's tracking position to ``position``, in one transaction.

    Raises ``NothingToSkip`` when no unskipped failure is recorded there (an event that
    did not fail is never skipped), ``OpsError`` without a reason."""
    if not reason.strip():
        raise OpsError("a skip needs a reason")
    with connect(database_url) as conn, conn.transaction():
        rows = conn.execute(
            "SELECT f.schema_name, t.position AS tracked FROM projection_failures f "
            "JOIN projection_versions v ON v.schema_name = f.schema_name "
            "JOIN projection_tracking t ON t.schema_name = f.schema_name "
            "AND t.source = f.source "
            "WHERE v.projection = %s AND f.source = %s AND f.position = %s "
            "AND f.skipped_at IS NULL ORDER BY f.schema_name FOR UPDATE OF f, t",
            (projection, source, position),
        ).fetchall()
        if not rows:
            raise NothingToSkip(
                f"no unskipped failure of {projection} at {source} position {position} "
                "(liudong projections status lists the failures)"
            )
        for row in rows:
            conn.execute(
                "UPDATE projection_failures SET skipped_at = now(), skipped_by = %s, "
                "skip_reason = %s WHERE schema_name = %s AND source = %s AND position = %s",
                (by, reason, row["schema_name"], source, position),
            )
            conn.execute(
                "UPDATE projection_tracking SET position = greatest(position, %s), "
                "updated_at = now() WHERE schema_name = %s AND source = %s",
                (position, row["schema_name"], source),
            )
    return SkipResult(projection, source, position, [r["schema_name"] for r in rows])


def retry(database_url: str, projection: str) -> int:
    """Clear the unskipped failures of ``projection``'s active version so its runner tries
    those events again (after a fix). Returns how many were cleared."""
    with connect(database_url) as conn, conn.transaction():
        cur = conn.execute(
            "DELETE FROM projection_failures f USING projection_versions v "
            "WHERE v.schema_name = f.schema_name AND v.projection = %s AND v.active "
            "AND f.skipped_at IS NULL",
            (projection,),
        )
        return cur.rowcount


__all__ = [
    "Failure",
    "NothingToSkip",
    "OpsError",
    "ProjectionStatus",
    "RebuildInProgress",
    "RebuildResult",
    "SkipResult",
    "SourceStatus",
    "VersionStatus",
    "drop_version",
    "log_head",
    "projection_status",
    "rebuild",
    "rebuild_lock_key",
    "retry",
    "skip",
    "status",
]
