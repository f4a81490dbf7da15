"""Reading a picture upload's body, streamed, within the media size limit.

Two shapes are accepted (``POST /v1/media``):

* ``multipart/form-data`` exactly as the mini-program's ``wx.uploadFile`` sends it: one
  file part named ``file`` (its filename and part ``Content-Type`` are ignored: the bytes
  are sniffed), and an optional field ``purpose``; other fields (``formData``) are ignored.
* a raw body with ``Content-Type: image/*`` (any image type: the bytes are sniffed), the
  purpose then in the query (``?purpose=``).

Any other body type answers 415 ``unsupported_media_type``. A picture larger than
``max_bytes`` answers 413 ``media_too_large`` — from the ``Content-Length`` before anything
is read when the client sends one, else as soon as the count passes the limit. The route's
own ``request_max_body_size`` (``max_bytes`` + ``MULTIPART_OVERHEAD``) backs this up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from litestar import Request
from litestar.exceptions import HTTPException
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from api.adapters.media import MediaTooLarge, UnsupportedMediaType
from api.http.errors import ApiError

__all__ = ["MULTIPART_OVERHEAD", "ReceivedUpload", "read_upload"]

#: room for the multipart boundaries, part headers and small form fields
MULTIPART_OVERHEAD = 64 * 1024
FILE_FIELD = "file"
PURPOSE_FIELD = "purpose"
_MAX_FIELD = 256


class ReceivedUpload(NamedTuple):
    data: bytes
    purpose: str | None  # from the form field (multipart); None when absent
    filename: str | None


def _too_large(max_bytes: int) -> MediaTooLarge:
    return MediaTooLarge(f"a picture may have at most {max_bytes:,} bytes")


async def _chunks(request: Request[Any, Any, Any], max_bytes: int) -> Any:
    try:
        async for chunk in request.stream():
            yield chunk
    except HTTPException as exc:
        if exc.status_code == 413:  # the route's request_max_body_size
            raise _too_large(max_bytes) from exc
        raise


async def read_upload(request: Request[Any, Any, Any], max_bytes: int) -> ReceivedUpload:
    """The picture's bytes (and form ``purpose``) of an upload request. Raises
    ``MediaTooLarge``, ``UnsupportedMediaType`` or ``ApiError`` (400 ``malformed_multipart``,
    422 ``validation_failed``)."""
    content_type, options = request.content_type
    announced = request.headers.get("content-length")
    length = int(announced) if announced and announced.isdigit() else None
    if content_type == "multipart/form-data":
        if length is not None and length > max_bytes + MULTIPART_OVERHEAD:
            raise _too_large(max_bytes)
        boundary = options.get("boundary")
        if not boundary:
            raise ApiError(400, "malformed_multipart", "The multipart boundary is missing.")
        return await _read_multipart(request, boundary, max_bytes)
    if content_type.startswith("image/"):
        if length is not None and length > max_bytes:
            raise _too_large(max_bytes)
        body = bytearray()
        async for chunk in _chunks(request, max_bytes):
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
        return ReceivedUpload(bytes(body), None, None)
    raise UnsupportedMediaType(
        "send the picture as multipart/form-data (part 'file') or as a raw image/* body"
    )


async def _read_multipart(
    request: Request[Any, Any, Any], boundary: str, max_bytes: int
) -> ReceivedUpload:
    file: bytearray | None = None
    filename: str | None = None
    purpose: bytearray | None = None
    current: bytearray | None = None
    files = 0
    try:
        with PushMultipartParser(
            boundary, max_header_size=4096, max_header_count=8, max_segment_count=32
        ) as parser:
            async for chunk in _chunks(request, max_bytes):
                if parser.closed:
                    break  # the epilogue after the closing boundary is ignored
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        current = None
                        if event.name == FILE_FIELD:
                            files += 1
                            if files > 1:
                                raise ApiError(
                                    422, "validation_failed", "Send one picture per upload."
                                )
                            file = current = bytearray()
                            filename = event.filename
                        elif event.name == PURPOSE_FIELD:
                            purpose = current = bytearray()
                    elif event is None:
                        current = None
                    elif current is not None:
                        current += event
                        if current is file and len(file) > max_bytes:
                            raise _too_large(max_bytes)
                        if current is purpose and len(purpose) > _MAX_FIELD:
                            raise ApiError(422, "validation_failed", "purpose is too long.")
    except ParserLimitReached as exc:
        raise ApiError(400, "malformed_multipart", f"multipart/form-data: {exc}") from exc
    except ParserError as exc:
        raise ApiError(400, "malformed_multipart", f"Invalid multipart/form-data: {exc}") from exc
    if file is None:
        raise ApiError(
            422,
            "validation_failed",
            f"Send the picture as the multipart part named {FILE_FIELD!r}.",
            errors=[{"key": FILE_FIELD, "message": "missing"}],
        )
    text = purpose.decode("utf-8", "replace").strip() if purpose is not None else None
    return ReceivedUpload(bytes(file), text or None, filename)
