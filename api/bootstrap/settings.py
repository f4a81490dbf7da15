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
``LIUDONG_WECHAT_TIMEOUT``         seconds per WeChat call: jscode2session and the server
                                   API (5)
``LIUDONG_WECHAT_TOKEN_MARGIN``    seconds before its expiry that the shared server access
                                   token is refreshed (300)
``LIUDONG_WECHAT_PUSH_TOKEN``      Token of the mini-program's message push (消息推送) server
                                   configuration; unset → ``/v1/wechat/push`` answers 404
``LIUDONG_WECHAT_PUSH_AES_KEY``    its EncodingAESKey (43 characters; safe mode)
``LIUDONG_WECHAT_PUSH_WINDOW``     seconds a push's ``timestamp`` may differ from now (300)
``LIUDONG_MODERATION``             content check of user texts: ``local`` (word list) |
                                   ``wechat`` (msgSecCheck) | ``off`` (local; wechat in
                                   production)
``LIUDONG_MODERATION_WORDLIST``    the local check's word list file (a small built-in list)
``LIUDONG_MODERATION_TIMEOUT``     seconds a text waits for WeChat's verdict (3)
``LIUDONG_MODERATION_OUTAGE_MESSAGES``  when WeChat cannot judge a chat/room message, loan
                                   note or decline reason: ``fail_open`` (accept) |
                                   ``fail_closed`` (503) (fail_open)
``LIUDONG_MODERATION_OUTAGE_FIELDS``  the same for nicknames and book fields (fail_closed)
``LIUDONG_FORWARDED_ALLOW_IPS``    addresses (or networks) whose X-Forwarded-For / -Proto
                                   ``liudong serve`` believes: the reverse proxy's
                                   (127.0.0.1,::1); ``*`` = any (never on a public port)
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
ModerationProvider = Literal["local", "wechat", "off"]
OutagePolicy = Literal["fail_open", "fail_closed"]


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
    wechat_token_margin: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 300.0
    wechat_push_token: str = ""
    wechat_push_aes_key: str = ""
    wechat_push_window: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    moderation: ModerationProvider | None = None
    moderation_wordlist: Path | None = None
    moderation_timeout: Annotated[float, msgspec.Meta(gt=0)] = 3.0
    moderation_outage_messages: OutagePolicy = "fail_open"
    moderation_outage_fields: OutagePolicy = "fail_closed"
    forwarded_allow_ips: str = "127.0.0.1,::1"

    @property
    def moderation_provider(self) -> ModerationProvider:
        """``LIUDONG_MODERATION``, else ``wechat`` in production and ``local`` elsewhere."""
        if self.moderation is not None:
            return self.moderation
        return "wechat" if self.env == "production" else "local"

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
            "wechat_token_margin": "LIUDONG_WECHAT_TOKEN_MARGIN",
            "wechat_push_token": "LIUDONG_WECHAT_PUSH_TOKEN",
            "wechat_push_aes_key": "LIUDONG_WECHAT_PUSH_AES_KEY",
            "wechat_push_window": "LIUDONG_WECHAT_PUSH_WINDOW",
            "moderation": "LIUDONG_MODERATION",
            "moderation_wordlist": "LIUDONG_MODERATION_WORDLIST",
            "moderation_timeout": "LIUDONG_MODERATION_TIMEOUT",
            "moderation_outage_messages": "LIUDONG_MODERATION_OUTAGE_MESSAGES",
            "moderation_outage_fields": "LIUDONG_MODERATION_OUTAGE_FIELDS",
            "forwarded_allow_ips": "LIUDONG_FORWARDED_ALLOW_IPS",
        }
        raw = {field: env[var] for field, var in names.items() if env.get(var)}
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            field = str(exc).rsplit("$.", 1)[-1].rstrip("`")
            raise SettingsError(f"{names.get(field, field)}: {exc}") from exc
