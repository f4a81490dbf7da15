"""``MediaStore``: uploaded pictures — cleaned, content-addressed, owned, attached, swept.

Identity. A picture's id is the SHA-256 of its *cleaned* bytes, as 64 lower-case hex
characters (``is_media_id``). The same upload always cleans to the same bytes
(``api.adapters.media.images``), so uploading a picture again, by the same reader or another,
answers the same id and stores nothing new. Ids are unguessable without the picture
itself, which is why ``GET /v1/media/{id}`` needs no token.

Tables (migration ``0008_media``): ``media`` holds one row per stored picture (type,
dimensions, sizes, ``last_uploaded_at``, ``attached_at``, ``deleted_at``);
``media_uploads`` one row per (picture, reader who uploaded it) with the ``purpose`` and
the reader's own ``attached_at``. Ownership is per reader: a picture two readers uploaded
may be attached by either, and by nobody else (``check_attachable``).

Lifecycle. A picture nobody has attached (``mark_attached``) is deleted by ``sweep`` once
``grace_seconds`` have passed since its last upload: its files are removed, its uploads
forgotten, and its ``media`` row kept with ``deleted_at`` (the id then answers 404; an
upload of the same picture stores it again). Attached pictures are never swept.

Consistency. An upload locks the picture's row (insert, or ``SELECT … FOR UPDATE``)
before it writes files, and commits after: the row becomes visible only once both files
exist, a failed write deletes what it wrote before the transaction rolls back, and a
concurrent ``sweep`` (``FOR UPDATE SKIP LOCKED``, files deleted while the row is locked)
can never delete the files of an upload that revived the row. An upload of a live picture
whose files are missing writes them again.

Every method is synchronous (psycopg pool, Pillow, boto3): call it from a worker thread.
Database outages raise ``MediaStorageUnavailable`` like storage ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, get_args
from uuid import UUID

import msgspec
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from api.adapters.media import images
from api.adapters.media.errors import (
    MediaNotFound,
    MediaNotOwned,
    MediaRemoved,
    MediaStorageUnavailable,
    MediaTooLarge,
)
from api.adapters.media.storage import BlobStorage

__all__ = [
    "MEDIA_PATH",
    "MediaConfig",
    "MediaInfo",
    "MediaStore",
    "Purpose",
    "SweepResult",
    "Uploaded",
    "is_media_id",
]

log = logging.getLogger(__name__)

MEDIA_PATH = "/v1/media"
Purpose = Literal["cover", "avatar", "chat", "room"]
PURPOSES: frozenset[str] = frozenset(get_args(Purpose))

_ID_RE = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")


def is_media_id(value: object) -> bool:
    """True for 64 lower-case hex characters (a SHA-256)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class MediaConfig:
    """The media settings ``MediaStore`` needs (built from ``Settings`` by the composition
    root)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    quality: int = 85
    thumb_size: int = 320
    grace_seconds: float = 24 * 3600.0
    base_url: str = ""  # prefix of ``url``/``thumb_url``; empty → paths ("/v1/media/…")
    workers: int = 2  # pictures decoded at once (each may take ~200 MB at the pixel limit)
    presign_expiry: int = 3600

    @property
    def image_limits(self) -> images.ImageLimits:
        return images.ImageLimits(
            max_pixels=self.max_pixels, quality=self.quality, thumb_size=self.thumb_size
        )


class MediaInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A stored picture. ``url``/``thumb_url`` are ``MediaConfig.base_url`` +
    ``/v1/media/{id}`` (``/thumb``); the thumbnail is always JPEG."""

    id: str
    url: str
    thumb_url: str
    width: int
    height: int
    bytes: int
    content_type: str
    thumb_width: int
    thumb_height: int
    thumb_bytes: int
    created_at: datetime
    attached: bool

    @property
    def extension(self) -> str:
        return {v[1]: v[2] for v in images.OUTPUT_TYPES.values()}[self.content_type]

    @property
    def key(self) -> str:
        """The storage key of the picture."""
        return f"{self.id[:2]}/{self.id}.{self.extension}"

    @property
    def thumb_key(self) -> str:
        return f"{self.id[:2]}/{self.id}.thumb.jpg"


