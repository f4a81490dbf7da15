"""Stopping the background asyncio tasks (relay, presence, notifier) for certain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any] | None, *, patience: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again every ``patience``
    seconds while it has not.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` returns the
    inner result instead of raising ``CancelledError`` when the inner awaitable finishes in
    the same loop step as the cancellation (CPython gh-86296, fixed in 3.12), and a loop
    around it then runs on for ever. An error the task ended with is logged, not raised:
    stopping goes on with the caller's other clean-up."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=patience)
    if not task.cancelled() and task.exception() is not None:
        log.error("%s ended with an error", task.get_name(), exc_info=task.exception())


__all__ = ["stop_task"]
