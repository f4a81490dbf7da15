"""``/v1/media``: upload a picture, fetch it and its thumbnail (docs/MEDIA.md).

``POST /v1/media`` (bearer token): the body is read by ``api.http.uploads`` (multipart as
``wx.uploadFile`` sends it, or a raw ``image/*`` body), cleaned and stored by
``MediaStore.upload`` in a worker thread. Answers 201 with the picture when this upload
stored it, 200 with the same body when the same picture was stored already (by anyone:
ids are content hashes).

``GET /v1/media/{id}`` and ``GET /v1/media/{id}/thumb`` need no token: an id is the SHA-256
of the picture's bytes, which nobody can guess without having the picture. They answer the
bytes (disk storage) or a 302 to a presigned URL (S3), with an immutable ``Cache-Control``
and an ``ETag``; ``If-None-Match`` with that ETag answers 304.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import ETag
from litestar.params import PathParameter, QueryParameter
from litestar.response import File, Redirect

from api.adapters.media import (
    MEDIA_PATH,
    PURPOSES,
    ImageTooLarge,
    InvalidImage,
    MediaError,
    MediaInfo,
    MediaNotFound,
    MediaNotOwned,
    MediaRemoved,
    MediaStorageUnavailable,
    MediaStore,
    MediaTooLarge,
    UnsupportedMediaType,
)
from api.adapters.media.images import THUMB_CONTENT_TYPE
from api.adapters.media.s3 import IMMUTABLE
from api.bootstrap.media import check_upload
from api.bootstrap.settings import Settings
from api.http.controllers.common import container_of
from api.http.errors import ApiError
from api.http.openapi import REF, Code, contract
from api.http.params import ReaderId
from api.http.uploads import MULTIPART_OVERHEAD, read_upload

__all__ = [
    "ATTACH_PROBLEMS",
    "MEDIA_STATUS",
    "MediaController",
    "MediaOut",
    "attach_media",
    "media_api_error",
    "media_router",
]

MEDIA_STATUS: dict[type[MediaError], int] = {
    UnsupportedMediaType: 415,
    MediaTooLarge: 413,
    ImageTooLarge: 422,
    InvalidImage: 422,
    MediaNotFound: 404,
    MediaNotOwned: 403,
    MediaRemoved: 410,
    MediaStorageUnavailable: 503,
}


def media_api_error(exc: MediaError) -> ApiError:
    """The problem+json error of a media error (``raise media_api_error(exc) from exc``)."""
    for kind, status in MEDIA_STATUS.items():
        if isinstance(exc, kind):
            return ApiError(status, exc.code, exc.message)
    return ApiError(400, exc.code, exc.message)


ATTACH_PROBLEMS = (
    Code(404, "media_not_found"),
    Code(403, "media_not_owned"),
    Code(503, "media_storage_unavailable"),
)
"""What attaching a picture to something (``attach_media``) may answer."""


def attach_media(container: Any, media_id: str, reader_id: UUID) -> MediaInfo:
    """Attach the picture ``media_id`` that ``reader_id`` uploaded, before the command that
    refers to it is recorded (``MediaStore.mark_attached``: only the same reader's uploads;
    never swept from then on). Returns the picture. Problem+json: 404 ``media_not_found``
    (unknown, swept, taken down, or pictures not configured), 403 ``media_not_owned``, 503
    ``media_storage_unavailable``. Blocking: call it from a worker thread."""
    store: MediaStore | None = container.media
    if store is None:
        raise ApiError(404, "media_not_found", "Pictures are not configured on this server.")
    try:
        return store.mark_attached(media_id, reader_id)
    except MediaRemoved as exc:
        raise ApiError(404, "media_not_found", exc.message) from exc
    except MediaError as exc:
        raise media_api_error(exc) from exc


MediaId = Annotated[
    str,
    PathParameter(
        pattern="^[0-9a-f]{64}$", description="The picture's id: SHA-256 (hex) of its bytes."
    ),
]
Purpose = Annotated[
    str | None,
    QueryParameter(
        description="What the picture is for (raw bodies; multipart sends the field).",
        pattern="^(cover|avatar|chat|room)$",
    ),
]
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "description": "The picture: a `multipart/form-data` part `file` (as `wx.uploadFile` sends "
    "it) with an optional field `purpose`, or the raw bytes with an `image/*` content type. "
    "The type is sniffed from the bytes.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "purpose": {"type": "string", "enum": sorted(PURPOSES)},
                },
            }
        },
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
    },
}
_MEDIA_OUT = {"application/json": {"schema": {"$ref": REF.format(name="MediaOut")}}}
UPLOAD_RESPONSES: dict[int, dict[str, Any]] = {
    201: {
        "description": "Stored by this upload.",
        "headers": {
            "Location": {"description": "The picture's URL.", "schema": {"type": "string"}}
        },
        "content": _MEDIA_OUT,
    },
    200: {
        "description": "The same picture was stored already (ids are content hashes).",
        "content": _MEDIA_OUT,
    },
}
_CACHE = {"Cache-Control": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}
SERVE_RESPONSES: dict[int, dict[str, Any]] = {
    200: {
        "description": "The picture's bytes (disk storage).",
        "headers": _CACHE,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
    },
    302: {
        "description": "Object storage: a time-limited presigned URL of the bytes.",
        "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
    },
    304: {"description": "Not modified (`If-None-Match` named this ETag).", "headers": _CACHE},
}
UPLOAD_PROBLEMS = (
    Code(400, "malformed_multipart"),
    Code(413, "media_too_large"),
    Code(415, "unsupported_media_type"),
    Code(422, "image_too_large"),
    Code(422, "invalid_image"),
    Code(410, "media_removed"),
    Code(503, "unavailable"),
    Code(503, "media_storage_unavailable"),
)
SERVE_PROBLEMS = (
    Code(404, "media_not_found"),
    Code(410, "media_removed"),
    Code(503, "unavailable"),
    Code(503, "media_storage_unavailable"),
)


class MediaOut(msgspec.Struct, kw_only=True):
    id: str
    url: str
    thumb_url: str
    width: int
    height: int
    bytes: int
    content_type: str


def _absolute(request: Request[Any, Any, Any], url: str) -> str:
    if url.startswith("/"):
        return str(request.base_url).rstrip("/") + url
    return url


def media_out(request: Request[Any, Any, Any], info: MediaInfo) -> MediaOut:
    return MediaOut(
        id=info.id,
        url=_absolute(request, info.url),
        thumb_url=_absolute(request, info.thumb_url),
        width=info.width,
        height=info.height,
        bytes=info.bytes,
        content_type=info.content_type,
    )


def _store(request: Request[Any, Any, Any]) -> MediaStore:
    store = container_of(request).media
    if store is None:
        raise ApiError(503, "unavailable", "Pictures are not configured on this server.")
    return store


def _etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` (weak comparison, RFC 9110 §13.1.2) against our strong ``etag``."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class MediaController(Controller):
    path = MEDIA_PATH
    tags = ["media"]

    @post(
        "/",
        operation_id="uploadMedia",
        status_code=201,
        opt=contract(*UPLOAD_PROBLEMS, request_body=UPLOAD_BODY, responses=UPLOAD_RESPONSES),
    )
    async def upload(
        self, request: Request[Any, Any, Any], reader_id: ReaderId, purpose: Purpose = None
    ) -> Response[MediaOut]:
        """Upload a picture: ``multipart/form-data`` with the file in part ``file`` (and an
        optional field ``purpose``: cover, avatar, chat or room), or a raw ``image/*`` body
        with ``?purpose=``. JPEG, PNG, WebP or GIF; EXIF and other metadata removed,
        orientation applied. 201 when stored by this upload, 200 when already stored."""
        store = _store(request)
        try:
            received = await read_upload(request, store.config.max_bytes)
        except MediaError as exc:
            raise media_api_error(exc) from exc
        chosen = received.purpose or purpose
        if chosen is not None and chosen not in PURPOSES:
            raise ApiError(
                422,
                "validation_failed",
                f"purpose must be one of {', '.join(sorted(PURPOSES))}.",
                errors=[{"key": "purpose", "message": f"unknown purpose {chosen!r}"}],
            )
        loop = asyncio.get_running_loop()
        try:
            uploaded = await loop.run_in_executor(
                None, functools.partial(store.upload, reader_id, received.data, chosen)
            )
        except MediaError as exc:
            raise media_api_error(exc) from exc
        # WeChat's image check (when on): submitted now, its verdict pushed later
        await loop.run_in_executor(
            None,
            functools.partial(check_upload, container_of(request), uploaded, reader_id, chosen),
        )
        out = media_out(request, uploaded.media)
        if uploaded.created:
            return Response(out, status_code=201, headers={"Location": out.url})
        return Response(out, status_code=200)

    @get(
        "/{media_id:str}",
        operation_id="getMedia",
        sync_to_thread=True,
        opt=contract(*SERVE_PROBLEMS, responses=SERVE_RESPONSES),
    )
    def picture(self, request: Request[Any, Any, Any], media_id: MediaId) -> Response[Any]:
        """The picture's bytes (or a 302 to a presigned URL when stored in S3). Public."""
        return _serve(request, media_id, thumb=False)

    @get(
        "/{media_id:str}/thumb",
        operation_id="getMediaThumb",
        sync_to_thread=True,
        opt=contract(*SERVE_PROBLEMS, responses=SERVE_RESPONSES),
    )
    def thumb(self, request: Request[Any, Any, Any], media_id: MediaId) -> Response[Any]:
        """The picture's JPEG thumbnail (at most 320 px on its longer side by default)."""
        return _serve(request, media_id, thumb=True)


def _serve(request: Request[Any, Any, Any], media_id: str, *, thumb: bool) -> Response[Any]:
    store = _store(request)
    try:
        info = store.get(media_id)
        if info is None:
            if store.is_removed(media_id):
                raise MediaRemoved(f"media {media_id} was taken down")
            raise MediaNotFound(f"no media {media_id!r}")
        etag_value = f"{info.id}.thumb" if thumb else info.id
        etag = f'"{etag_value}"'
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(b"", status_code=304, headers={**headers, "ETag": etag})
        key = info.thumb_key if thumb else info.key
        content_type = THUMB_CONTENT_TYPE if thumb else info.content_type
        expiry = store.config.presign_expiry
        url = store.storage.presigned_url(key, expiry)
        if url is not None:
            return Redirect(
                url,
                status_code=302,
                headers={"Cache-Control": f"private, max-age={expiry // 2}", "ETag": etag},
            )
        path = store.storage.local_path(key)
        if path is not None:
            return File(
                path,
                media_type=content_type,
                content_disposition_type="inline",
                filename=key.rsplit("/", 1)[-1],
                etag=ETag(value=etag_value),
                headers=headers,
            )
        data = store.storage.get(key)
        if data is None:
            raise MediaNotFound(f"the file of media {media_id!r} is missing")
        return Response(data, media_type=content_type, headers={**headers, "ETag": etag})
    except MediaError as exc:
        raise media_api_error(exc) from exc


def media_router(settings: Settings) -> Router:
    """The media routes with their own body limit (the app's is 64 KiB)."""
    return Router(
        path="/",
        route_handlers=[MediaController],
        request_max_body_size=settings.media_max_bytes + MULTIPART_OVERHEAD,
    )
