"""E2E over real HTTP: ``POST /v1/media`` (as ``wx.uploadFile`` sends it, and raw), the
served picture and thumbnail, and every refusal (docs/MEDIA.md)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import Actor, assert_problem
from tests.media_helpers import (
    BLUE,
    RED,
    bomb_png,
    fake_pdf,
    image_bytes,
    phone_jpeg,
    png,
    wx_multipart,
)

IMMUTABLE = "public, max-age=31536000, immutable"


def wx_upload(actor: Actor, data: bytes, **kwargs: Any) -> httpx.Response:
    body, content_type = wx_multipart(data, **kwargs)
    return actor.http.post("/v1/media", content=body, headers={"Content-Type": content_type})


def raw_upload(
    http: httpx.Client, data: bytes, content_type: str = "image/jpeg", **params: str
) -> httpx.Response:
    return http.post(
        "/v1/media", content=data, headers={"Content-Type": content_type}, params=params
    )


def close_to(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def test_a_phone_photo_uploaded_like_wx_upload_file_loses_its_exif_and_stands_upright(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    reader = actors()
    original = phone_jpeg(640, 480, orientation=6, trailing=b"\x00TRAILER-BYTES")
    with Image.open(io.BytesIO(original)) as im:  # the test picture is what it claims
        assert im.getexif().get_ifd(0x8825)[2] == (39.0, 54.0, 15.0)
        assert im.getexif()[0x0112] == 6
    response = wx_upload(reader, original, filename="tmp_wx_0001.jpg", purpose="cover")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "url", "thumb_url", "width", "height", "bytes", "content_type"}
    assert body["content_type"] == "image/jpeg"
    # orientation 6: the stored 640×480 is shown turned a quarter clockwise
    assert (body["width"], body["height"]) == (480, 640)
    assert body["url"] == f"{live_server.url}/v1/media/{body['id']}"
    assert body["thumb_url"] == body["url"] + "/thumb"
    assert response.headers["location"] == body["url"]

    served = httpx.get(body["url"])
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["cache-control"] == IMMUTABLE
    assert served.headers["x-content-type-options"] == "nosniff"
    assert len(served.content) == body["bytes"]
    assert hashlib.sha256(served.content).hexdigest() == body["id"]
    assert b"TRAILER-BYTES" not in served.content
    assert b"Liudong Phone" not in served.content and b"shot at home" not in served.content
    with Image.open(io.BytesIO(served.content)) as im:
        assert im.format == "JPEG"
        assert im.size == (480, 640)
        assert not im.getexif(), dict(im.getexif())
        assert not im.getexif().get_ifd(0x8825)
        assert "exif" not in im.info and "icc_profile" not in im.info
        assert "comment" not in im.info
        rgb = im.convert("RGB")
        # the red square was top-left as stored; upright it is top-right
        assert close_to(rgb.getpixel((480 - 20, 20)), RED)
        assert close_to(rgb.getpixel((20, 20)), BLUE)
        assert close_to(rgb.getpixel((20, 640 - 20)), BLUE)


def test_a_raw_image_body_with_the_purpose_in_the_query(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    reader = actors()
    response = raw_upload(reader.http, png(64, 48), "image/png", purpose="avatar")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["content_type"], body["width"], body["height"]) == ("image/png", 64, 48)
    row = _upload_row(live_server, body["id"], reader.id)
    assert row["purpose"] == "avatar"
    # the type in the header does not matter, only the bytes do
    webp = image_bytes("WEBP", 30, 20)
    assert raw_upload(reader.http, webp, "image/png").json()["content_type"] == "image/webp"
    gif = image_bytes("GIF", 30, 20)
    assert raw_upload(reader.http, gif, "image/x-anything").json()["content_type"] == "image/gif"


def test_the_same_picture_is_one_id_and_each_uploader_owns_it(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    alice, bob, carol = actors(), actors(), actors()
    picture = phone_jpeg(320, 240, orientation=1)
    first = wx_upload(alice, picture)
    assert first.status_code == 201, first.text
    again = wx_upload(alice, picture, filename="other-name.jpg", purpose="chat")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    by_bob = raw_upload(bob.http, picture)
    assert by_bob.status_code == 200
    assert by_bob.json()["id"] == first.json()["id"]
    media = live_server.container.media
    media_id = first.json()["id"]
    assert media.owns(media_id, _uuid(alice.id)) and media.owns(media_id, _uuid(bob.id))
    assert not media.owns(media_id, _uuid(carol.id))
    assert set(media.owners(media_id)) == {_uuid(alice.id), _uuid(bob.id)}
    # a re-upload updates the purpose of that reader's upload
    assert _upload_row(live_server, media_id, alice.id)["purpose"] == "chat"


def test_a_pdf_named_jpg_is_415(actors: Callable[..., Actor]) -> None:
    reader = actors()
    response = wx_upload(reader, fake_pdf(), filename="scan.jpg", part_type="image/jpeg")
    body = assert_problem(response, 415, "unsupported_media_type")
    assert "PDF" in body["detail"]
    assert_problem(raw_upload(reader.http, fake_pdf(), "image/jpeg"), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["application/pdf", "text/plain", "application/octet-stream", "application/json"],
)
def test_a_body_that_is_neither_multipart_nor_image_is_415(
    actors: Callable[..., Actor], content_type: str
) -> None:
    reader = actors()
    response = raw_upload(reader.http, phone_jpeg(64, 48), content_type)
    assert_problem(response, 415, "unsupported_media_type")


def test_more_bytes_than_the_limit_is_413(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    reader = actors()
    limit = live_server.container.settings.media_max_bytes
    too_big = phone_jpeg(64, 48) + b"\x00" * (limit + 1)
    assert_problem(raw_upload(reader.http, too_big), 413, "media_too_large")
    assert_problem(wx_upload(reader, too_big), 413, "media_too_large")

    def chunked() -> Any:  # no Content-Length: counted as it arrives
        yield too_big[: 1 << 20]
        for start in range(1 << 20, len(too_big), 1 << 20):
            yield too_big[start : start + (1 << 20)]

    response = reader.http.post(
        "/v1/media", content=chunked(), headers={"Content-Type": "image/jpeg"}
    )
    assert_problem(response, 413, "media_too_large")


def test_a_decompression_bomb_is_422(actors: Callable[..., Actor]) -> None:
    reader = actors()
    bomb = bomb_png(20_000)  # 400 megapixels in ~50 KB
    assert len(bomb) < 200_000
    body = assert_problem(wx_upload(reader, bomb, filename="b.png"), 422, "image_too_large")
    assert "pixels" in body["detail"]


def test_more_pixels_than_the_limit_is_422(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    reader = actors()
    limit = live_server.container.settings.media_max_pixels
    side = int(limit**0.5) + 10  # just over, under Pillow's own bomb threshold
    assert_problem(raw_upload(reader.http, bomb_png(side), "image/png"), 422, "image_too_large")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(phone_jpeg(200, 150)[:600], id="truncated-jpeg"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, id="png-magic-only"),
        pytest.param(b"", id="empty"),
    ],
)
def test_an_undecodable_picture_is_422(actors: Callable[..., Actor], data: bytes) -> None:
    reader = actors()
    assert_problem(wx_upload(reader, data), 422, "invalid_image")


def test_upload_refusals_of_the_form(actors: Callable[..., Actor]) -> None:
    reader = actors()
    picture = phone_jpeg(64, 48)
    response = wx_upload(reader, picture, purpose="poster")
    assert_problem(response, 422, "validation_failed")
    response = raw_upload(reader.http, picture, purpose="poster")
    assert_problem(response, 422, "validation_failed")
    body, content_type = wx_multipart(picture)
    misnamed = body.replace(b'name="file"', b'name="photo"')
    response = reader.http.post(
        "/v1/media", content=misnamed, headers={"Content-Type": content_type}
    )
    assert_problem(response, 422, "validation_failed")
    response = reader.http.post(
        "/v1/media", content=body[:-40], headers={"Content-Type": content_type}
    )
    assert_problem(response, 400, "malformed_multipart")


def test_upload_needs_a_token(anon: httpx.Client) -> None:
    body, content_type = wx_multipart(phone_jpeg(64, 48))
    response = anon.post("/v1/media", content=body, headers={"Content-Type": content_type})
    assert_problem(response, 401, "missing_token")
    response = anon.post(
        "/v1/media",
        content=body,
        headers={"Content-Type": content_type, "Authorization": "Bearer ld_nope"},
    )
    assert response.status_code == 401


def test_etag_and_304(actors: Callable[..., Actor], anon: httpx.Client) -> None:
    reader = actors()
    body = raw_upload(reader.http, phone_jpeg(120, 90, orientation=1)).json()
    path = f"/v1/media/{body['id']}"
    first = anon.get(path)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag == f'"{body["id"]}"'
    again = anon.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == IMMUTABLE
    assert anon.get(path, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert anon.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200
    thumb = anon.get(path + "/thumb")
    assert thumb.headers["etag"] == f'"{body["id"]}.thumb"' != etag
    assert anon.get(path + "/thumb", headers={"If-None-Match": etag}).status_code == 200
    thumb_etag = thumb.headers["etag"]
    assert anon.get(path + "/thumb", headers={"If-None-Match": thumb_etag}).status_code == 304


@pytest.mark.parametrize(
    ("size", "thumb"),
    [((1000, 500), (320, 160)), ((300, 900), (107, 320)), ((200, 100), (200, 100))],
)
def test_thumbnail_dimensions(
    actors: Callable[..., Actor],
    anon: httpx.Client,
    size: tuple[int, int],
    thumb: tuple[int, int],
) -> None:
    reader = actors()
    body = raw_upload(reader.http, png(*size), "image/png").json()
    response = anon.get(f"/v1/media/{body['id']}/thumb")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == IMMUTABLE
    with Image.open(io.BytesIO(response.content)) as im:
        assert im.format == "JPEG"
        assert im.size == thumb
        # the half-transparent green was flattened onto white
        assert close_to(
            im.convert("RGB").getpixel((im.width // 2, im.height // 2)), (127, 227, 127)
        )


@pytest.mark.parametrize("suffix", ["", "/thumb"])
def test_unknown_media_is_404(anon: httpx.Client, suffix: str) -> None:
    assert_problem(anon.get(f"/v1/media/{'0' * 64}{suffix}"), 404, "media_not_found")
    # not the shape of an id (64 lowercase hex digits, as the OpenAPI document says): a 422
    assert_problem(anon.get(f"/v1/media/not-a-hash{suffix}"), 422, "validation_failed")
    assert_problem(anon.get(f"/v1/media/{'A' * 64}{suffix}"), 422, "validation_failed")


# -- helpers --------------------------------------------------------------------------------


def _uuid(value: str) -> Any:
    from uuid import UUID

    return UUID(value)


def _upload_row(live_server: LiveServer, media_id: str, reader_id: str) -> dict[str, Any]:
    with live_server.container.pool.connection() as conn:
        row = conn.execute(
            "SELECT * FROM media_uploads WHERE media_id = %s AND reader_id = %s",
            (media_id, reader_id),
        ).fetchone()
    assert row is not None
    return dict(row)
