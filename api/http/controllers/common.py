"""Shared helpers of the controllers: the container, command execution, positions."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from litestar import Request, Response

from api.bootstrap.container import Container, ReadModelLag
from api.http.idempotency import Staged, abandon_idempotent, finish_idempotent
from api.http.schemas import Accepted
from domain.commands import Command, Recorded

T = TypeVar("T")
W = TypeVar("W")

POSITION_HEADER = "Liudong-Position"


async def sync_to_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the event loop's default executor (the handler threads,
    ``api.http.app``) with the caller's context variables: Litestar's ``sync_to_thread``
    without its per-call ``sniffio`` look-up of the async library (~1.5 % of the server's
    GIL time under the ``commands`` load; this app runs on asyncio only)."""
    call = partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(None, call)


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


async def run_command(container: Container, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` (the blocking half of a command: checks, idempotency claim, the
    domain call) in a handler thread, at most ``COMMAND_THREADS`` at once per process.

    A bound, because every save of a log waits for that log's table lock: without group
    commit, 16 at once made 64 clients slower than 6 (137 vs 198 commands/s); with it,
    concurrent saves share a transaction and 16 did better than 6 (``COMMAND_THREADS``,
    ``docs/BENCHMARKS.md``)."""
    async with container.command_slots:
        return await sync_to_thread(fn, *args)


async def shelf_includes_async(container: Container, recorded: Recorded) -> bool:
    """``shelf_includes`` awaited on the event loop (no thread held while waiting)."""
    try:
        await container.wait_for_shelf_async(recorded)
    except ReadModelLag:
        return False
    return True


async def respond_when(
    container: Container,
    staged: Staged[T],
    wait: Callable[[T], Awaitable[W]],
    respond: Callable[[T, W], Response[Any]],
) -> Response[Any]:
    """The response of a command that ran in a worker thread (``begin_idempotent``):
    awaits ``wait(staged.value)`` on the event loop (the read models reaching it), then
    makes ``respond(value, waited)`` and stores it for its idempotency key in a worker
    thread (``finish_idempotent``). If the wait fails (or the client goes away), the key
    is forgotten as ``run_idempotent`` forgets it, and the error raised again."""
    try:
        waited = await wait(staged.value)
    except BaseException:
        # shielded: a client gone away must not stop it
        await asyncio.shield(sync_to_thread(abandon_idempotent, container, staged))
        raise
    return await sync_to_thread(
        finish_idempotent, container, staged, lambda value: respond(value, waited)
    )


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
