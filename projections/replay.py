"""Replay: the read models as they were at a past moment, in a schema of their own.

(Just over 500 lines, kept whole: the schema checks, the locking and the paged replay are
one procedure, read top to bottom.)

``replay(database_url, projections, sources, until=T, schema="analyst_t1")`` builds each
projection's tables afresh in schema ``analyst_t1`` from the events recorded up to ``T``, so
an analyst can query the shelf (or inbox…) of that moment with plain SQL
(``SELECT status, count(*) FROM analyst_t1.books GROUP BY 1``). The command line is
``liudong replay`` (``api.cli.replay``); docs/OPERATIONS.md has the operator's view.

What it touches
    Only schema ``NAME`` (and, for several projections, ``NAME_<projection>``): never a live
    version (``shelf_v3``), the views (``shelf.books``), the registry
    (``projection_versions``: no version, no active flag) nor its tracking or failures.
    Live names are refused (``check_schema_name``); an existing schema is refused unless
    ``replace``, and even then only one a replay made (it holds ``replay_info``).

The cut (commit order)
    Each log a projection follows is read in its notification order (= commit order,
    ``projections.source``) from position 0, and the replay of that log stops at the
    first event whose timestamp is later than ``until``. Timestamps are taken by the writer
    just before its insert, so they follow log order only to within the time a commit takes:
    events recorded concurrently around ``until`` may straddle the cut (an event stamped a
    moment before ``until`` but committed after one stamped after it is left out, and in
    the rare opposite case a few events stamped after ``until`` can lie before the cut
    position, but the replay stops at the first of them). Multi-log projections (``inbox``)
    cut each log on its own, Library first then Chat (the rebuild order). The replay also
    never reads past the log head it saw when it started, so an ``until`` in the future
    means "now".

How it writes
    The projection's own ``ddl`` creates its tables in the target schema; events go through
    ``ReadModelProjection.apply`` (the code the live runner uses) one page per transaction,
    and the page also updates ``NAME.replay_info`` (one row per log: position reached, events
    applied, the first position beyond the cut, ``finished_at`` once done), so a half-done
    replay is visible as such. ``after_commit`` is never called: a replay has no side effects
    (no realtime relay). A poison event stops the replay (``ReplayFailed``, naming the log
    position); the tables hold every event before it (the failing page is redone
    one event per transaction to find it).

The source logs are read through ``Source.read``/``Source.decode`` (upcasters apply), not
through ``ReadModelRunner``; a projection that takes ``Record``s (``records = True``) gets
them made from those domain events. Pages go through ``ReadModelProjection.apply`` one event
at a time (not ``fold_page``): the simplest path, which the runner also trusts to find a
failing event.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from domain.instants import parse_instant
from projections.read_model import ReadModelProjection
from projections.source import Source

Progress = Callable[[int, int], None]
"""``progress(done, total)``: ``done`` more log positions scanned; ``total`` (when not 0) is
the number of positions the whole replay may scan."""

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")
VERSION_SCHEMA = re.compile(r".+_v[0-9]+")
RESERVED = frozenset({"public", "information_schema"})
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1

INFO_DDL = """
CREATE TABLE {schema}.replay_info (
    projection text NOT NULL,
    source text NOT NULL,
    until timestamptz NOT NULL,
    position bigint NOT NULL DEFAULT 0,
    events bigint NOT NULL DEFAULT 0,
    last_event_at timestamptz,
    cut_position bigint,
    cut_event_at timestamptz,
    head bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (projection, source)
);
COMMENT ON TABLE {schema}.replay_info IS
    'liudong replay: per log, the position reached (events up to until, commit order)';
"""
"""``position``: the last log position applied; ``events``: events applied (every event of
the log up to the cut, whether the projection uses it or not); ``cut_position`` /
``cut_event_at``: the first event left out (later than ``until``), NULL when the log ended
first; ``head``: the log head when the replay started; ``finished_at``: NULL while the
replay runs or if it was interrupted."""


class ReplayError(RuntimeError):
    """A replay was refused or could not finish; the message says why."""


class SchemaRefused(ReplayError):
    """The target schema name is a live one, reserved, or not a plain identifier."""


class SchemaExists(ReplayError):
    """The target schema exists (and ``replace`` was not asked, or a replay did not make it)."""


class ReplayFailed(ReplayError):
    """A projection could not apply an event (a poison event)."""

    def __init__(self, projection: str, source: str, position: int, error: str) -> None:
        super().__init__(f"{projection} could not apply {source} position {position}: {error}")
        self.projection = projection
        self.source = source
        self.position = position
        self.error = error


@dataclass(frozen=True)
class SourceReplay:
    """How far one projection's replay read one log."""

    source: str
    position: int  # last position applied (0: none)
    events: int  # events applied
    last_event_at: datetime | None
    cut_position: int | None  # the first event left out, None when the log ended first
    cut_event_at: datetime | None
    head: int


