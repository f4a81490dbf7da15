"""The server's periodic sweep (``api.bootstrap.media``): runs in a worker thread every
interval, survives a failing sweep, and stops (waiting for a sweep in progress) at
shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

from api.adapters.media import SweepResult
from api.bootstrap.media import media_lifespan, sweep_loop
from api.bootstrap.settings import Settings


class FakeMedia:
    def __init__(self, fail_first: bool = False, seconds: float = 0.0) -> None:
        self.calls = 0
        self.threads: set[int] = set()
        self.fail_first = fail_first
        self.seconds = seconds
        self.finished = 0

    def sweep(self) -> SweepResult:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.fail_first and self.calls == 1:
            raise RuntimeError("storage down")
        time.sleep(self.seconds)
        self.finished += 1
        return SweepResult(deleted=1, bytes_freed=10, ids=["x"])


async def test_the_loop_sweeps_every_interval_off_the_event_loop() -> None:
    media = FakeMedia(fail_first=True)
    stop = asyncio.Event()
    task = asyncio.create_task(sweep_loop(media, 0.05, stop))  # type: ignore[arg-type]
    await asyncio.sleep(0.4)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert media.calls >= 3  # the failure did not end the loop
    assert threading.get_ident() not in media.threads


async def test_the_lifespan_waits_for_a_sweep_in_progress() -> None:
    media = FakeMedia(seconds=0.3)
    container = SimpleNamespace(media=media, settings=Settings(media_sweep_interval=0.01))
    app: Any = SimpleNamespace(state=SimpleNamespace(container=container))
    async with media_lifespan(app):
        await asyncio.sleep(0.1)  # the first sweep is running
    assert media.calls == media.finished == 1


async def test_no_sweep_when_the_interval_is_zero() -> None:
    media = FakeMedia()
    container = SimpleNamespace(media=media, settings=Settings(media_sweep_interval=0))
    app: Any = SimpleNamespace(state=SimpleNamespace(container=container))
    async with media_lifespan(app):
        await asyncio.sleep(0.05)
    assert media.calls == 0
