"""The S3 storage adapter against an S3-compatible server on loopback (moto's, started as
a separate process by this module), and the app configured with S3 over real HTTP: uploads
land in the bucket, ``GET /v1/media/{id}`` redirects to a presigned URL, the sweep deletes
the objects."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn

from api.adapters.media import MediaStorageUnavailable
from api.adapters.media.s3 import IMMUTABLE, S3Storage
from api.bootstrap.settings import Settings
from api.http.app import create_app
from tests.media_helpers import S3Server, moto_s3_server, phone_jpeg, unique_png


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3_server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket; boto3's standard credential variables point at the test server."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    name = f"liudong-media-{uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=name)
    return name


def test_put_get_presign_delete(s3: S3Server, bucket: str) -> None:
    storage = S3Storage(bucket, endpoint_url=s3.endpoint_url, region=s3.region)
    key = "ab/abcdef.jpg"
    data = phone_jpeg(64, 48)
    assert storage.kind == "s3"
    assert storage.get(key) is None and not storage.exists(key)
    storage.put(key, data, "image/jpeg")
    assert storage.exists(key)
    assert storage.get(key) == data
    head = s3.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == IMMUTABLE
    assert storage.local_path(key) is None

    url = storage.presigned_url(key, 600)
    assert url is not None and url.startswith(f"{s3.endpoint_url}/{bucket}/{key}?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/jpeg"

    storage.delete(key)
    assert not storage.exists(key) and storage.get(key) is None
    storage.delete(key)  # deleting what is not there is fine
    assert httpx.get(url).status_code == 404
    storage.close()


def test_an_unreachable_store_is_unavailable(bucket: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    storage = S3Storage(bucket, endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1")
    with pytest.raises(MediaStorageUnavailable):
        storage.put("ab/x.jpg", b"x", "image/jpeg")
    with pytest.raises(MediaStorageUnavailable):
        storage.get("ab/x.jpg")
    storage.close()


@contextmanager
def live_app(settings: Settings) -> Iterator[tuple[str, Any]]:
    app = create_app(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_app_on_s3_stores_in_the_bucket_and_redirects_to_presigned_urls(
    s3: S3Server, bucket: str, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        env="test",
        database_url=database_url,
        nats_url=nats_url,
        data_dir=tmp_path,
        run_projections=False,
        db_pool_size=2,  # the shared PostgreSQL's connections are precious
        s3_bucket=bucket,
        s3_endpoint_url=s3.endpoint_url,
        s3_region=s3.region,
        s3_presign_expiry=900,
        media_sweep_interval=0,
    )
    with live_app(settings) as (url, app):
        container = app.state.container
        token = container.sessions.issue(uuid4(), 600).token
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        response = http.post(
            "/v1/media", content=unique_png(), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        media_id = body["id"]
        keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
        assert keys == {f"{media_id[:2]}/{media_id}.png", f"{media_id[:2]}/{media_id}.thumb.jpg"}
        assert not (tmp_path / "media").exists() or not any((tmp_path / "media").rglob("*.png"))

        for path, content_type in (
            (f"/v1/media/{media_id}", "image/png"),
            (f"/v1/media/{media_id}/thumb", "image/jpeg"),
        ):
            redirect = httpx.get(url + path)
            assert redirect.status_code == 302, redirect.text
            location = redirect.headers["location"]
            assert location.startswith(f"{s3.endpoint_url}/{bucket}/{media_id[:2]}/{media_id}")
            assert "X-Amz-Expires=900" in location
            assert redirect.headers["cache-control"] == "private, max-age=450"
            fetched = httpx.get(url + path, follow_redirects=True)
            assert fetched.status_code == 200
            assert fetched.headers["content-type"] == content_type
            if content_type == "image/png":
                assert hashlib.sha256(fetched.content).hexdigest() == media_id
                assert len(fetched.content) == body["bytes"]
            etag = redirect.headers["etag"]
            assert httpx.get(url + path, headers={"If-None-Match": etag}).status_code == 304

        # the sweep deletes the objects; the id then answers 404
        with container.pool.connection() as conn:
            conn.execute(
                "UPDATE media SET last_uploaded_at = now() - interval '2 hours' WHERE id = %s",
                (media_id,),
            )
        assert media_id in container.media.sweep(grace_seconds=3600).ids
        assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0
        gone = httpx.get(f"{url}/v1/media/{media_id}")
        assert gone.status_code == 404
        assert gone.json()["code"] == "media_not_found"
        http.close()


def test_forget_owner_deletes_the_readers_objects(
    s3: S3Server, bucket: str, database_url: str
) -> None:
    from api.adapters.media import MediaConfig, MediaStore
    from api.bootstrap.db import make_pool

    pool = make_pool(database_url, size=1, name="test-media-s3-forget")
    store = MediaStore(
        pool, S3Storage(bucket, endpoint_url=s3.endpoint_url, region=s3.region), MediaConfig()
    )
    try:
        alice, bob = uuid4(), uuid4()
        hers = store.upload(alice, unique_png(), "avatar").media
        store.mark_attached(hers.id, alice)
        his = store.upload(bob, unique_png(), "chat").media

        def keys() -> set[str]:
            listed = s3.client().list_objects_v2(Bucket=bucket)
            return {o["Key"] for o in listed.get("Contents", [])}

        assert {hers.key, hers.thumb_key, his.key, his.thumb_key} == keys()
        assert store.forget_owner(alice) == 1
        assert keys() == {his.key, his.thumb_key}
        assert store.get(hers.id) is None and store.get(his.id) is not None
    finally:
        store.close()
        pool.close()