class Uploaded(msgspec.Struct, frozen=True, kw_only=True):
    """What ``upload`` did: ``created`` is True when the picture's files were stored by this
    upload (new, or stored again after a sweep), False when they were there already."""

    media: MediaInfo
    created: bool


class SweepResult(msgspec.Struct, frozen=True, kw_only=True):
    deleted: int
    bytes_freed: int
    ids: list[str]


_COLUMNS = (
    "id, content_type, width, height, bytes, thumb_width, thumb_height, thumb_bytes, "
    "created_at, attached_at, deleted_at, removed_at"
)
CHECK_STATUSES = frozenset({"pending", "pass", "review", "risky", "failed"})


class _Retry(Exception):
    """The picture's row vanished between the insert and the lock (``forget_owner``)."""


class MediaStore:
    def __init__(
        self,
        pool: ConnectionPool,
        storage: BlobStorage,
        config: MediaConfig | None = None,
        *,
        cleaner: Callable[[bytes, images.ImageLimits], images.CleanedImage] = images.clean,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.config = config or MediaConfig()
        self._clean = cleaner
        self._decoding = threading.BoundedSemaphore(max(1, self.config.workers))

    # -- helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise MediaStorageUnavailable(f"the media database is unavailable: {exc}") from exc

    def _info(self, row: dict[str, Any]) -> MediaInfo:
        url = f"{self.config.base_url.rstrip('/')}{MEDIA_PATH}/{row['id']}"
        return MediaInfo(
            id=row["id"],
            url=url,
            thumb_url=url + "/thumb",
            width=row["width"],
            height=row["height"],
            bytes=row["bytes"],
            content_type=row["content_type"],
            thumb_width=row["thumb_width"],
            thumb_height=row["thumb_height"],
            thumb_bytes=row["thumb_bytes"],
            created_at=row["created_at"],
            attached=row["attached_at"] is not None,
        )

    def clean(self, data: bytes) -> images.CleanedImage:
        """Sniff, check and re-encode ``data`` (at most ``config.workers`` at once)."""
        if len(data) > self.config.max_bytes:
            raise MediaTooLarge(f"at most {self.config.max_bytes:,} bytes are accepted")
        with self._decoding:
            return self._clean(data, self.config.image_limits)

    # -- upload -------------------------------------------------------------------------

    def upload(self, reader_id: UUID, data: bytes, purpose: str | None = None) -> Uploaded:
        """Clean ``data`` and store it as ``reader_id``'s upload (``purpose``: cover, avatar,
        chat, room or None). Raises the ``images`` errors, ``MediaTooLarge``,
        ``MediaRemoved`` (the same picture was taken down before) and
        ``MediaStorageUnavailable``; ``ValueError`` for an unknown purpose."""
        if purpose is not None and purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}")
        cleaned = self.clean(data)
        media_id = hashlib.sha256(cleaned.data).hexdigest()
        for _ in range(3):
            try:
                return self._store_cleaned(reader_id, cleaned, media_id, purpose)
            except _Retry:
                continue
        raise MediaStorageUnavailable(f"media {media_id} changed under three uploads in a row")

    def _store_cleaned(
        self, reader_id: UUID, cleaned: images.CleanedImage, media_id: str, purpose: str | None
    ) -> Uploaded:
        written: list[str] = []
        try:
            with self._connection() as conn, conn.transaction():
                row = conn.execute(
                    f"""INSERT INTO media (id, content_type, width, height, bytes,
                                           thumb_width, thumb_height, thumb_bytes)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (id) DO NOTHING RETURNING {_COLUMNS}""",
                    (
                        media_id,
                        cleaned.content_type,
                        cleaned.width,
                        cleaned.height,
                        cleaned.bytes,
                        cleaned.thumb_width,
                        cleaned.thumb_height,
                        len(cleaned.thumb),
                    ),
                ).fetchone()
                created = row is not None
                if row is None:
                    row = conn.execute(
                        f"SELECT {_COLUMNS} FROM media WHERE id = %s FOR UPDATE", (media_id,)
                    ).fetchone()
                    if row is None:  # forget_owner deleted it meanwhile: a rare retry
                        raise _Retry
                    if row["removed_at"] is not None:
                        raise MediaRemoved(f"media {media_id} was taken down")
                    if row["deleted_at"] is not None:  # swept: store it again
                        created = True
                        row = conn.execute(
                            f"""UPDATE media SET deleted_at = NULL, attached_at = NULL,
                                       created_at = now(), last_uploaded_at = now()
                                WHERE id = %s RETURNING {_COLUMNS}""",
                            (media_id,),
                        ).fetchone()
                    else:
                        conn.execute(
                            "UPDATE media SET last_uploaded_at = now() WHERE id = %s",
                            (media_id,),
                        )
                assert row is not None
                info = self._info(row)
                try:
                    # the thumbnail first: a picture's main file exists only with its thumb
                    for key, blob, content_type in (
                        (info.thumb_key, cleaned.thumb, images.THUMB_CONTENT_TYPE),
                        (info.key, cleaned.data, cleaned.content_type),
                    ):
                        if created or not self.storage.exists(key):
                            self.storage.put(key, blob, content_type)
                            if created:
                                written.append(key)
                    conn.execute(
                        """INSERT INTO media_uploads (media_id, reader_id, purpose)
                           VALUES (%s, %s, %s)
                           ON CONFLICT (media_id, reader_id) DO UPDATE
                           SET uploaded_at = now(),
                               purpose = COALESCE(EXCLUDED.purpose, media_uploads.purpose)""",
                        (media_id, reader_id, purpose),
                    )
                except BaseException:
                    # before the rollback releases the row: nobody else can be writing these
                    self._delete_quietly(written)
                    written.clear()
                    raise
        except BaseException:
            self._delete_quietly(written)  # the commit itself failed
            raise
        return Uploaded(media=info, created=created)

    def _delete_quietly(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception:  # noqa: BLE001 - best effort; the sweep of a re-upload repairs
                log.warning("could not delete %s after a failed upload", key, exc_info=True)

    # -- reading ------------------------------------------------------------------------

    def get(self, media_id: str) -> MediaInfo | None:
        """The live picture ``media_id``; ``None`` when unknown, malformed or swept."""
        if not is_media_id(media_id):
            return None
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM media WHERE id = %s AND deleted_at IS NULL",
                (media_id,),
            ).fetchone()
        return None if row is None else self._info(row)

    def require(self, media_id: str) -> MediaInfo:
        """``get`` or ``MediaNotFound``."""
        info = self.get(media_id)
        if info is None:
            raise MediaNotFound(f"no media {media_id!r}")
        return info

    def owners(self, media_id: str) -> list[UUID]:
        """The readers who uploaded ``media_id`` (first uploader first)."""
        if not is_media_id(media_id):
            return []
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT reader_id FROM media_uploads WHERE media_id = %s ORDER BY uploaded_at",
                (media_id,),
            ).fetchall()
        return [row["reader_id"] for row in rows]

    def owns(self, media_id: str, reader_id: UUID) -> bool:
        """True when ``reader_id`` uploaded the live picture ``media_id``."""
        if not is_media_id(media_id):
            return False
        with self._connection() as conn:
            row = conn.execute(
                """SELECT 1 FROM media_uploads u JOIN media m ON m.id = u.media_id
                   WHERE u.media_id = %s AND u.reader_id = %s AND m.deleted_at IS NULL""",
                (media_id, reader_id),
            ).fetchone()
        return row is not None

    def read(self, media_id: str, *, thumb: bool = False) -> bytes | None:
        """The stored bytes of a live picture (or its thumbnail); ``None`` when missing."""
        info = self.get(media_id)
        if info is None:
            return None
        return self.storage.get(info.thumb_key if thumb else info.key)

    # -- attaching (part 4 calls these) -------------------------------------------------

    def check_attachable(self, media_id: str, reader_id: UUID) -> MediaInfo:
        """The picture, when ``reader_id`` may attach it (only media uploaded by the same
        reader can be attached). Raises ``MediaNotFound`` (unknown or swept) or
        ``MediaNotOwned``. Changes nothing; see ``mark_attached``."""
        info = self.require(media_id)
        if not self.owns(media_id, reader_id):
            raise MediaNotOwned(f"media {media_id} was not uploaded by this reader")
        return info

    def mark_attached(self, media_id: str, reader_id: UUID) -> MediaInfo:
        """Record that ``reader_id`` uses ``media_id`` (a book cover, an avatar, a chat or
        room message): from now on the sweep never deletes it. Idempotent. Raises
        ``MediaNotFound`` or ``MediaNotOwned`` like ``check_attachable``.

        Call it *before* recording the command that refers to the picture: a command that
        then fails leaves a picture kept for nothing (harmless), whereas the other order can
        let a sweep delete a picture a book already shows."""
        if not is_media_id(media_id):
            raise MediaNotFound(f"no media {media_id!r}")
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM media WHERE id = %s FOR UPDATE", (media_id,)
            ).fetchone()
            if row is None or row["deleted_at"] is not None:
                raise MediaNotFound(f"no media {media_id!r}")
            owned = conn.execute(
                """UPDATE media_uploads SET attached_at = COALESCE(attached_at, now())
                   WHERE media_id = %s AND reader_id = %s RETURNING attached_at""",
                (media_id, reader_id),
            ).fetchone()
            if owned is None:
                raise MediaNotOwned(f"media {media_id} was not uploaded by this reader")
            row = conn.execute(
                f"""UPDATE media SET attached_at = COALESCE(attached_at, now()) WHERE id = %s
                    RETURNING {_COLUMNS}""",
                (media_id,),
            ).fetchone()
        assert row is not None
        return self._info(row)

    # -- lifecycle ----------------------------------------------------------------------

    def sweep(
        self, *, grace_seconds: float | None = None, batch: int = 200, dry_run: bool = False
    ) -> SweepResult:
        """Delete the pictures nobody attached whose last upload is older than the grace
        period (``config.grace_seconds`` unless given). Safe on several nodes at once
        (``SKIP LOCKED``). ``dry_run`` only lists them."""
        grace = self.config.grace_seconds if grace_seconds is None else grace_seconds
        deleted: list[str] = []
        freed = 0
        select = f"""SELECT {_COLUMNS} FROM media
                     WHERE deleted_at IS NULL AND attached_at IS NULL
                       AND last_uploaded_at < now() - make_interval(secs => %s)
                     ORDER BY last_uploaded_at LIMIT %s"""
        if dry_run:
            with self._connection() as conn:
                rows = conn.execute(select, (grace, 100_000)).fetchall()
            return SweepResult(
                deleted=len(rows),
                bytes_freed=sum(r["bytes"] + r["thumb_bytes"] for r in rows),
                ids=[r["id"] for r in rows],
            )
        failure: MediaStorageUnavailable | None = None
        while failure is None:
            with self._connection() as conn, conn.transaction():
                rows = conn.execute(select + " FOR UPDATE SKIP LOCKED", (grace, batch)).fetchall()
                done, failure = self._delete_files(rows)
                if done:
                    ids = [r["id"] for r in done]
                    conn.execute("UPDATE media SET deleted_at = now() WHERE id = ANY(%s)", (ids,))
                    conn.execute("DELETE FROM media_uploads WHERE media_id = ANY(%s)", (ids,))
                    deleted.extend(ids)
                    freed += sum(r["bytes"] + r["thumb_bytes"] for r in done)
            if len(rows) < batch:
                break
        cleanup = getattr(self.storage, "remove_stale_temp_files", None)
        if cleanup is not None:
            with contextlib.suppress(OSError):
                cleanup()
        if failure is not None:
            log.warning("media sweep stopped after %d deletions: %s", len(deleted), failure)
            if not deleted:
                raise failure
        return SweepResult(deleted=len(deleted), bytes_freed=freed, ids=deleted)

    def _delete_files(
        self, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], MediaStorageUnavailable | None]:
        done: list[dict[str, Any]] = []
        for row in rows:
            info = self._info(row)
            try:
                self.storage.delete(info.key)
                self.storage.delete(info.thumb_key)
            except MediaStorageUnavailable as exc:
                return done, exc
            done.append(row)
        return done, None

    def forget_reader(self, reader_id: UUID) -> int:
        """The hook for forgetting a reader (account deletion): drop their uploads, and
        delete at once the pictures that were theirs alone and never attached. Pictures in
        use (attached) stay; what a forgotten reader's books, avatar and messages show is
        decided where those are forgotten. Returns how many pictures were deleted."""
        with self._connection() as conn, conn.transaction():
            ids = [
                r["media_id"]
                for r in conn.execute(
                    "DELETE FROM media_uploads WHERE reader_id = %s RETURNING media_id",
                    (reader_id,),
                ).fetchall()
            ]
            if not ids:
                return 0
            rows = conn.execute(
                f"""SELECT {_COLUMNS} FROM media m
                    WHERE id = ANY(%s) AND deleted_at IS NULL AND attached_at IS NULL
                      AND NOT EXISTS (SELECT 1 FROM media_uploads u WHERE u.media_id = m.id)
                    FOR UPDATE""",
                (ids,),
            ).fetchall()
            done, failure = self._delete_files(rows)
            if done:
                conn.execute(
                    "UPDATE media SET deleted_at = now() WHERE id = ANY(%s)",
                    ([r["id"] for r in done],),
                )
        if failure is not None:
            # the uploads are forgotten; the pictures left are swept like any unattached one
            raise failure
        return len(done)

    def forget_owner(self, reader_id: UUID) -> int:
        """Delete every upload of ``reader_id`` (a forgotten reader, ``DELETE /v1/me``): the
        reader's upload rows, and each picture no other reader uploaded too, attached or not:
        its file and thumbnail (disk or S3) and its row. A picture another reader uploaded
        as well is theirs too and stays. Returns how many pictures were deleted. Raises
        ``MediaStorageUnavailable`` (the database, or a file that could not be deleted:
        nothing of that picture is forgotten then, so a retry finishes the work).

        What still refers to a deleted picture (a message, a cover) shows what a missing
        picture shows: ``GET /v1/media/{id}`` answers 404."""
        with self._connection() as conn, conn.transaction():
            rows = conn.execute(
                f"""SELECT {_COLUMNS} FROM media m
                    WHERE id IN (SELECT media_id FROM media_uploads WHERE reader_id = %s)
                      AND NOT EXISTS (SELECT 1 FROM media_uploads u
                                      WHERE u.media_id = m.id AND u.reader_id <> %s)
                    ORDER BY id FOR UPDATE""",
                (reader_id, reader_id),
            ).fetchall()
            live = [r for r in rows if r["deleted_at"] is None]
            done, failure = self._delete_files(live)
            if failure is not None:
                raise failure
            if rows:
                conn.execute("DELETE FROM media WHERE id = ANY(%s)", ([r["id"] for r in rows],))
            conn.execute("DELETE FROM media_uploads WHERE reader_id = %s", (reader_id,))
        return len(done)

    # -- WeChat's image check (part 5) ---------------------------------------------------

    def submitted(self, media_id: str, trace_id: str | None) -> None:
        """``media_id`` was submitted to WeChat's ``mediaCheckAsync``, which answered
        ``trace_id`` (``None``: the submission failed; the picture stays, status
        ``failed``). The result arrives later by ``trace_id`` (``checked``)."""
        with self._connection() as conn:
            conn.execute(
                """UPDATE media SET check_trace_id = %s,
                          check_status = CASE WHEN %s::text IS NULL THEN 'failed'
                                              ELSE 'pending' END,
                          checked_at = NULL
                   WHERE id = %s AND check_status IS DISTINCT FROM 'risky'""",
                (trace_id, trace_id, media_id),
            )

    def checked(self, trace_id: str, status: str) -> str | None:
        """Record the result of the check ``trace_id`` (``pass``, ``review`` or ``risky``);
        returns the picture's id, ``None`` for an unknown trace id. A result for a picture
        already found risky changes nothing. ``ValueError`` for another status."""
        if status not in CHECK_STATUSES or status in ("pending", "failed"):
            raise ValueError(f"unknown check result {status!r}")
        with self._connection() as conn:
            row = conn.execute(
                """UPDATE media SET check_status = CASE WHEN check_status = 'risky'
                                                      THEN check_status ELSE %s END,
                          checked_at = now()
                   WHERE check_trace_id = %s RETURNING id""",
                (status, trace_id),
            ).fetchone()
        return None if row is None else str(row["id"])

    def check_status(self, media_id: str) -> str | None:
        """The picture's check status (``None``: never submitted, or unknown)."""
        if not is_media_id(media_id):
            return None
        with self._connection() as conn:
            row = conn.execute(
                "SELECT check_status FROM media WHERE id = %s", (media_id,)
            ).fetchone()
        return None if row is None else row["check_status"]

    def remove(self, media_id: str, reason: str) -> list[UUID] | None:
        """Take picture ``media_id`` down for good (``reason``: ``"risky"``): its file and
        thumbnail are deleted, its row kept with ``removed_at`` (``GET`` answers 410 and the
        same bytes cannot be uploaded again), and its uploads forgotten. Returns the readers
        who had uploaded it; ``None`` when it was removed before (idempotent) or is
        unknown. Raises ``MediaStorageUnavailable`` (nothing is marked then: retry)."""
        if not is_media_id(media_id):
            return None
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM media WHERE id = %s FOR UPDATE", (media_id,)
            ).fetchone()
            if row is None or row["removed_at"] is not None:
                return None
            if row["deleted_at"] is None:
                _, failure = self._delete_files([row])
                if failure is not None:
                    raise failure
            owners = [
                r["reader_id"]
                for r in conn.execute(
                    "DELETE FROM media_uploads WHERE media_id = %s RETURNING reader_id",
                    (media_id,),
                ).fetchall()
            ]
            conn.execute(
                """UPDATE media SET removed_at = now(), removed_reason = %s,
                          deleted_at = coalesce(deleted_at, now()),
                          check_status = CASE WHEN %s = 'risky' THEN 'risky'
                                              ELSE check_status END
                   WHERE id = %s""",
                (reason, reason, media_id),
            )
        return owners

    def is_removed(self, media_id: str) -> bool:
        """True when ``media_id`` was taken down (``remove``)."""
        return bool(self.removed_ids([media_id]))

    def removed_ids(self, media_ids: list[str]) -> set[str]:
        """Those of ``media_ids`` that were taken down (one query)."""
        wanted = sorted({m for m in media_ids if is_media_id(m)})
        if not wanted:
            return set()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id FROM media WHERE id = ANY(%s) AND removed_at IS NOT NULL", (wanted,)
            ).fetchall()
        return {str(r["id"]) for r in rows}

    def close(self) -> None:
        self.storage.close()
