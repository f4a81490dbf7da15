"""Where the pictures' bytes live: one port (``BlobStorage``), two adapters — ``DiskStorage``
here (the default, under ``LIUDONG_DATA_DIR/media``) and ``S3Storage``
(``api.adapters.media.s3``, any S3-compatible object store).

Keys are relative, slash-separated paths chosen by ``MediaStore`` (``ab/abcdef….jpg``).
Objects are immutable: a key is written once with its final bytes, and a reader never sees
a partial object (disk: written under ``.tmp/`` then renamed over; S3: a PUT is atomic).
Methods are synchronous; call them from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from api.adapters.media.errors import MediaStorageUnavailable

__all__ = ["BlobStorage", "DiskStorage", "valid_key"]

_KEY_RE = re.compile(r"[0-9a-z][0-9a-z_.-]*(/[0-9a-z][0-9a-z_.-]*)*")


def valid_key(key: str) -> bool:
    """Lower-case ASCII path segments, no ``..``, no leading dot or slash."""
    return _KEY_RE.fullmatch(key) is not None and ".." not in key


@runtime_checkable
class BlobStorage(Protocol):
    """The storage port."""

    #: ``"disk"`` or ``"s3"`` (logs, readiness, the bench's parameters)
    kind: str

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` at once (all or nothing). Raises
        ``MediaStorageUnavailable``."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``; ``None`` when there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens when it is not there."""
        ...

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """A time-limited URL a client may fetch ``key`` from directly, or ``None`` when this
        storage has none (the API then serves the bytes itself)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` when it is on this machine's disk, else ``None``."""
        ...

    def close(self) -> None: ...


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX: the directory entry is the directory's)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskStorage:
    """Files under ``root``: ``root/<key>``; partial writes under ``root/.tmp/``, fsynced and
    renamed into place (``os.replace`` is atomic within one file system), the rename made
    durable by an fsync of the directory."""

    kind = "disk"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        target = self.path(key)
        temp = self.tmp / f"{target.name}.{secrets.token_hex(6)}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
            _fsync_directory(target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise MediaStorageUnavailable(f"could not write {key}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MediaStorageUnavailable(f"could not read {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise MediaStorageUnavailable(f"could not delete {key}: {exc}") from exc

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        path = self.path(key)
        return path if path.is_file() else None

    def remove_stale_temp_files(self, older_than: float = 3600.0) -> int:
        """Delete files left in ``.tmp/`` by a process that died while writing, older than
        ``older_than`` seconds. Returns how many were removed."""
        removed = 0
        cutoff = time.time() - older_than
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def close(self) -> None:
        pass
