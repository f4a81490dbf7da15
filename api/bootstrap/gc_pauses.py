"""The cyclic garbage collector in the server: its pauses on ``/metrics``, and the start-up
heap frozen out of its full collections.

A full (generation-2) collection walks every tracked container object of the process and
stops the event loop meanwhile. What start-up built (modules, the app, the container, its
pools and runners: ~136,000 objects) lives as long as the process, so ``gc.freeze()`` moves
it to the permanent generation, which collections skip; only what came later (sockets,
sessions, streams) is walked. Under the ``delivery`` bench this cut full collections from
157–262 ms to 51–145 ms (means per run, a loaded machine; docs/BENCHMARKS.md).

``liudong_gc_pause_seconds{generation}``: the wall-clock length of each collection
(histogram, seconds), timed by a ``gc.callbacks`` hook.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)

GC_PAUSE = Histogram(
    "liudong_gc_pause_seconds",
    "Wall-clock length of each cyclic garbage collection, by generation (the thread that "
    "triggered it, often the event loop's, stands still meanwhile).",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
_BY_GENERATION = [GC_PAUSE.labels(generation=str(g)) for g in range(3)]
_started = 0.0  # collections never overlap: the collector does not re-enter itself


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    # Runs inside the collector: nothing that allocates much, and no lock a caller may hold
    # (Histogram.observe only takes its own per-value locks, which guard float additions).
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        _BY_GENERATION[info["generation"]].observe(time.perf_counter() - _started)


def time_pauses() -> None:
    """Observe every collection's length on ``liudong_gc_pause_seconds`` (idempotent)."""
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


def freeze_startup_heap() -> int:
    """Collect once, then move every surviving object to the permanent generation, which
    later collections do not walk (``gc.freeze``). Returns the number of objects frozen so
    far in this process."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.asynccontextmanager
async def gc_lifespan(app: Any) -> AsyncIterator[None]:
    """Litestar lifespan, last of the list: the others have built everything by then.
    Unfreezes on the way out, so an app stopped in a longer-lived process (tests) leaves
    its objects collectable."""
    time_pauses()
    log.info("gc: %d start-up objects frozen", freeze_startup_heap())
    try:
        yield
    finally:
        gc.unfreeze()


__all__ = ["GC_PAUSE", "freeze_startup_heap", "gc_lifespan", "time_pauses"]
