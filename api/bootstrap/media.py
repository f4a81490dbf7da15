"""Wires the media adapter (``api.adapters.media``): the store the container holds
(``container.media``), and the server's periodic sweep of expired uploads.

``media_store_for(settings, pool)`` picks the storage: S3 when ``LIUDONG_S3_BUCKET`` is set,
else the disk under ``LIUDONG_DATA_DIR/media``.

WeChat's image check (``LIUDONG_MEDIA_CHECK``, ``api.adapters.media.check``): ``check_upload``
submits a new upload (from the upload's worker thread); ``media_check_result`` is the
``wxa_media_check`` push handler (``api.bootstrap.wechat.PUSH_HANDLERS``), and a ``risky``
verdict calls ``take_down``:

1. ``MediaStore.remove``: the file and thumbnail are deleted, the id answers 410 for good;
2. ``RemoveMedia`` records ``Media.Removed`` in the Library log: the inbox marks every chat
   message showing it ``removed`` and gives each member of those conversations a
   ``media.removed`` item (their sockets get it as an ``event`` frame);
3. the books whose cover it was lose their cover (``ReviseBook`` for their owner:
   ``cover_url`` ``""``), the readers whose avatar it was their avatar (``ChangeProfile``);
4. each room whose messages showed it gets a ``room.media_removed`` frame on
   ``liudong.room.<id>`` (its members' sockets, every node); its history marks it removed.

Each step is idempotent, and a push WeChat repeats (it does, until answered) does them again
harmlessly.

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
from uuid import UUID

from psycopg_pool import ConnectionPool

from api.adapters.media import BlobStorage, DiskStorage, MediaConfig, MediaStore, Uploaded
from api.adapters.media.check import verdict_of_push
from api.bootstrap.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "check_upload",
    "media_check_result",
    "media_config",
    "media_lifespan",
    "media_storage_for",
    "media_store_for",
    "sweep_loop",
    "take_down",
]


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


# -- WeChat's image check ----------------------------------------------------------------------


def check_upload(container: Any, uploaded: Uploaded, reader_id: UUID, purpose: str | None) -> None:
    """Submit a new upload to the image check when it is on (``platform.media_check``) and
    the picture was never submitted (or its submission failed). Never raises: a failed
    submission is logged and recorded ``failed``. Blocking (worker thread)."""
    platform = getattr(container, "wechat", None)
    check = getattr(platform, "media_check", None)
    store: MediaStore | None = container.media
    if check is None or store is None:
        return
    try:
        if store.check_status(uploaded.media.id) not in (None, "failed"):
            return
        check.submit(store, uploaded.media, reader_id, purpose)
    except Exception:
        log.exception("media check: submitting %s failed", uploaded.media.id)


def media_check_result(message: Any, container: Any) -> None:
    """The ``wxa_media_check`` push handler: record the verdict on its picture and take a
    ``risky`` one down (``take_down``). A push without a trace id or verdict, or for a
    trace id this server never submitted, is logged and ignored."""
    verdict = verdict_of_push(message.fields)
    store: MediaStore | None = container.media
    if verdict is None or store is None:
        log.warning("media check: push without a verdict ignored: %r", sorted(message.fields))
        return
    trace_id, status = verdict
    media_id = store.checked(trace_id, status)
    if media_id is None:
        log.warning("media check: verdict for an unknown trace id %s ignored", trace_id)
        return
    log.info("media check: %s is %s", media_id, status)
    if status == "risky":
        take_down(container, media_id, "risky")


def take_down(container: Any, media_id: str, reason: str) -> None:
    """Remove picture ``media_id`` everywhere (module docstring). Blocking (worker thread)."""
    from domain import commands as c  # noqa: PLC0415 - the domain's commands, used here only

    store: MediaStore = container.media
    store.remove(media_id, reason)
    container.library.handle(c.RemoveMedia(media_id=media_id, reason=reason))
    books, readers = container.shelf.using_picture(media_id)
    for book in books:
        container.library.handle(
            c.ReviseBook(
                book_id=book["id"], actor_id=book["owner_id"], cover_url="", cover_media_id=""
            )
        )
    for reader_id in readers:
        container.library.handle(c.ChangeProfile(reader_id=reader_id, avatar_url=""))
    _notify_rooms(container, media_id, reason)


def _notify_rooms(container: Any, media_id: str, reason: str) -> None:
    """Publish ``room.media_removed`` to the rooms whose history shows ``media_id`` (from
    the push endpoint's worker thread, on the app's event loop)."""
    from api.bootstrap.realtime import realtime_of  # noqa: PLC0415 - realtime imports container
    from domain.chat import room_id_for  # noqa: PLC0415
    from realtime.gateway.rooms import ROOM_SUBJECT_PREFIX  # noqa: PLC0415
    from realtime.protocol import RoomMediaRemoved, encode  # noqa: PLC0415

    node = realtime_of(container)
    if node is None:
        return
    found = node.rooms.messages_with_picture(media_id)
    if not found:
        return

    async def publish() -> None:
        for name, message_ids in found.items():
            frame = RoomMediaRemoved(
                room=name, media_id=media_id, message_ids=message_ids, reason=reason
            )
            await node.nc.publish(f"{ROOM_SUBJECT_PREFIX}{room_id_for(name)}", encode(frame))

    import anyio.from_thread  # noqa: PLC0415

    try:
        anyio.from_thread.run(publish)
    except Exception:  # the history shows it removed; the frames are best effort
        log.exception("media check: room notices of %s failed", media_id)
