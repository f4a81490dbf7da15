"""Typed settings, read once from the environment.

=================================  ===========================================================
variable                           meaning (default)
=================================  ===========================================================
``LIUDONG_ENV``                    ``development`` | ``production`` | ``test`` (development)
``DATABASE_URL``                   PostgreSQL URL; unset → embedded PostgreSQL (pgserver)
``NATS_URL``                       NATS URL; unset → embedded nats-server with JetStream
``LIUDONG_DATA_DIR``               folder of the embedded servers' data (per-user data dir)
``LIUDONG_HOST`` / ``LIUDONG_PORT`` where ``liudong serve`` listens (127.0.0.1 / 8000)
``LIUDONG_WECHAT_APPID``           mini-program AppID (production login)
``LIUDONG_WECHAT_SECRET``          mini-program AppSecret (production login)
``LIUDONG_WECHAT_BASE_URL``        base URL of the WeChat API (https://api.weixin.qq.com)
``LIUDONG_WECHAT_TIMEOUT``         seconds per jscode2session call (5)
``LIUDONG_TOKEN_TTL``              session token lifetime in seconds (2,592,000 = 30 days)
``LIUDONG_RUN_PROJECTIONS``        run the projection runners in this process (true)
``LIUDONG_CONSISTENCY_TIMEOUT``    seconds a command waits for its read models (5)
``LIUDONG_DB_POOL_SIZE``           connections in the read-model pool (10)
``LIUDONG_HANDLER_THREADS``        threads running synchronous request handlers (16): a
                                   command holds one while it waits for its read models;
                                   more cost CPU (GIL and pool contention: event inserts
                                   are serialised by a table lock anyway)
``LIUDONG_ACCESS_LOG``             log every HTTP request (uvicorn's access log) (false)
``LIUDONG_WS_HEARTBEAT``           seconds between WebSocket server pings (25)
``LIUDONG_WS_QUEUE_SIZE``          frames queued per socket before 4008 slow consumer (256)
``LIUDONG_PRESENCE_INTERVAL``      seconds between room presence heartbeats over NATS (5)
``LIUDONG_MEDIA_MAX_BYTES``        largest picture upload, bytes (10,485,760 = 10 MiB) → 413
``LIUDONG_MEDIA_MAX_PIXELS``       most pixels in an uploaded picture (40,000,000) → 422
``LIUDONG_MEDIA_QUALITY``          JPEG/WebP quality of re-encoded pictures and thumbs (85)
``LIUDONG_MEDIA_THUMB_SIZE``       longer side of a picture's JPEG thumbnail, pixels (320)
``LIUDONG_MEDIA_WORKERS``          pictures decoded and re-encoded at once (2)
``LIUDONG_MEDIA_GRACE``            seconds an unattached upload is kept (86,400 = 24 h)
``LIUDONG_MEDIA_SWEEP_INTERVAL``   seconds between the server's sweeps of expired uploads
                                   (3,600; 0 = never: run ``liudong media sweep``)
``LIUDONG_MEDIA_BASE_URL``         prefix of the media URLs answered (the request's origin)
``LIUDONG_S3_BUCKET``              store pictures in this S3 bucket (unset: on disk under
                                   ``LIUDONG_DATA_DIR/media``); credentials from
                                   ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
``LIUDONG_S3_ENDPOINT_URL``        S3-compatible endpoint (unset: AWS)
``LIUDONG_S3_REGION``              the bucket's region
``LIUDONG_S3_PRESIGN_EXPIRY``      seconds a redirect's presigned GET URL is valid (3,600)
=================================  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import platformdirs

Environment = Literal["development", "production", "test"]


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value).expanduser()
    raise NotImplementedError(kind)


class SettingsError(ValueError):
    """A setting has an unusable value; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    env: Environment = "development"
    database_url: str | None = None
    nats_url: str | None = None
    data_dir: Path = Path(platformdirs.user_data_dir("liudong"))
    host: str = "127.0.0.1"
    port: int = 8000
    wechat_appid: str = ""
    wechat_secret: str = ""
    wechat_base_url: str = "https://api.weixin.qq.com"
    wechat_timeout: float = 5.0
    token_ttl: int = 30 * 24 * 3600
    run_projections: bool = True
    consistency_timeout: float = 5.0
    db_pool_size: int = 10
    handler_threads: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    access_log: bool = False
    ws_heartbeat: float = 25.0
    ws_queue_size: int = 256
    presence_interval: float = 5.0
    media_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 10 * 1024 * 1024
    media_max_pixels: Annotated[int, msgspec.Meta(ge=1)] = 40_000_000
    media_quality: Annotated[int, msgspec.Meta(ge=1, le=100)] = 85
    media_thumb_size: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 320
    media_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    media_grace: Annotated[float, msgspec.Meta(ge=0)] = 24 * 3600.0
    media_sweep_interval: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    media_base_url: str = ""
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_presign_expiry: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 3600

    @property
    def dev_login_allowed(self) -> bool:
        """Dev-mode login (``dev:<name>`` codes) is refused in production."""
        return self.env != "production"

    def with_(self, **changes: object) -> Settings:
        return msgspec.structs.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises ``SettingsError`` naming the variable when a value has the wrong type."""
        env = os.environ if environ is None else environ
        names = {
            "env": "LIUDONG_ENV",
            "database_url": "DATABASE_URL",
            "nats_url": "NATS_URL",
            "data_dir": "LIUDONG_DATA_DIR",
            "host": "LIUDONG_HOST",
            "port": "LIUDONG_PORT",
            "wechat_appid": "LIUDONG_WECHAT_APPID",
            "wechat_secret": "LIUDONG_WECHAT_SECRET",
            "wechat_base_url": "LIUDONG_WECHAT_BASE_URL",
            "wechat_timeout": "LIUDONG_WECHAT_TIMEOUT",
            "token_ttl": "LIUDONG_TOKEN_TTL",
            "run_projections": "LIUDONG_RUN_PROJECTIONS",
            "consistency_timeout": "LIUDONG_CONSISTENCY_TIMEOUT",
            "db_pool_size": "LIUDONG_DB_POOL_SIZE",
            "handler_threads": "LIUDONG_HANDLER_THREADS",
            "access_log": "LIUDONG_ACCESS_LOG",
            "ws_heartbeat": "LIUDONG_WS_HEARTBEAT",
            "ws_queue_size": "LIUDONG_WS_QUEUE_SIZE",
            "presence_interval": "LIUDONG_PRESENCE_INTERVAL",
            "media_max_bytes": "LIUDONG_MEDIA_MAX_BYTES",
            "media_max_pixels": "LIUDONG_MEDIA_MAX_PIXELS",
            "media_quality": "LIUDONG_MEDIA_QUALITY",
            "media_thumb_size": "LIUDONG_MEDIA_THUMB_SIZE",
            "media_workers": "LIUDONG_MEDIA_WORKERS",
            "media_grace": "LIUDONG_MEDIA_GRACE",
            "media_sweep_interval": "LIUDONG_MEDIA_SWEEP_INTERVAL",
            "media_base_url": "LIUDONG_MEDIA_BASE_URL",
            "s3_bucket": "LIUDONG_S3_BUCKET",
            "s3_endpoint_url": "LIUDONG_S3_ENDPOINT_URL",
            "s3_region": "LIUDONG_S3_REGION",
            "s3_presign_expiry": "LIUDONG_S3_PRESIGN_EXPIRY",
        }
        raw = {field: env[var] for field, var in names.items() if env.get(var)}
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            field = str(exc).rsplit("$.", 1)[-1].rstrip("`")
            raise SettingsError(f"{names.get(field, field)}: {exc}") from exc
