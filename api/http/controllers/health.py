"""Operator endpoints: liveness, readiness."""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from litestar import Request, Response, get

from api.http.controllers.common import container_of
from api.http.openapi import contract
from api.http.operator import is_operator


class HealthOut(msgspec.Struct, frozen=True):
    status: Literal["ok"]


class ReadyOut(msgspec.Struct, frozen=True, omit_defaults=True):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    """Only with ``Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>``: ``database``,
    ``projections`` (each with its state and lag) and the other checks of this process, each
    with ``ok`` (errors name hosts and ports: not for the public)."""


@get("/healthz", operation_id="healthz", tags=["operations"], opt=contract(database=False))
async def healthz() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut(status="ok")


def _add_lag(container: Any, projections: dict[str, Any]) -> None:
    """Add each projection's database-wide position, head and lag (the ``/metrics``
    figures) under ``lag``; projections this process does not run are listed too, for
    information (they do not change readiness)."""
    from api.http.controllers.metrics import projection_statuses

    try:
        statuses = projection_statuses(container)
    except Exception as exc:  # the database check above reports the cause
        for entry in projections.values():
            entry["lag"] = {"error": str(exc)}
        return
    for st in statuses:
        entry = projections.setdefault(st.name, {"ok": True, "state": "not run here"})
        entry["db_state"] = st.state
        entry["lag"] = {
            src.source: {
                "position": src.position,
                "head": src.head,
                "lag_events": src.lag_events,
                "lag_seconds": src.lag_seconds,
            }
            for src in st.sources
        }


@get(
    "/readyz",
    operation_id="readyz",
    tags=["operations"],
    sync_to_thread=True,
    opt=contract(also=(503,), database=False),
)
def readyz(request: Request[Any, Any, Any]) -> Response[ReadyOut]:
    """Readiness: the database answers and every projection runs (503 otherwise). The
    details (``checks``) only for ``Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>``."""
    container = container_of(request)
    checks: dict[str, Any] = {}
    ready = True
    try:
        container.check_database()
        checks["database"] = {"ok": True}
    except Exception as exc:  # any database failure means not ready
        checks["database"] = {"ok": False, "error": str(exc)}
        ready = False
    projections = {}
    for runner in container.runners:
        state = runner.status
        ok = state.state in ("running", "standby", "starting")
        projections[runner.projection.name] = {
            "ok": ok,
            "state": state.state,
            "positions": state.positions,
            "error": state.error,
            "failed_position": state.failed_position,
            "seconds_since_last_page": round(time.time() - state.last_page_at, 3)
            if state.last_page_at
            else None,
        }
        ready = ready and ok
    if checks["database"]["ok"]:  # else it would wait for the database again
        _add_lag(container, projections)
    checks["projections"] = projections
    for name, check in container.extras.get("readiness_checks", {}).items():
        result = check()
        checks[name] = result
        ready = ready and bool(result.get("ok"))
    status: Literal["ready", "not_ready"] = "ready" if ready else "not_ready"
    body = ReadyOut(status=status, checks=checks) if is_operator(request) else ReadyOut(status)
    return Response(body, status_code=200 if ready else 503)
