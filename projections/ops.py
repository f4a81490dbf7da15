"""Operating projections: status, rebuild with an atomic switch, skipping a poison event.

What an operator (``liudong projections …``), ``/metrics`` and ``/readyz`` use. Everything is
read from and written to the database, so it works whichever process runs the projection
(``liudong serve`` on this machine or another one) and whether or not one runs at all.

Status (``status``)
    Per projection: the active version, and per log it follows the tracking ``position``, the
    log ``head`` (its largest notification id), ``lag_events`` (``head - position``: positions
    behind, which equals events behind except across rare sequence gaps) and ``lag_seconds``
    (now minus the timestamp of the oldest event not yet processed; 0 when caught up, so an
    idle log shows no lag). ``state``: ``failed`` when an unskipped failure lies ahead of
    the active version's position, else ``running`` when some session holds the projection's
    advisory lock (``holder`` says which), else ``stopped``; ``missing`` when no version
    exists yet. ``rebuild`` describes a version newer than the active one (being rebuilt, or
    left by an interrupted rebuild), ``rebuilding`` whether a rebuild runs now.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projections.read_model import ReadModelProjection
from projections.runner import ReadModelRunner
from projections.source import Source
from projections.versions import (
    active_schema,
    create_deferred_indexes,
    create_version,
    lock_key,
    switch_to,
)

# -- errors -------------------------------------------------------------------------------------


class OpsError(RuntimeError):
    """An operation was refused or could not finish; the message says why."""


class RebuildInProgress(OpsError):
    """Another rebuild of the same projection is running."""


class NothingToSkip(OpsError):
    """No unskipped failure is recorded at that position."""


def rebuild_lock_key(projection: str) -> int:
    """The advisory-lock key held by the one rebuild of ``projection`` that may run."""
    return lock_key(projection) + 2


def _version_lock_key(projection: str) -> int:
    # serialises registry changes with versions.ensure_active_version (same key)
    return lock_key(projection) + 1


def _connect(database_url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(database_url, row_factory=dict_row, **kwargs)


# -- status -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceStatus:
    """How far one version has processed one log."""

    source: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    last_event_at: datetime | None


@dataclass(frozen=True)
class Failure:
    schema: str
    source: str
    position: int
    error: str
    failed_at: datetime
    skipped_at: datetime | None = None
    skipped_by: str | None = None
    skip_reason: str | None = None


@dataclass(frozen=True)
class VersionStatus:
    """A version that is not the active one (a rebuild's target)."""

    version: int
    schema: str
    created_at: datetime
    positions: dict[str, int]


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    version: int | None
    schema: str | None
    state: str  # running | stopped | failed | missing
    holder: str | None = None
    sources: list[SourceStatus] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    rebuild: VersionStatus | None = None
    rebuilding: bool = False

    @property
    def lag_events(self) -> int:
        return sum(s.lag_events for s in self.sources)

    @property
    def lag_seconds(self) -> float:
        return max((s.lag_seconds for s in self.sources), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes as ISO 8601 strings)."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _advisory_holder(conn: psycopg.Connection[Any], key: int) -> dict[str, Any] | None:
    """Who holds the session advisory lock ``key`` in this database (pg_locks splits a
    bigint key into classid = high 32 bits, objid = low 32 bits, objsubid = 1)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return conn.execute(
        "SELECT l.pid, a.application_name, a.client_addr::text AS client_addr, "
        "a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = %s AND l.objid::bigint = %s LIMIT 1",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    ).fetchone()


def _describe_holder(row: dict[str, Any]) -> str:
    where = f" from {row['client_addr']}" if row.get("client_addr") else ""
    name = f" ({row['application_name']})" if row.get("application_name") else ""
    return f"pid {row['pid']}{name}{where}"


def log_head(conn: psycopg.Connection[Any], source: Source) -> int:
    """The largest notification id of ``source``'s events table (0 when empty)."""
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(notification_id), 0) AS head FROM {}").format(
            sql.Identifier(source.channel)
        )
    ).fetchone()
    return int(row["head"]) if row else 0


def _oldest_unprocessed_at(source: Source, position: int) -> datetime | None:
    try:
        notifications = source.read(position, 1)
        if not notifications:
            return None
        return getattr(source.decode(notifications[0]), "timestamp", None)
    except Exception:  # an undecodable event: fall back to last_event_at
        return None


def _source_status(
    conn: psycopg.Connection[Any],
    source: Source,
    position: int,
    last_event_at: datetime | None,
    now: datetime,
    heads: dict[str, int],
) -> SourceStatus:
    if source.name not in heads:
        heads[source.name] = log_head(conn, source)
    head = heads[source.name]
    lag_events = max(0, head - position)
    lag_seconds = 0.0
    if lag_events:
        waiting_since = _oldest_unprocessed_at(source, position) or last_event_at
        if waiting_since is not None:
            lag_seconds = max(0.0, (now - waiting_since).total_seconds())
    return SourceStatus(
        source.name, position, head, lag_events, round(lag_seconds, 3), last_event_at
    )


