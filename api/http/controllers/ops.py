"""``/v1/ops``: the operator console's API (the page is ``/ops``), behind
``Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>`` (``api.http.operator``; 401
``operator_token_required`` otherwise).

=======================================================  ====================================
``GET  /v1/ops/projections``                             each read model: version, state,
                                                         position / head / lag per log,
                                                         failures, a rebuild and its progress
``POST /v1/ops/projections/{name}/rebuild``              202: rebuild (blue/green) in a
                                                         thread of this process
``POST /v1/ops/projections/{name}/retry``                clear the recorded failures
``POST /v1/ops/projections/{name}/skip``                 skip one failed event, with a reason
``GET  /v1/ops/events``                                  the logs' newest events, filtered;
                                                         ``after_library`` / ``after_chat``
                                                         continue a tail
``GET  /v1/ops/realtime``                                readers online (all nodes), rooms
                                                         with member counts, this node's
                                                         sockets
``GET  /v1/ops/moderation``                              texts flagged for review
``POST /v1/ops/moderation/{flag_id}/approve|remove``     the operator's decision
``GET  /v1/ops/readers?q=``                              find a reader by nickname or id
``GET  /v1/ops/readers/{reader}/sessions``               their login sessions
``POST /v1/ops/readers/{reader}/sessions/{sid}/``        end one session (its sockets close
``revoke``                                               with 4401 on every node)
=======================================================  ====================================

The same operations as ``liudong projections …``, ``liudong events tail``, ``liudong
moderation …`` (both read and write the database, so they agree whichever node answers).
Personal data: events are shown without loan contact details (as ``liudong events`` does
unless asked), sessions by their one-way ``session_id``, never a token or an openId.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import PathParameter, QueryParameter
from psycopg.rows import dict_row, tuple_row

from api.adapters.eventlog import LogReader
from api.adapters.moderation import FlagStore
from api.bootstrap.container import Container
from api.bootstrap.realtime import publish_revoked, realtime_of
from api.http.controllers.common import container_of
from api.http.errors import ApiError
from api.http.openapi import Code, contract
from api.http.operator import operator_guard
from api.http.params import FromPath, JSONBody
from api.http.rebuilds import RebuildJobs
from api.http.schemas import Body, Out, ReaderOut, reader_out
from domain.moderation import Scene
from projections import ops
from projections.registry import all_projections, projection_named, sources_from_apps
from projections.source import Source

PROJECTION_NOT_FOUND = Code(404, "projection_not_found")
FLAG_NOT_FOUND = Code(404, "flag_not_found")
NO_ROUTE = Code(404, "not_found")
"""A path parameter that is not an integer matches no route."""
SESSION_NOT_FOUND = Code(404, "session_not_found")
CONTEXTS = ("library", "chat")

# -- bodies -----------------------------------------------------------------------------------


class SourceOut(Out, frozen=True):
    source: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float


class FailureOut(Out, frozen=True):
    source: str
    position: int
    error: str
    failed_at: datetime


class RebuildOut(Out, frozen=True):
    """A rebuild: the version being filled (from the database) and, when this process runs
    it, its job (``state`` running / done / failed, ``done`` of ``total`` events)."""

    running: bool
    progress: float
    """0..1."""
    version: int | None = None
    schema: str | None = None
    positions: dict[str, int] | None = None
    state: Literal["running", "done", "failed"] | None = None
    done: int | None = None
    total: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ProjectionOut(Out, frozen=True):
    name: str
    state: str
    """running | stopped | failed | missing (database-wide: ``liudong projections status``)."""
    version: int | None
    schema: str | None
    holder: str | None
    lag_events: int
    lag_seconds: float
    sources: list[SourceOut]
    failures: list[FailureOut]
    rebuild: RebuildOut | None


class ProjectionList(Out, frozen=True):
    items: list[ProjectionOut]


class SkipBody(Body, frozen=True):
    source: Annotated[str, msgspec.Meta(pattern="^(library|chat)$")]
    position: Annotated[int, msgspec.Meta(ge=1)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class SkipOut(Out, frozen=True):
    projection: str
    source: str
    position: int
    schemas: list[str]


class RetryOut(Out, frozen=True):
    projection: str
    cleared: int


class EventOut(Out, frozen=True):
    context: str
    position: int
    recorded_at: datetime
    aggregate_id: UUID
    aggregate_version: int
    event_type: str
    data: dict[str, Any]


class EventTail(Out, frozen=True):
    items: list[EventOut]
    """Oldest first, both logs merged by time."""
    after_library: int
    after_chat: int
    """Pass these back to get only newer events."""


class OnlineReaderOut(Out, frozen=True):
    reader: ReaderOut
    here: bool
    """Has a socket on the node that answered."""


class RoomCountOut(Out, frozen=True):
    name: str
    title: str
    members: int


class RealtimeOut(Out, frozen=True):
    node: str | None
    sockets_here: int
    readers_online: int
    readers: list[OnlineReaderOut]
    rooms: list[RoomCountOut]


class FlagOut(Out, frozen=True):
    id: int
    flagged_at: datetime
    reader: ReaderOut
    scene: str
    field: str
    subject: str | None
    label: str
    provider: str
    text: str
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class FlagList(Out, frozen=True):
    items: list[FlagOut]


class ReaderList(Out, frozen=True):
    items: list[ReaderOut]


class SessionOut(Out, frozen=True):
    session_id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    live: bool


class SessionList(Out, frozen=True):
    reader: ReaderOut
    items: list[SessionOut]


# -- helpers ----------------------------------------------------------------------------------


def _sources(container: Container) -> dict[str, Source]:
    found = container.extras.get("ops_sources")
    if found is None:
        found = sources_from_apps(container.library, getattr(container, "chat", None))
        container.extras["ops_sources"] = found
    return found  # type: ignore[no-any-return]


def _jobs(container: Container) -> RebuildJobs:
    jobs = container.extras.get("rebuild_jobs")
    if jobs is None:  # setdefault: two first requests at once share one registry
        jobs = container.extras.setdefault(
            "rebuild_jobs", RebuildJobs(container.database_url, lambda: _sources(container))
        )
    return jobs  # type: ignore[no-any-return]


def _projection(name: str) -> Any:
    try:
        return projection_named(name)
    except KeyError as exc:
        names = ", ".join(p.name for p in all_projections())
        raise ApiError(404, "projection_not_found", f"No projection {name!r} ({names}).") from exc


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _reader(container: Container, reader_id: UUID) -> ReaderOut:
    row = container.shelf.reader(reader_id)
    return ReaderOut(
        id=reader_id,
        nickname=row["nickname"] if row else "",
        avatar_url=row["avatar_url"] if row else "",
    )


def _projection_out(status: ops.ProjectionStatus, jobs: RebuildJobs) -> ProjectionOut:
    job = jobs.get(status.name)
    rebuild: RebuildOut | None = None
    if job is not None or status.rebuild is not None or status.rebuilding:
        db_progress = RebuildJobs.progress_of(status)
        running = status.rebuilding or (job is not None and job.state == "running")
        rebuild = RebuildOut(
            running=running,
            progress=round(
                job.fraction if job is not None else (db_progress or 0.0),
                4,
            ),
            version=status.rebuild.version if status.rebuild else None,
            schema=status.rebuild.schema if status.rebuild else None,
            positions=status.rebuild.positions if status.rebuild else None,
            state=job.state if job else None,  # type: ignore[arg-type]
            done=job.done if job else None,
            total=job.total if job else None,
            error=job.error if job else None,
            result=job.result if job else None,
            started_at=_when(job.started_at) if job else None,
            finished_at=_when(job.finished_at) if job else None,
        )
    return ProjectionOut(
        name=status.name,
        state=status.state,
        version=status.version,
        schema=status.schema,
        holder=status.holder,
        lag_events=status.lag_events,
        lag_seconds=status.lag_seconds,
        sources=[
            SourceOut(
                source=s.source,
                position=s.position,
                head=s.head,
                lag_events=s.lag_events,
                lag_seconds=s.lag_seconds,
            )
            for s in status.sources
        ],
        failures=[
            FailureOut(source=f.source, position=f.position, error=f.error, failed_at=f.failed_at)
            for f in status.failures
        ],
        rebuild=rebuild,
    )


def _operator_name(request: Request[Any, Any, Any]) -> str:
    client = request.client.host if request.client else "unknown"
    return f"console@{client}"


# -- the controller ---------------------------------------------------------------------------

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="At most this many (1–500).")]
After = Annotated[
    int | None,
    QueryParameter(ge=0, description="Only events after this position of that log."),
]


class OpsController(Controller):
    path = "/v1/ops"
    tags = ["operations"]
    guards = [operator_guard]

    @get(
        "/projections",
        operation_id="ops_projections",
        sync_to_thread=True,
        opt=contract(auth="operator"),
    )
    def projections(self, request: Request[Any, Any, Any]) -> ProjectionList:
        """Every read model: state, active version, position / head / lag per log, failures
        blocking it, and a rebuild with its progress (``liudong projections status``)."""
        container = container_of(request)
        statuses = ops.status(container.database_url, all_projections(), _sources(container))
        jobs = _jobs(container)
        return ProjectionList(items=[_projection_out(s, jobs) for s in statuses])

    @post(
        "/projections/{name:str}/rebuild",
        operation_id="ops_rebuild_projection",
        status_code=202,
        sync_to_thread=True,
        opt=contract(PROJECTION_NOT_FOUND, Code(409, "rebuild_in_progress"), auth="operator"),
    )
    def rebuild(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        page_size: Annotated[
            int,
            QueryParameter(ge=1, le=100_000, description="Events per transaction (10,000)."),
        ] = 10_000,
    ) -> ProjectionOut:
        """Rebuild the read model ``name`` into a new version while the active one serves,
        then switch atomically (``liudong projections rebuild --page-size``). Answers at once
        (202) with the projection; its ``rebuild`` shows the progress. 409
        ``rebuild_in_progress`` when one runs already (here or, seen in the database,
        anywhere)."""
        container = container_of(request)
        projection = _projection(name)
        sources = _sources(container)
        [current] = ops.status(container.database_url, [projection], sources)
        if current.rebuilding:
            raise ApiError(409, "rebuild_in_progress", f"A rebuild of {name} is running.")
        jobs = _jobs(container)
        try:
            jobs.start(projection, page_size=page_size)
        except ops.RebuildInProgress as exc:
            raise ApiError(409, "rebuild_in_progress", str(exc)) from exc
        return _projection_out(current, jobs)

    @post(
        "/projections/{name:str}/retry",
        operation_id="ops_retry_projection",
        status_code=200,
        sync_to_thread=True,
        opt=contract(PROJECTION_NOT_FOUND, auth="operator"),
    )
    def retry(self, request: Request[Any, Any, Any], name: FromPath[str]) -> RetryOut:
        """Clear the recorded failures of ``name`` so its runner tries those events again
        within 5 s (after a fix is deployed; ``liudong projections retry``)."""
        container = container_of(request)
        _projection(name)
        return RetryOut(projection=name, cleared=ops.retry(container.database_url, name))

    @post(
        "/projections/{name:str}/skip",
        operation_id="ops_skip_event",
        status_code=200,
        sync_to_thread=True,
        opt=contract(PROJECTION_NOT_FOUND, Code(409, "nothing_to_skip"), auth="operator"),
    )
    def skip(
        self, request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[SkipBody]
    ) -> SkipOut:
        """Skip the failed event at ``position`` of ``source`` explicitly, with a reason
        (kept with the failure, with who and when; ``liudong projections skip``). 409
        ``nothing_to_skip`` when no unskipped failure is recorded there."""
        container = container_of(request)
        _projection(name)
        try:
            result = ops.skip(
                container.database_url,
                name,
                data.source,
                data.position,
                reason=data.reason,
                by=_operator_name(request),
            )
        except ops.OpsError as exc:
            raise ApiError(409, "nothing_to_skip", str(exc)) from exc
        return SkipOut(
            projection=result.projection,
            source=result.source,
            position=result.position,
            schemas=list(result.schemas),
        )

    @get(
        "/events",
        operation_id="ops_events",
        sync_to_thread=True,
        opt=contract(auth="operator"),
    )
    def events(  # noqa: PLR0913
        self,
        request: Request[Any, Any, Any],
        after_library: After = None,
        after_chat: After = None,
        context: Annotated[
            Literal["library", "chat"] | None,
            QueryParameter(description="Only this log."),
        ] = None,
        event_type: Annotated[
            str | None,
            QueryParameter(
                name="type",
                max_length=100,
                pattern=r"^[A-Za-z]+\.[A-Za-z]+$",
                description="Only this event type, e.g. `Loan.Requested`.",
            ),
        ] = None,
        aggregate_id: Annotated[
            UUID | None, QueryParameter(description="Only this aggregate's events.")
        ] = None,
        limit: Limit = 100,
    ) -> EventTail:
        """The newest events of both logs (a log without ``after_*``: its last ``limit``
        positions, filtered), oldest first; then pass ``after_library`` / ``after_chat``
        back for only newer ones (what ``liudong events tail`` prints). Contact details of
        loan requests are left out."""
        container = container_of(request)
        sources = _sources(container)
        after = {"library": after_library, "chat": after_chat}
        found: list[EventOut] = []
        positions: dict[str, int] = {}
        with container.pool.connection() as conn:
            conn.row_factory = tuple_row  # type: ignore[assignment]
            try:
                for name in CONTEXTS:
                    if name not in sources:
                        positions[name] = after[name] or 0
                        continue
                    reader = LogReader(conn, sources[name])
                    head = reader.head()
                    start = after[name]
                    start = max(0, head - limit) if start is None else start
                    positions[name] = max(start, head)  # all of it read, unless a page is full
                    if context is not None and context != name:
                        continue
                    types = [event_type] if event_type else ()
                    rows = next(
                        reader.rows(after=start, types=types, page_size=limit, stop=head), []
                    )
                    if len(rows) == limit:  # more to come: continue after this page
                        positions[name] = int(rows[-1][0])
                    for row in rows:
                        event = reader.decode(row)
                        if aggregate_id is None or event.aggregate_id == aggregate_id:
                            found.append(_event_out(event))
            finally:
                conn.row_factory = dict_row  # type: ignore[assignment]
        found.sort(key=lambda e: (e.recorded_at, e.context, e.position))
        return EventTail(
            items=found[-limit:],
            after_library=positions.get("library", 0),
            after_chat=positions.get("chat", 0),
        )

    @get(
        "/realtime",
        operation_id="ops_realtime",
        sync_to_thread=True,
        opt=contract(auth="operator"),
    )
    def realtime(self, request: Request[Any, Any, Any], limit: Limit = 200) -> RealtimeOut:
        """Readers online now on all nodes (at most ``limit``; ``here``: on the node that
        answered), every room with its member count (presence over NATS), this node's
        sockets."""
        container = container_of(request)
        node = realtime_of(container)
        rooms_rows = sorted(node.rooms.rooms(), key=lambda r: str(r["name"])) if node else []
        counts = node.presence.counts() if node is not None else {}
        rooms = [
            RoomCountOut(
                name=str(r["name"]), title=str(r["title"]), members=counts.get(str(r["name"]), 0)
            )
            for r in rooms_rows
        ]
        online = node.readers.online_readers(limit) if node is not None else []
        return RealtimeOut(
            node=node.node if node is not None else None,
            sockets_here=node.gateway.local_count() if node is not None else 0,
            readers_online=node.readers.online_count() if node is not None else 0,
            readers=[
                OnlineReaderOut(reader=_reader(container, reader_id), here=here)
                for reader_id, here in online
            ],
            rooms=rooms,
        )

    @get(
        "/moderation",
        operation_id="ops_flags",
        sync_to_thread=True,
        opt=contract(auth="operator"),
    )
    def flags(
        self,
        request: Request[Any, Any, Any],
        show: Annotated[
            Literal["open", "all"],
            QueryParameter(
                name="state", description="`open` (to review) or `all` (resolved ones too)."
            ),
        ] = "open",
        limit: Limit = 100,
    ) -> FlagList:
        """Texts the content check accepted with a ``review`` verdict, newest first
        (``liudong moderation list``)."""
        container = container_of(request)
        rows = FlagStore(container.pool).list(include_resolved=show == "all", limit=limit)
        return FlagList(items=[_flag_out(container, row) for row in rows])

    @post(
        "/moderation/{flag_id:int}/approve",
        operation_id="ops_approve_flag",
        status_code=200,
        sync_to_thread=True,
        opt=contract(FLAG_NOT_FOUND, NO_ROUTE, auth="operator"),
    )
    def approve(
        self,
        request: Request[Any, Any, Any],
        flag_id: Annotated[int, PathParameter(ge=1)],
    ) -> FlagOut:
        """The flagged text may stay: the flag is resolved ``approved``. 404
        ``flag_not_found`` when there is no such open flag."""
        return _resolve(request, flag_id, "approved")

    @post(
        "/moderation/{flag_id:int}/remove",
        operation_id="ops_remove_flag",
        status_code=200,
        sync_to_thread=True,
        opt=contract(FLAG_NOT_FOUND, NO_ROUTE, auth="operator"),
    )
    def remove(
        self,
        request: Request[Any, Any, Any],
        flag_id: Annotated[int, PathParameter(ge=1)],
    ) -> FlagOut:
        """The flagged text must go: the flag is resolved ``removed`` (who and when are
        kept; docs/OPERATIONS.md says what that does and does not take down yet). 404
        ``flag_not_found`` when there is no such open flag."""
        return _resolve(request, flag_id, "removed")

    @get(
        "/readers",
        operation_id="ops_find_readers",
        sync_to_thread=True,
        opt=contract(auth="operator"),
    )
    def readers(
        self,
        request: Request[Any, Any, Any],
        q: Annotated[
            str,
            QueryParameter(
                min_length=1, max_length=100, description="Part of a nickname, or a reader id."
            ),
        ],
        limit: Limit = 20,
    ) -> ReaderList:
        """Readers whose nickname contains ``q`` (or whose id is ``q``)."""
        rows = container_of(request).shelf.readers_named(q, limit)
        return ReaderList(items=[reader_out(r) for r in rows])

    @get(
        "/readers/{reader:uuid}/sessions",
        operation_id="ops_reader_sessions",
        sync_to_thread=True,
        opt=contract(auth="operator"),
    )
    def sessions(self, request: Request[Any, Any, Any], reader: FromPath[UUID]) -> SessionList:
        """The reader's login sessions, newest first (live, expired and revoked ones), by
        ``session_id`` (a one-way name: never the token)."""
        container = container_of(request)
        rows = container.sessions.sessions_of(reader)
        return SessionList(reader=_reader(container, reader), items=[SessionOut(**r) for r in rows])

    @post(
        "/readers/{reader:uuid}/sessions/{session_id:str}/revoke",
        operation_id="ops_revoke_session",
        status_code=204,
        opt=contract(SESSION_NOT_FOUND, auth="operator"),
    )
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        reader: FromPath[UUID],
        session_id: Annotated[str, PathParameter(pattern="^[0-9a-f]{32}$")],
    ) -> Response[None]:
        """End one live session of the reader: its token stops working at once and its
        WebSockets, on every node, get ``error`` ``session_ended`` and close 4401. 404
        ``session_not_found`` when the reader has no such live session."""
        container = container_of(request)
        done = await anyio.to_thread.run_sync(container.sessions.revoke_session, reader, session_id)
        if not done:
            raise ApiError(404, "session_not_found", "No such live session of this reader.")
        await publish_revoked(container, [session_id])
        return Response(None, status_code=204)


def _event_out(event: Any) -> EventOut:
    return EventOut(
        context=event.context,
        position=event.position,
        recorded_at=event.recorded_at,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        event_type=event.event_type,
        data=event.data,
    )


def _flag_out(container: Container, row: dict[str, Any]) -> FlagOut:
    try:
        scene = Scene(row["scene"]).label
    except ValueError:
        scene = str(row["scene"])
    return FlagOut(
        id=int(row["id"]),
        flagged_at=row["flagged_at"],
        reader=_reader(container, row["reader_id"]),
        scene=scene,
        field=row["field"],
        subject=row["subject"],
        label=row["label"],
        provider=row["provider"],
        text=row["text"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        resolution=row.get("resolution"),
    )


def _resolve(request: Request[Any, Any, Any], flag_id: int, resolution: str) -> FlagOut:
    container = container_of(request)
    store = FlagStore(container.pool)
    if not store.resolve(flag_id, by=_operator_name(request), resolution=resolution):
        raise ApiError(404, "flag_not_found", f"No open flag #{flag_id}.")
    row = store.get(flag_id)
    assert row is not None
    return _flag_out(container, row)


__all__ = ["OpsController"]