@dataclass(frozen=True)
class ProjectionReplay:
    projection: str
    schema: str
    sources: list[SourceReplay]
    tables: dict[str, int]  # row counts


@dataclass(frozen=True)
class ReplayResult:
    until: datetime
    projections: list[ProjectionReplay] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(s.events for p in self.projections for s in p.sources)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


# -- names ----------------------------------------------------------------------------------


def target_schemas(name: str, projections: Sequence[ReadModelProjection]) -> dict[str, str]:
    """``{projection: schema}``: the first projection goes into ``name``, each further one
    into ``name_<projection>`` (their table names overlap: shelf and inbox both have
    ``books``, ``loans``, ``readers``)."""
    return {p.name: name if i == 0 else f"{name}_{p.name}" for i, p in enumerate(projections)}


def check_schema_name(name: str, live_projections: Sequence[str] = ()) -> None:
    """Raise ``SchemaRefused`` unless ``name`` may receive a replay: a lower-case identifier
    (``[a-z_][a-z0-9_]*``, at most 63 characters, so it needs no quoting) that is not a live
    schema: not a projection's view schema (``shelf``, ``inbox``, ``live_projections``), not
    a version (``*_v<digits>``), not ``public``, ``information_schema`` or ``pg_*``."""
    if not SCHEMA_NAME.fullmatch(name) or len(name) > MAX_IDENTIFIER:
        raise SchemaRefused(
            f"schema {name!r} is not a plain lower-case identifier "
            f"([a-z_][a-z0-9_]*, at most {MAX_IDENTIFIER} characters)"
        )
    if name in RESERVED or name.startswith("pg_"):
        raise SchemaRefused(f"schema {name!r} is reserved")
    if name in {"shelf", "inbox", "rooms", *live_projections, *_registered()}:
        raise SchemaRefused(f"schema {name!r} is a live projection's schema")
    if VERSION_SCHEMA.fullmatch(name):
        raise SchemaRefused(
            f"schema {name!r} looks like a projection version (*_v<digits>): those are live"
        )


def _registered() -> list[str]:
    from projections.registry import all_projections

    return [p.name for p in all_projections()]


def replay_lock_key(schema: str) -> int:
    """The advisory-lock key held while a replay writes ``schema``."""
    return zlib.crc32(f"liudong.replay.{schema}".encode()) - 2**31


# -- replay ---------------------------------------------------------------------------------


def replay(  # noqa: PLR0913
    database_url: str,
    projections: Sequence[ReadModelProjection],
    sources: Mapping[str, Source],
    *,
    until: datetime,
    schema: str,
    replace: bool = False,
    page_size: int = 1000,
    progress: Progress | None = None,
) -> ReplayResult:
    """Build ``projections`` as they were at ``until`` into ``schema`` (module docstring).

    Raises ``SchemaRefused``, ``SchemaExists``, ``ReplayFailed``, ``ReplayError``."""
    if until.tzinfo is None:
        raise ReplayError("until needs a timezone")
    if not projections:
        raise ReplayError("nothing to replay")
    targets = target_schemas(schema, projections)
    for target in targets.values():
        check_schema_name(target)
    missing = sorted({s for p in projections for s in p.sources if s not in sources})
    if missing:
        raise ReplayError(f"the logs {missing} are not available here")
    started = time.monotonic()
    with psycopg.connect(
        database_url, row_factory=dict_row, application_name=f"liudong replay {schema}"[:63]
    ) as conn:
        _check_not_live(conn, targets.values())
        _lock(conn, targets.values())
        heads = {name: sources[name].head() for p in projections for name in p.sources}
        if progress:
            progress(0, sum(heads[s] for p in projections for s in p.sources))
        _create(conn, projections, targets, heads, until, replace)
        done = []
        for projection in projections:
            target = targets[projection.name]
            reached = [
                _replay_log(
                    conn,
                    projection,
                    sources[name],
                    target,
                    until,
                    heads[name],
                    page_size,
                    progress,
                )
                for name in projection.sources
            ]
            with conn.transaction():
                conn.execute(
                    sql.SQL("UPDATE {}.replay_info SET finished_at = now()").format(
                        sql.Identifier(target)
                    )
                )
            counts = _counts(conn, projection, target)
            done.append(ProjectionReplay(projection.name, target, reached, counts))
    return ReplayResult(until=until, projections=done, seconds=time.monotonic() - started)


