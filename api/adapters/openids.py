"""The WeChat openId of each reader (``wechat_openids``, migration ``0009_wechat``).

A reader's id is ``uuid5(openId)`` (``domain.reader.reader_id_for``): it cannot be turned back
into the openId that WeChat's server API wants — msgSecCheck the writer's, subscribe
messages the recipient's. Login remembers it here (``remember``); ``open_id`` reads it,
cached in memory (a reader's openId never changes: the id is derived from it).
Synchronous (psycopg pool): call from a worker thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

__all__ = ["OpenIdDirectory"]


class OpenIdDirectory:
    """Reader id → WeChat openId over ``pool``; at most ``cache_size`` answers cached."""

    def __init__(self, pool: ConnectionPool[Any], *, cache_size: int = 10_000) -> None:
        self.pool = pool
        self.cache_size = cache_size
        self._cache: OrderedDict[UUID, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, reader_id: UUID, open_id: str) -> None:
        """Record (or refresh the ``seen_at`` of) ``reader_id``'s openId."""
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO wechat_openids (reader_id, open_id) VALUES (%s, %s) "
                "ON CONFLICT (reader_id) DO UPDATE SET open_id = excluded.open_id, seen_at = now()",
                (reader_id, open_id),
            )
        self._keep(reader_id, open_id)

    def open_id(self, reader_id: UUID) -> str | None:
        """The openId of ``reader_id``; ``None`` if it never logged in with WeChat here."""
        with self._lock:
            cached = self._cache.get(reader_id)
            if cached is not None:
                self._cache.move_to_end(reader_id)
                return cached
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT open_id FROM wechat_openids WHERE reader_id = %s", (reader_id,)
            ).fetchone()
        if row is None:
            return None
        open_id = str(row["open_id"] if isinstance(row, dict) else row[0])
        self._keep(reader_id, open_id)
        return open_id

    def _keep(self, reader_id: UUID, open_id: str) -> None:
        with self._lock:
            self._cache[reader_id] = open_id
            self._cache.move_to_end(reader_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
