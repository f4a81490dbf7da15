"""Wires the media adapter (``api.adapters.media``): the store the container holds
(``container.media``), and the server's periodic sweep of expired uploads.

``media_store_for(settings, pool)`` picks the storage: S3 when ``LIUDONG_S3_BUCKET`` is set,
else the disk under ``LIUDONG_DATA_DIR/media``.

``media_lifespan`` (after the container's lifespan, ``api.http.app``) runs
``MediaStore.sweep`` every ``LIUDONG_MEDIA_SWEEP_INTERVAL`` seconds in a worker thread (the
first one a minute after start-up, or sooner for short intervals); at shutdown it waits for
a sweep in progress. Every node may run it: sweeps skip each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from psycopg_pool import ConnectionPool

from api.adapters.media import BlobStorage, DiskStorage, MediaConfig, MediaStore
from api.bootstrap.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["media_config", "media_lifespan", "media_storage_for", "media_store_for", "sweep_loop"]


def media_config(settings: Settings) -> MediaConfig:
    return MediaConfig(
        max_bytes=settings.media_max_bytes,
        max_pixels=settings.media_max_pixels,
        quality=settings.media_quality,
        thumb_size=settings.media_thumb_size,
        grace_seconds=settings.media_grace,
        base_url=settings.media_base_url,
        workers=settings.media_workers,
        presign_expiry=settings.s3_presign_expiry,
    )


def media_storage_for(settings: Settings) -> BlobStorage:
    if settings.s3_bucket:
        from api.adapters.media.s3 import S3Storage

        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            max_connections=settings.handler_threads,
        )
    return DiskStorage(settings.data_dir / "media")


def media_store_for(settings: Settings, pool: ConnectionPool) -> MediaStore:
    return MediaStore(pool, media_storage_for(settings), media_config(settings))


async def sweep_loop(media: MediaStore, interval: float, stop: asyncio.Event) -> None:
    """Sweep every ``interval`` seconds until ``stop`` is set; errors are logged."""
    loop = asyncio.get_running_loop()
    delay = min(60.0, interval)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return
        delay = interval
        try:
            result = await loop.run_in_executor(None, media.sweep)
        except Exception:
            log.exception("media sweep failed")
            continue
        if result.deleted:
            log.info(
                "media sweep: %d unattached picture(s) deleted, %d bytes freed",
                result.deleted,
                result.bytes_freed,
            )


@contextlib.asynccontextmanager
async def media_lifespan(app: Any) -> AsyncIterator[None]:
    container = app.state.container
    media: MediaStore | None = getattr(container, "media", None)
    interval = container.settings.media_sweep_interval
    stop = asyncio.Event()
    task = None
    if media is not None and interval > 0:
        task = asyncio.create_task(sweep_loop(media, interval, stop), name="liudong-media-sweep")
    try:
        yield
    finally:
        stop.set()
        if task is not None:
            await task
