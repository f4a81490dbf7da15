"""Pictures: checked and cleaned with Pillow (``images``), stored on disk or S3
(``storage``, ``s3``), recorded, owned, attached and swept (``store``). See docs/MEDIA.md.

The service the rest of the app calls is ``MediaStore`` (``container.media``)::

    info = store.get(media_id)                      # MediaInfo | None
    info = store.check_attachable(media_id, reader) # MediaNotFound / MediaNotOwned
    info = store.mark_attached(media_id, reader)    # never swept from then on
    store.submitted(media_id, trace_id) / store.checked(trace_id, status)  # WeChat's check
    info = store.remove(media_id, reason)           # taken down: files gone, id answers 410
    n = store.forget_owner(reader)                  # a forgotten reader's uploads, all gone
"""

from api.adapters.media.errors import (
    ImageTooLarge,
    InvalidImage,
    MediaError,
    MediaNotFound,
    MediaNotOwned,
    MediaRemoved,
    MediaStorageUnavailable,
    MediaTooLarge,
    UnsupportedMediaType,
)
from api.adapters.media.images import CleanedImage, ImageLimits, clean, sniff
from api.adapters.media.storage import BlobStorage, DiskStorage
from api.adapters.media.store import (
    MEDIA_PATH,
    PURPOSES,
    MediaConfig,
    MediaInfo,
    MediaStore,
    Purpose,
    SweepResult,
    Uploaded,
    is_media_id,
)

__all__ = [
    "MEDIA_PATH",
    "PURPOSES",
    "BlobStorage",
    "CleanedImage",
    "DiskStorage",
    "ImageLimits",
    "ImageTooLarge",
    "InvalidImage",
    "MediaConfig",
    "MediaError",
    "MediaInfo",
    "MediaNotFound",
    "MediaNotOwned",
    "MediaRemoved",
    "MediaStorageUnavailable",
    "MediaStore",
    "MediaTooLarge",
    "Purpose",
    "SweepResult",
    "UnsupportedMediaType",
    "Uploaded",
    "clean",
    "is_media_id",
    "sniff",
]
