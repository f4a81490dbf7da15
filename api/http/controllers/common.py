"""Shared helpers of the controllers: the container, command execution, positions."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from api.bootstrap.container import Container, ReadModelLag
from api.http.schemas import Accepted
from domain.commands import Command, Recorded

POSITION_HEADER = "Liudong-Position"


def container_of(request: Request[Any, Any, Any]) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


def execute(container: Container, command: Command) -> tuple[Recorded, bool]:
    """Run a Library command and wait until the shelf read model includes it, so the
    client's next GET sees it (read-your-writes). Returns ``(recorded, consistent)``;
    ``consistent`` is False if the read model lagged past the timeout."""
    recorded = container.library.handle(command)
    return recorded, shelf_includes(container, recorded)


def shelf_includes(container: Container, recorded: Recorded) -> bool:
    """Wait until the shelf read model includes ``recorded``; False if it lagged past the
    consistency timeout."""
    try:
        container.wait_for_shelf(recorded)
    except ReadModelLag:
        return False
    return True


def position_headers(recorded: Recorded) -> dict[str, str]:
    if recorded.position is None:
        return {}
    return {POSITION_HEADER: f"library:{recorded.position}"}


def accepted(recorded: Recorded) -> Response[Any]:
    """202 (``Accepted``) when a command was recorded but the read model has not caught up
    in time."""
    return Response(
        Accepted(id=recorded.id, position=recorded.position, status="accepted"),
        status_code=202,
        headers=position_headers(recorded),
    )
