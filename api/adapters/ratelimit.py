"""Rate limits on the `limits` library: named rules ("5/minute"), counted in a moving window.

The storage is ``limits``' in-memory one: **each node counts for itself** (with N API nodes
behind a load balancer a client gets up to N times the limit; a Redis or Memcached storage
would make them hold across nodes). Over a limit, ``hit`` raises ``RateLimited`` with the
seconds until the window lets one more through (answered as 429 ``rate_limited`` with
``Retry-After``)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from limits import parse, strategies

from realtime.ratelimit import SweptMemoryStorage

__all__ = ["RateLimited", "RateLimits"]


class RateLimited(Exception):
    """Over the limit ``rule``; try again in ``retry_after`` seconds (≥ 1)."""

    code = "rate_limited"

    def __init__(self, rule: str, retry_after: int) -> None:
        super().__init__(f"too many requests ({rule}); try again in {retry_after} s")
        self.rule = rule
        self.retry_after = retry_after


class RateLimits:
    """``rules``: name → ``limits`` rate string (``"10/minute"``, ``"5 per second"``); an
    empty string turns a rule off. Thread-safe (``MemoryStorage`` locks)."""

    def __init__(self, rules: Mapping[str, str]) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(SweptMemoryStorage())
        self._rules = {name: parse(rule) for name, rule in rules.items() if rule}

    def hit(self, name: str, *identifiers: str) -> None:
        """Count one request of ``identifiers`` (e.g. a client address) against rule
        ``name``. Raises ``RateLimited`` when over it (a refused hit is not counted)."""
        retry_after = self.take(name, *identifiers)
        if retry_after is not None:
            raise RateLimited(name, retry_after)

    def take(self, name: str, *identifiers: str) -> int | None:
        """Like ``hit`` without raising: ``None`` when counted (or ``name`` is off or
        unknown), else the seconds (≥ 1) until the window lets one more through (the refused
        one is not counted). The WebSocket gateway's sends use it (``realtime.gateway.ports.
        SendLimits``), so HTTP and WebSocket sends of one reader share one count."""
        item = self._rules.get(name)
        if item is None:
            return None
        if self._limiter.hit(item, name, *identifiers):
            return None
        stats = self._limiter.get_window_stats(item, name, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))
