"""Operator endpoints: liveness, readiness."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get

from api.controllers.common import container_of


@get("/healthz", operation_id="healthz", tags=["operations"], security=[])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", operation_id="readyz", tags=["operations"], sync_to_thread=True, security=[])
def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Readiness: the database answers and every projection runs (503 otherwise)."""
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
    checks["projections"] = projections
    for name, check in container.extras.get("readiness_checks", {}).items():
        result = check()
        checks[name] = result
        ready = ready and bool(result.get("ok"))
    return Response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
