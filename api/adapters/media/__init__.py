"""Pictures: checked and cleaned with Pillow (``images``), stored on disk or S3
(``storage``, ``s3``), recorded, owned, attached and swept (``store``). See docs/MEDIA.md.

The service the rest of the app calls is ``MediaStore`` (``container.media``)::

    info = store.get(media_id)                      # MediaInfo | None
    info = store.check_attachable(media_id, reader) # MediaNotFound / MediaNotOwned
    info = store.mark_attached(media_id, reader)    # never swept from then on
"""

from api.adapters.media.errors import (
    ImageTooLarge,
    InvalidImage,
    MediaError,
    MediaNotFound,
    MediaNotOwned,
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
