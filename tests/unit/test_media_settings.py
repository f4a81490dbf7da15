"""The media settings (``LIUDONG_MEDIA_*``, ``LIUDONG_S3_*``), the storage they choose, the
upload route's own body limit and ``If-None-Match`` matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.adapters.media import DiskStorage
from api.adapters.media.s3 import S3Storage
from api.bootstrap.media import media_config, media_storage_for
from api.bootstrap.settings import Settings, SettingsError
from api.http.controllers.media import _etag_matches, media_router
from api.http.uploads import MULTIPART_OVERHEAD


def test_defaults() -> None:
    settings = Settings()
    assert settings.media_max_bytes == 10 * 1024 * 1024
    assert settings.media_max_pixels == 40_000_000
    assert settings.media_grace == 24 * 3600
    assert settings.s3_bucket == ""
    config = media_config(settings)
    assert (config.quality, config.thumb_size, config.presign_expiry) == (85, 320, 3600)


def test_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "LIUDONG_MEDIA_MAX_BYTES": "2048",
            "LIUDONG_MEDIA_MAX_PIXELS": "1000000",
            "LIUDONG_MEDIA_QUALITY": "70",
            "LIUDONG_MEDIA_THUMB_SIZE": "200",
            "LIUDONG_MEDIA_WORKERS": "3",
            "LIUDONG_MEDIA_GRACE": "60",
            "LIUDONG_MEDIA_SWEEP_INTERVAL": "0",
            "LIUDONG_MEDIA_BASE_URL": "https://img.example.com",
            "LIUDONG_S3_BUCKET": "pictures",
            "LIUDONG_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "LIUDONG_S3_REGION": "cn-north-1",
            "LIUDONG_S3_PRESIGN_EXPIRY": "120",
        }
    )
    config = media_config(settings)
    assert config.max_bytes == 2048 and config.max_pixels == 1_000_000
    assert (config.quality, config.thumb_size, config.workers) == (70, 200, 3)
    assert config.grace_seconds == 60 and config.presign_expiry == 120
    assert config.base_url == "https://img.example.com"
    assert settings.media_sweep_interval == 0
    assert (settings.s3_bucket, settings.s3_region) == ("pictures", "cn-north-1")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIUDONG_MEDIA_QUALITY", "101"),
        ("LIUDONG_MEDIA_MAX_BYTES", "0"),
        ("LIUDONG_MEDIA_GRACE", "-1"),
        ("LIUDONG_S3_PRESIGN_EXPIRY", "9999999"),
    ],
)
def test_unusable_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_the_storage_is_the_disk_unless_a_bucket_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = media_storage_for(Settings(data_dir=tmp_path))
    assert isinstance(disk, DiskStorage) and disk.root == tmp_path / "media"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    s3 = media_storage_for(
        Settings(data_dir=tmp_path, s3_bucket="b", s3_endpoint_url="http://127.0.0.1:1")
    )
    assert isinstance(s3, S3Storage) and s3.bucket == "b"
    s3.close()


def test_the_upload_route_has_its_own_body_limit() -> None:
    router = media_router(Settings(media_max_bytes=1234))
    assert router.request_max_body_size == 1234 + MULTIPART_OVERHEAD


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert _etag_matches(header, '"abc"') is matches