def _check_not_live(conn: psycopg.Connection[Any], targets: Sequence[str] | Any) -> None:
    """Refuse a schema the registry knows (a version, even under an unusual name)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT schema_name FROM projection_versions WHERE schema_name = ANY(%s) "
            "UNION SELECT DISTINCT projection FROM projection_versions "
            "WHERE projection = ANY(%s) LIMIT 1",
            (list(targets), list(targets)),
        ).fetchone()
    if row is not None:
        raise SchemaRefused(f"schema {row['schema_name']!r} is a live projection's schema")


def _lock(conn: psycopg.Connection[Any], targets: Any) -> None:
    """One replay per target schema at a time (session locks, released on disconnect)."""
    for target in targets:
        with conn.transaction():
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s) AS ok", (replay_lock_key(target),)
            ).fetchone()
        if not row or not row["ok"]:
            raise ReplayError(f"another replay is writing schema {target!r}")


def _create(  # noqa: PLR0913
    conn: psycopg.Connection[Any],
    projections: Sequence[ReadModelProjection],
    targets: Mapping[str, str],
    heads: Mapping[str, int],
    until: datetime,
    replace: bool,
) -> None:
    """Create every target schema with its projection's tables and ``replay_info``, in one
    transaction; an existing one is refused unless ``replace`` and made by a replay."""
    with conn.transaction():
        for projection in projections:
            target = targets[projection.name]
            ident = sql.Identifier(target)
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (target,)
            ).fetchone()
            if exists:
                if not replace:
                    raise SchemaExists(
                        f"schema {target!r} exists: choose another name, or --replace it"
                    )
                made_by_replay = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL AS yes",
                    (f"{_quoted(target)}.replay_info",),
                ).fetchone()
                if not made_by_replay or not made_by_replay["yes"]:
                    raise SchemaExists(
                        f"schema {target!r} exists and was not made by a replay "
                        "(no replay_info table): not replacing it"
                    )
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
            conn.execute(sql.SQL(projection.ddl.replace("{schema}", "{0}")).format(ident))
            conn.execute(sql.SQL(INFO_DDL.replace("{schema}", "{0}")).format(ident))
            conn.execute(
                sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                    ident,
                    sql.Literal(f"liudong replay of {projection.name} until {until.isoformat()}"),
                )
            )
            for name in projection.sources:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.replay_info (projection, source, until, head) "
                        "VALUES (%s, %s, %s, %s)"
                    ).format(ident),
                    (projection.name, name, until, heads[name]),
                )


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _replay_log(  # noqa: PLR0913
    conn: psycopg.Connection[Any],
    projection: ReadModelProjection,
    source: Source,
    target: str,
    until: datetime,
    head: int,
    page_size: int,
    progress: Progress | None,
) -> SourceReplay:
    """Apply ``source``'s events up to the cut, one page per transaction."""
    position, events, last_at = 0, 0, None
    cut: tuple[int, datetime] | None = None
    while cut is None and position < head:
        notifications = source.read(position, page_size, head)
        if not notifications:
            break
        as_wanted = _shape_for(projection)
        page: list[tuple[int, Any]] = []
        for notification in notifications:
            event = source.decode(notification)
            stamp = getattr(event, "timestamp", None)
            if stamp is not None and stamp > until:
                cut = (int(notification.id), stamp)
                break
            page.append((int(notification.id), as_wanted(notification, event)))
        if page:
            _apply_page(conn, projection, source.name, target, page, events + len(page), cut)
            scanned = page[-1][0] - position
            position = page[-1][0]
            events += len(page)
            last_at = getattr(page[-1][1], "timestamp", None) or last_at
        elif cut is not None:
            _record_cut(conn, projection.name, source.name, target, cut)
            scanned = 0
        else:  # pragma: no cover - a page always has an event or a cut
            break
        if progress:
            # a cut ends this log: count its remaining positions as scanned
            progress(scanned + (max(0, head - position) if cut else 0), 0)
    if cut is None and progress and position < head:
        progress(head - position, 0)
    return SourceReplay(
        source=source.name,
        position=position,
        events=events,
        last_event_at=last_at,
        cut_position=cut[0] if cut else None,
        cut_event_at=cut[1] if cut else None,
        head=head,
    )


