"""``api.bootstrap.gc_pauses``: collections are timed on ``liudong_gc_pause_seconds``, and
the start-up heap is frozen out of them (and given back on the way out)."""

from __future__ import annotations

import asyncio
import gc

from prometheus_client import REGISTRY

from api.bootstrap import gc_pauses


def _count(generation: int) -> float:
    value = REGISTRY.get_sample_value(
        "liudong_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


def test_every_collection_is_timed_once() -> None:
    gc_pauses.time_pauses()
    gc_pauses.time_pauses()  # idempotent: one hook
    assert gc.callbacks.count(gc_pauses._time_collection) == 1
    before = _count(2)
    gc.collect()
    assert _count(2) == before + 1
    assert REGISTRY.get_sample_value("liudong_gc_pause_seconds_sum", {"generation": "2"}) > 0


def test_lifespan_freezes_the_start_up_heap_and_unfreezes_on_the_way_out() -> None:
    async def run() -> int:
        async with gc_pauses.gc_lifespan(None):
            return gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    frozen = asyncio.run(run())
    assert frozen > 1000  # at least the modules imported so far
    assert gc.get_freeze_count() == 0
