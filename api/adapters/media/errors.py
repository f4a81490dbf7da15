"""The media adapter's errors. Each class has a stable ``code`` (the API contract); the HTTP
layer maps them to statuses (``api.http.controllers.media.MEDIA_STATUS``)::

    MediaError
    ├── UnsupportedMediaType   "unsupported_media_type"     (415) not JPEG, PNG, WebP or GIF
    ├── MediaTooLarge          "media_too_large"            (413) more bytes than allowed
    ├── ImageTooLarge          "image_too_large"            (422) more pixels than allowed,
    │                                                             decompression bomb
    ├── InvalidImage           "invalid_image"              (422) says it is an image, is not
    ├── MediaNotFound          "media_not_found"            (404) no such media (or swept)
    ├── MediaNotOwned          "media_not_owned"            (403) the reader never uploaded it
    ├── MediaRemoved           "media_removed"              (410) taken down (WeChat's image
    │                                                             check: risky), for good
    └── MediaStorageUnavailable "media_storage_unavailable" (503) disk or S3 failed
"""

from __future__ import annotations

from typing import ClassVar


class MediaError(Exception):
    code: ClassVar[str] = "media_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedMediaType(MediaError):
    code = "unsupported_media_type"


class MediaTooLarge(MediaError):
    code = "media_too_large"


class ImageTooLarge(MediaError):
    code = "image_too_large"


class InvalidImage(MediaError):
    code = "invalid_image"


class MediaNotFound(MediaError):
    code = "media_not_found"


class MediaNotOwned(MediaError):
    code = "media_not_owned"


class MediaRemoved(MediaError):
    code = "media_removed"


class MediaStorageUnavailable(MediaError):
    code = "media_storage_unavailable"


__all__ = [
    "ImageTooLarge",
    "InvalidImage",
    "MediaError",
    "MediaNotFound",
    "MediaNotOwned",
    "MediaRemoved",
    "MediaStorageUnavailable",
    "MediaTooLarge",
    "UnsupportedMediaType",
]