def _shape_for(projection: ReadModelProjection) -> Callable[[Any, Any], Any]:
    """How ``projection`` wants its events: domain events, or (``records = True``, see
    ``projections.read_model.ReadModelProjection``) ``Record``s made from them."""
    if getattr(projection, "records", False):
        try:
            from projections.records import record_of
        except ImportError:  # pragma: no cover - a framework without records
            pass
        else:
            return lambda notification, event: record_of(
                int(notification.id), notification.topic, event
            )
    return lambda notification, event: event


def _apply_page(  # noqa: PLR0913
    conn: psycopg.Connection[Any],
    projection: ReadModelProjection,
    source: str,
    target: str,
    page: Sequence[tuple[int, Any]],
    events: int,
    cut: tuple[int, datetime] | None,
) -> None:
    """Apply ``page`` and move ``replay_info`` in one transaction. On an error, find the
    failing event (one event per transaction up to it) and raise ``ReplayFailed``."""
    try:
        with conn.transaction():
            _apply(conn, projection, source, target, page, events, cut)
    except Exception:
        pass
    else:
        return
    done = events - len(page)
    for i, item in enumerate(page):
        try:
            with conn.transaction():
                _apply(conn, projection, source, target, [item], done + i + 1, None)
        except Exception as exc:
            raise ReplayFailed(
                projection.name, source, item[0], f"{type(exc).__name__}: {exc}"
            ) from exc
    # every event applied alone: the page failed for another reason (e.g. a lost connection)
    if cut is not None:
        _record_cut(conn, projection.name, source, target, cut)


def _apply(  # noqa: PLR0913
    conn: psycopg.Connection[Any],
    projection: ReadModelProjection,
    source: str,
    target: str,
    page: Sequence[tuple[int, Any]],
    events: int,
    cut: tuple[int, datetime] | None,
) -> None:
    schema = sql.Identifier(target)
    # pipeline: statements go without waiting for each reply, as in the live runner
    with conn.pipeline(), conn.cursor() as cur:
        for position, event in page:
            projection.apply(cur, schema, source, position, event)
        cur.execute(
            sql.SQL(
                "UPDATE {}.replay_info SET position = %s, events = %s, last_event_at = %s, "
                "cut_position = %s, cut_event_at = %s WHERE projection = %s AND source = %s"
            ).format(schema),
            (
                page[-1][0],
                events,
                getattr(page[-1][1], "timestamp", None),
                cut[0] if cut else None,
                cut[1] if cut else None,
                projection.name,
                source,
            ),
        )


def _record_cut(
    conn: psycopg.Connection[Any],
    projection: str,
    source: str,
    target: str,
    cut: tuple[int, datetime],
) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {}.replay_info SET cut_position = %s, cut_event_at = %s "
                "WHERE projection = %s AND source = %s"
            ).format(sql.Identifier(target)),
            (cut[0], cut[1], projection, source),
        )


def _counts(
    conn: psycopg.Connection[Any], projection: ReadModelProjection, target: str
) -> dict[str, int]:
    counts = {}
    with conn.transaction():
        for table in projection.tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {}.{}").format(
                    sql.Identifier(target), sql.Identifier(table)
                )
            ).fetchone()
            counts[table] = int(row["n"]) if row else 0
    return counts


def parse_until(value: str) -> datetime:
    """An ISO 8601 time with an offset (``domain.instants``: the rule of every entry point).

    Raises ``InvalidInstant`` (a ``ValueError``)."""
    return parse_instant(value)


__all__ = [
    "ProjectionReplay",
    "ReplayError",
    "ReplayFailed",
    "ReplayResult",
    "SchemaExists",
    "SchemaRefused",
    "SourceReplay",
    "check_schema_name",
    "parse_until",
    "replay",
    "target_schemas",
]