def _tracking(conn: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "SELECT source, position, last_event_at FROM projection_tracking WHERE schema_name = %s",
        (schema,),
    ).fetchall()
    return {r["source"]: r for r in rows}


def projection_status(
    conn: psycopg.Connection[Any],
    projection: ReadModelProjection,
    sources: Mapping[str, Source],
    *,
    heads: dict[str, int] | None = None,
) -> ProjectionStatus:
    """The status of one projection (see the module docstring), read in ``conn``."""
    heads = {} if heads is None else heads
    now = datetime.now(UTC)
    name = projection.name
    versions = conn.execute(
        "SELECT version, schema_name, active, created_at FROM projection_versions "
        "WHERE projection = %s ORDER BY version",
        (name,),
    ).fetchall()
    rebuilding = _advisory_holder(conn, rebuild_lock_key(name)) is not None
    active = next((v for v in versions if v["active"]), None)
    newer = [
        v
        for v in versions
        if not v["active"] and (active is None or v["version"] > active["version"])
    ]
    rebuild = None
    if newer:
        latest = newer[-1]
        rebuild = VersionStatus(
            version=latest["version"],
            schema=latest["schema_name"],
            created_at=latest["created_at"],
            positions={
                s: int(r["position"]) for s, r in _tracking(conn, latest["schema_name"]).items()
            },
        )
    if active is None:
        return ProjectionStatus(name, None, None, "missing", rebuild=rebuild, rebuilding=rebuilding)
    schema = active["schema_name"]
    tracking = _tracking(conn, schema)
    statuses = []
    for source_name in projection.sources:
        row = tracking.get(source_name, {"position": 0, "last_event_at": None})
        if source_name in sources:
            statuses.append(
                _source_status(
                    conn,
                    sources[source_name],
                    int(row["position"]),
                    row["last_event_at"],
                    now,
                    heads,
                )
            )
    failures = [
        Failure(
            schema=r["schema_name"],
            source=r["source"],
            position=int(r["position"]),
            error=r["error"],
            failed_at=r["failed_at"],
        )
        for r in conn.execute(
            "SELECT f.* FROM projection_failures f JOIN projection_tracking t "
            "ON t.schema_name = f.schema_name AND t.source = f.source "
            "WHERE f.schema_name = %s AND f.skipped_at IS NULL AND f.position > t.position "
            "ORDER BY f.position",
            (schema,),
        ).fetchall()
    ]
    holder = _advisory_holder(conn, lock_key(name))
    if failures:
        state = "failed"
    elif holder is not None:
        state = "running"
    else:
        state = "stopped"
    return ProjectionStatus(
        name=name,
        version=int(active["version"]),
        schema=schema,
        state=state,
        holder=_describe_holder(holder) if holder else None,
        sources=statuses,
        failures=failures,
        rebuild=rebuild,
        rebuilding=rebuilding,
    )


def status(
    database_url: str, projections: Iterable[ReadModelProjection], sources: Mapping[str, Source]
) -> list[ProjectionStatus]:
    """The status of each of ``projections`` (one short read-only transaction)."""
    with _connect(database_url, autocommit=True) as conn:
        heads: dict[str, int] = {}
        return [projection_status(conn, p, sources, heads=heads) for p in projections]


# -- rebuild ------------------------------------------------------------------------------------


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
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_version_lock_key(projection.name),))
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
        _connect(
            database_url,
            autocommit=True,
            application_name=f"liudong rebuild {projection.name}"[:63],
        ) as admin,
        _connect(database_url, autocommit=True) as conn,
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
    tracked = _tracking(conn, old)
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
    start = {name: int(row["position"]) for name, row in _tracking(conn, new).items()}
    targets: dict[str, int] = {}

    def progressed(done: int) -> None:
        nonlocal processed
        processed += done
        if progress:
            total = sum(max(0, targets.get(s, 0) - start.get(s, 0)) for s in projection.sources)
            progress(done, total)

    with _connect(builder.database_url, autocommit=True) as probe:

        def stop(name: str) -> int:
            targets.update(_targets(probe, projection, sources, old))
            return targets[name]

        for name in projection.sources:
            while builder.catch_up(
                conn, sources[name], schema=new, stop=functools.partial(stop, name),
                progress=progressed,
            ):  # fmt: skip
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
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_version_lock_key(projection.name),))
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
    with _connect(database_url) as conn, conn.transaction():
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
    with _connect(database_url) as conn, conn.transaction():
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
