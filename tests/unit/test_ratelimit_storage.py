"""``realtime.ratelimit.SweptMemoryStorage``: the same moving-window limits as ``limits``'
``MemoryStorage``, without a thread started per hit, and expired entries still freed."""

from __future__ import annotations

import gc
import threading
import time

from limits import parse, strategies

from realtime.ratelimit import SweptMemoryStorage


def _sweepers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ratelimit-sweep")


def test_hits_start_no_thread_and_the_window_still_limits() -> None:
    limiter = strategies.MovingWindowRateLimiter(SweptMemoryStorage())
    rule = parse("3/second")
    before = threading.active_count()
    results = [limiter.hit(rule, "reader") for _ in range(5)]
    assert threading.active_count() == before  # the library's storage starts a Timer here
    assert results == [True, True, True, False, False]
    assert limiter.hit(rule, "another reader")
    time.sleep(1.05)
    assert limiter.hit(rule, "reader")  # the window moved on


def test_expired_entries_are_swept_and_the_sweeper_ends_with_its_storage() -> None:
    storage = SweptMemoryStorage(interval=0.05)
    limiter = strategies.MovingWindowRateLimiter(storage)
    assert limiter.hit(parse("5/second"), "reader")
    assert any(storage.events.values())
    deadline = time.monotonic() + 5
    while any(storage.events.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(storage.events.values())  # swept after the entry's second
    running = _sweepers()
    del limiter, storage
    gc.collect()
    deadline = time.monotonic() + 5
    while _sweepers() >= running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sweepers() < running
