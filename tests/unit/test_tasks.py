"""``realtime.tasks.stop_task``: a background loop ends even when its first cancellation was
swallowed (CI hung for 90 minutes in ``Relay.stop`` on such a race)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from realtime.tasks import stop_task


def _loop_over_wait_for(queue: asyncio.Queue[int], got: list[int]) -> Any:
    async def run() -> None:
        while True:
            got.append(await asyncio.wait_for(queue.get(), 60))

    return run()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for no longer swallows (gh-86296)")
async def test_a_cancel_racing_a_result_is_swallowed_by_wait_for_on_3_11() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    got: list[int] = []
    task = asyncio.create_task(_loop_over_wait_for(queue, got))
    await asyncio.sleep(0)  # parked in wait_for
    queue.put_nowait(1)
    task.cancel()  # same loop step as the result
    await asyncio.sleep(0.05)
    try:
        assert got == [1] and not task.done()  # the loop went on: one cancel() was lost
    finally:
        await stop_task(task, patience=0.05)


async def test_stop_task_ends_the_loop_whatever_the_race() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    got: list[int] = []
    task = asyncio.create_task(_loop_over_wait_for(queue, got))
    await asyncio.sleep(0)
    queue.put_nowait(1)
    await asyncio.wait_for(stop_task(task, patience=0.05), 5)
    assert task.done() and task.cancelled()


async def test_stop_task_takes_none_and_a_finished_task(caplog: pytest.LogCaptureFixture) -> None:
    await stop_task(None)

    async def fails() -> None:
        raise ValueError("its own error")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await stop_task(task)  # the task's error is not the stopper's: it is logged
    assert task.done()
    assert "its own error" in caplog.text
