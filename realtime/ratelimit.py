"""``limits``' in-memory storage with its expired entries swept by one long-lived thread.

``limits.storage.MemoryStorage`` schedules its sweep on every hit: when the previous
``threading.Timer(0.01)`` has run, the hit starts a new one. Under steady traffic that is a
thread started about every 10 ms per storage, by whoever hits it: the WebSocket gateway's
event loop (every client frame, every ``chat.send``) blocks in ``Thread.start`` until the
new thread runs, and each timer walks every key. With 1,000 sockets this was 13 % of the
server's GIL time in the ``delivery`` bench. Here one daemon thread sweeps every
``interval`` seconds instead; the sweep only frees memory (a moving window counts by
timestamps), so the limits are the same."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from limits import storage

__all__ = ["SweptMemoryStorage"]


class SweptMemoryStorage(storage.MemoryStorage):
    """``MemoryStorage`` whose expired entries one daemon thread sweeps every ``interval``
    seconds (1.0); a hit never starts a thread. The thread ends once the storage is garbage."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.timer.cancel()  # the library's first 10 ms timer: the sweeper replaces it
        sweeper = threading.Thread(
            target=_sweep, args=(weakref.ref(self), interval), name="ratelimit-sweep", daemon=True
        )
        sweeper.start()

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the private hook
        """The library calls this on every hit to (re)start its timer: nothing to do."""


def _sweep(ref: weakref.ReferenceType[Any], interval: float) -> None:
    while True:
        time.sleep(interval)
        owner = ref()
        if owner is None:
            return
        owner._MemoryStorage__expire_events()  # noqa: SLF001 - the library's own sweep
        del owner
