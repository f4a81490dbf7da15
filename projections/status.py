"""Projection status: what ``liudong projections status``, ``/metrics`` and ``/readyz`` show.

Per projection: the active version, and per log it follows the tracking ``position``, the
log ``head`` (its largest notification id), ``lag_events`` (``head - position``: positions
behind, which equals events behind except across rare sequence gaps) and ``lag_seconds``
(now minus the timestamp of the oldest event not yet processed; 0 when caught up, so an
idle log shows no lag). ``state``: ``failed`` when an unskipped failure lies ahead of
the active version's position, else ``running`` when some session holds the projection's
advisory lock (``holder`` says which), else ``stopped``; ``missing`` when no version
exists yet. ``rebuild`` describes a version newer than the active one (being rebuilt, or
left by an interrupted rebuild), ``rebuilding`` whether a rebuild runs now.

Everything is read from the database, so it works whichever process runs the projection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projections.read_model import ReadModelProjection
from projections.source import Source
from projections.versions import (
    lock_key,
)

# -- errors -------------------------------------------------------------------------------------


def rebuild_lock_key(projection: str) -> int:
    """The advisory-lock key held by the one rebuild of ``projection`` that may run."""
    return lock_key(projection) + 2


def version_lock_key(projection: str) -> int:
    # serialises registry changes with versions.ensure_active_version (same key)
    return lock_key(projection) + 1


def connect(database_url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
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


def tracking_rows(conn: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, Any]]:
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
                s: int(r["position"]) for s, r in tracking_rows(conn, latest["schema_name"]).items()
            },
        )
    if active is None:
        return ProjectionStatus(name, None, None, "missing", rebuild=rebuild, rebuilding=rebuilding)
    schema = active["schema_name"]
    tracking = tracking_rows(conn, schema)
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
    with connect(database_url, autocommit=True) as conn:
        heads: dict[str, int] = {}
        return [projection_status(conn, p, sources, heads=heads) for p in projections]


# -- rebuild ------------------------------------------------------------------------------------
