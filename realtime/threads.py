"""Running the blocking parts (database reads, eventsourcing commands) off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")


async def in_thread(func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` in anyio's worker threads (the pool Litestar's ``sync_to_thread``
    handlers use, 40 threads by default, rather than asyncio's ``cpu_count + 4``).

    Cancelling the caller abandons the thread's result at once (the call itself runs to
    completion): the gateway cancels a replay whose database read is in flight."""
    return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=True)


__all__ = ["in_thread"]
