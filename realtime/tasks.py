"""Stopping the background asyncio tasks (relay, presence, notifier) for certain."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None, *, patience: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again every ``patience``
    seconds while it has not.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` returns the
    inner result instead of raising ``CancelledError`` when the inner awaitable finishes in
    the same loop step as the cancellation (CPython gh-86296, fixed in 3.12), and a loop
    around it then runs on for ever. Raises nothing of the task's own (it is logged by
    asyncio if unretrieved)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=patience)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


__all__ = ["stop_task"]
