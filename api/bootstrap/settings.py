"""Typed settings, read once from the environment.

Each field names its environment variable and says what it means (``msgspec.Meta``); the
list of variables is generated from them (``liudong settings --markdown``, the table in
README.md, checked by ``tests/unit/test_settings.py``), never kept by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import limits
import msgspec
import platformdirs

Environment = Literal["development", "production", "test"]
ModerationProvider = Literal["local", "wechat", "off"]
MediaCheckProvider = Literal["wechat", "off"]
OutagePolicy = Literal["fail_open", "fail_closed"]


def _var(env: str, meaning: str, *, rate: bool = False, **constraints: Any) -> msgspec.Meta:
    """``rate``: a ``limits`` rate string (``"60/minute"``): checked by ``from_env``, and an
    empty variable sets it to ``""`` (the limit is off) instead of counting as unset."""
    extra = {"env": env, "rate": rate}
    return msgspec.Meta(description=meaning, extra=extra, **constraints)


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value).expanduser()
    raise NotImplementedError(kind)


class SettingsError(ValueError):
    """A setting has an unusable value; the message names the variable."""


_DEFAULT_DATA_DIR = Path(platformdirs.user_data_dir("liudong"))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    env: Annotated[
        Environment,
        _var(
            "LIUDONG_ENV",
            "`development`, `production` or `test`; `production` refuses dev-mode login",
        ),
    ] = "development"
    database_url: Annotated[
        str | None,
        _var(
            "DATABASE_URL",
            "PostgreSQL URL, e.g. "
            "`postgresql://user@host:5432/liudong`; unset: embedded PostgreSQL",
        ),
    ] = None
    nats_url: Annotated[
        str | None,
        _var(
            "NATS_URL", "e.g. `nats://127.0.0.1:4222`; unset: embedded nats-server with JetStream"
        ),
    ] = None
    data_dir: Annotated[
        Path,
        _var(
            "LIUDONG_DATA_DIR", "where the embedded servers keep their data (per-user data folder)"
        ),
    ] = _DEFAULT_DATA_DIR
    host: Annotated[str, _var("LIUDONG_HOST", "where `liudong serve` listens")] = "127.0.0.1"
    port: Annotated[
        int, _var("LIUDONG_PORT", "the port `liudong serve` listens on", ge=1, le=65535)
    ] = 8000
    wechat_appid: Annotated[
        str, _var("LIUDONG_WECHAT_APPID", "the mini-program's AppID (production login)")
    ] = ""
    wechat_secret: Annotated[
        str,
        _var("LIUDONG_WECHAT_SECRET", "the mini-program's AppSecret (production login); secret"),
    ] = ""
    wechat_base_url: Annotated[
        str, _var("LIUDONG_WECHAT_BASE_URL", "base URL of WeChat's server API (`jscode2session`…)")
    ] = "https://api.weixin.qq.com"
    wechat_timeout: Annotated[
        float, _var("LIUDONG_WECHAT_TIMEOUT", "seconds per WeChat call", gt=0)
    ] = 5.0
    wechat_token_margin: Annotated[
        float,
        _var(
            "LIUDONG_WECHAT_TOKEN_MARGIN",
            "seconds before expiry that the server "
            "access token (shared by every node through PostgreSQL) is refreshed",
            ge=0,
            le=3600,
        ),
    ] = 300.0
    wechat_push_token: Annotated[
        str,
        _var(
            "LIUDONG_WECHAT_PUSH_TOKEN",
            "Token of the mini-program's message push "
            "(消息推送) configuration; unset: `/v1/wechat/push` answers 404",
        ),
    ] = ""
    wechat_push_aes_key: Annotated[
        str,
        _var(
            "LIUDONG_WECHAT_PUSH_AES_KEY",
            "its EncodingAESKey (43 characters), for safe mode; secret",
        ),
    ] = ""
    wechat_push_window: Annotated[
        float,
        _var(
            "LIUDONG_WECHAT_PUSH_WINDOW",
            "seconds a push's timestamp may be away from now (older: 403)",
            gt=0,
        ),
    ] = 300.0
    moderation: Annotated[
        ModerationProvider | None,
        _var(
            "LIUDONG_MODERATION",
            "content check of readers' "
            "texts: `local` (word list), `wechat` (msgSecCheck "
            "v2), `off`; unset: `wechat` in production, else "
            "`local`",
        ),
    ] = None
    moderation_wordlist: Annotated[
        Path | None,
        _var(
            "LIUDONG_MODERATION_WORDLIST",
            "the local check's word list: one "
            "`WORD[|VERDICT[|LABEL]]` per line, VERDICT `reject` (default) or "
            "`review`; unset: a small built-in list",
        ),
    ] = None
    moderation_timeout: Annotated[
        float, _var("LIUDONG_MODERATION_TIMEOUT", "seconds a text waits for WeChat's verdict", gt=0)
    ] = 3.0
    moderation_outage_messages: Annotated[
        OutagePolicy,
        _var(
            "LIUDONG_MODERATION_OUTAGE_MESSAGES",
            "chat/room messages, loan "
            "notes, decline reasons when WeChat cannot judge: `fail_open` "
            "(accept) or `fail_closed` (503)",
        ),
    ] = "fail_open"
    moderation_outage_fields: Annotated[
        OutagePolicy,
        _var("LIUDONG_MODERATION_OUTAGE_FIELDS", "the same for nicknames and book fields"),
    ] = "fail_closed"
    subscribe_templates: Annotated[
        Path | None,
        _var(
            "LIUDONG_SUBSCRIBE_TEMPLATES",
            "TOML file mapping inbox kinds to WeChat subscribe-message templates "
            "(`deploy/subscribe-templates.example.toml`; checked at start-up); unset: no "
            "subscribe messages",
        ),
    ] = None
    notify_max_attempts: Annotated[
        int,
        _var(
            "LIUDONG_NOTIFY_MAX_ATTEMPTS",
            "tries of one subscribe message (WeChat busy or unreachable) before it is given up",
            ge=1,
            le=20,
        ),
    ] = 5
    notify_backoff: Annotated[
        float,
        _var(
            "LIUDONG_NOTIFY_BACKOFF",
            "seconds before a failed subscribe message is tried again, doubled each time "
            "(at most an hour)",
            gt=0,
        ),
    ] = 30.0
    notify_retention: Annotated[
        int,
        _var(
            "LIUDONG_NOTIFY_RETENTION",
            "days a subscribe message's record is kept once done (sent, refused, skipped, failed)",
            ge=1,
        ),
    ] = 30
    forwarded_allow_ips: Annotated[
        str,
        _var(
            "LIUDONG_FORWARDED_ALLOW_IPS",
            "addresses or networks whose "
            "`X-Forwarded-For`/`-Proto` `liudong serve` believes (the reverse proxy's); "
            "`*` = any, never on a public port",
        ),
    ] = "127.0.0.1,::1"
    token_ttl: Annotated[
        int, _var("LIUDONG_TOKEN_TTL", "session token lifetime, seconds (30 days)", ge=1)
    ] = 30 * 24 * 3600
    max_sessions: Annotated[
        int,
        _var(
            "LIUDONG_MAX_SESSIONS",
            "live sessions per reader; a login beyond it revokes "
            "the oldest (and closes its sockets)",
            ge=1,
        ),
    ] = 10
    single_device: Annotated[
        bool,
        _var(
            "LIUDONG_SINGLE_DEVICE",
            "a login ends the reader's other sessions: their sockets, on every node, get "
            "`error` `session_replaced` and close 4409",
        ),
    ] = False
    rate_login_address: Annotated[
        str,
        _var(
            "LIUDONG_RATE_LOGIN_ADDRESS",
            "logins per client address (`limits` syntax; "
            "per node: each API node counts for itself; empty: off)",
            rate=True,
        ),
    ] = "60/minute"
    rate_login_code: Annotated[
        str,
        _var(
            "LIUDONG_RATE_LOGIN_CODE",
            "logins per login code (per node; empty: off)",
            rate=True,
        ),
    ] = "5/minute"
    rate_loan_requests: Annotated[
        str,
        _var(
            "LIUDONG_RATE_LOAN_REQUESTS",
            "loan requests per reader (per node; empty: off)",
            rate=True,
        ),
    ] = "30/hour"
    rate_chat_sends: Annotated[
        str,
        _var(
            "LIUDONG_RATE_CHAT_SENDS",
            "chat messages sent per reader, over HTTP and WebSocket `chat.send` together "
            "(per node: all the reader's requests and sockets on one node share the count; "
            "beyond: 429 or `error` `rate_limited`; empty: off)",
            rate=True,
        ),
    ] = "60/minute"
    rate_room_sends: Annotated[
        str,
        _var(
            "LIUDONG_RATE_ROOM_SENDS",
            "room messages (`room.send`) per reader, all its sockets together (per node; "
            "beyond: `error` `rate_limited` with `retry_after`; empty: off)",
            rate=True,
        ),
    ] = "30/minute"
    ws_frame_rate: Annotated[
        str,
        _var(
            "LIUDONG_WS_FRAME_RATE",
            "frames one WebSocket may send (per socket, so per "
            "node; beyond: `error` `rate_limited` with `retry_after`; empty: off)",
            rate=True,
        ),
    ] = "120/minute"
    run_projections: Annotated[
        bool,
        _var(
            "LIUDONG_RUN_PROJECTIONS",
            "run projection runners in this process (one process is active per projection)",
        ),
    ] = True
    consistency_timeout: Annotated[
        float,
        _var(
            "LIUDONG_CONSISTENCY_TIMEOUT",
            "seconds a command waits for the read models (read-your-writes) before answering 202",
            ge=0,
        ),
    ] = 5.0
    db_pool_size: Annotated[
        int, _var("LIUDONG_DB_POOL_SIZE", "read-model connection pool size", ge=1)
    ] = 10
    db_connect_timeout: Annotated[
        int,
        _var(
            "LIUDONG_DB_CONNECT_TIMEOUT",
            "seconds to open a database connection (libpq's connect_timeout; at least 2)",
            ge=2,
        ),
    ] = 2
    db_pool_timeout: Annotated[
        float,
        _var(
            "LIUDONG_DB_POOL_TIMEOUT",
            "seconds a request waits for a pooled database "
            "connection before answering 503 database_unavailable",
            gt=0,
        ),
    ] = 0.8
    db_statement_timeout: Annotated[
        float,
        _var(
            "LIUDONG_DB_STATEMENT_TIMEOUT",
            "seconds one SQL statement of a request may "
            "run (PostgreSQL statement_timeout; 0: none)",
            ge=0,
        ),
    ] = 10.0
    operator_token: Annotated[
        str,
        _var(
            "LIUDONG_OPERATOR_TOKEN",
            "bearer token of operators: `/readyz`'s details, the console at `/ops` and its "
            "API `/v1/ops` (unset: nobody sees them; the public `/readyz` says only ready or not)",
        ),
    ] = ""
    session_cache_ttl: Annotated[
        float,
        _var(
            "LIUDONG_SESSION_CACHE_TTL",
            "seconds a node remembers a live session token (no database lookup); a "
            "revocation (NATS `liudong.sessions.revoked`) drops it at once, and the cache is "
            "off while NATS is disconnected; 0: off",
            ge=0,
            le=60,
        ),
    ] = 5.0
    handler_threads: Annotated[
        int,
        _var(
            "LIUDONG_HANDLER_THREADS",
            "threads running the synchronous request "
            "handlers and the blocking parts of the async ones (a loan or chat-send "
            "command waits for the read models on the event loop, the others in their thread)",
            ge=1,
            le=1024,
        ),
    ] = 16
    group_commit: Annotated[
        bool,
        _var(
            "LIUDONG_GROUP_COMMIT",
            "concurrent saves of a process share one event-store transaction (one table lock, "
            "one commit); off: each save is its own transaction",
        ),
    ] = True
    access_log: Annotated[
        bool,
        _var(
            "LIUDONG_ACCESS_LOG",
            "log every HTTP request (`liudong serve "
            "--access-log`); off: it costs ~5 % of a command's CPU",
        ),
    ] = False
    ws_heartbeat: Annotated[
        float, _var("LIUDONG_WS_HEARTBEAT", "seconds between WebSocket server pings", gt=0)
    ] = 25.0
    ws_queue_size: Annotated[
        int,
        _var(
            "LIUDONG_WS_QUEUE_SIZE",
            "frames queued per socket before it is closed 4008 (slow consumer)",
            ge=1,
        ),
    ] = 256
    presence_interval: Annotated[
        float,
        _var(
            "LIUDONG_PRESENCE_INTERVAL", "seconds between room presence heartbeats over NATS", gt=0
        ),
    ] = 5.0
    media_max_bytes: Annotated[
        int,
        _var(
            "LIUDONG_MEDIA_MAX_BYTES",
            "largest picture upload, bytes (10 MiB; 413 `media_too_large`)",
            ge=1,
        ),
    ] = 10 * 1024 * 1024
    media_max_pixels: Annotated[
        int,
        _var(
            "LIUDONG_MEDIA_MAX_PIXELS",
            "most pixels in an uploaded picture (422 `image_too_large`)",
            ge=1,
        ),
    ] = 40_000_000
    media_quality: Annotated[
        int,
        _var(
            "LIUDONG_MEDIA_QUALITY",
            "JPEG/WebP quality of re-encoded pictures and thumbnails",
            ge=1,
            le=100,
        ),
    ] = 85
    media_thumb_size: Annotated[
        int,
        _var(
            "LIUDONG_MEDIA_THUMB_SIZE",
            "longer side of a picture's JPEG thumbnail, pixels",
            ge=16,
            le=4096,
        ),
    ] = 320
    media_workers: Annotated[
        int, _var("LIUDONG_MEDIA_WORKERS", "pictures decoded and re-encoded at once", ge=1, le=64)
    ] = 2
    media_grace: Annotated[
        float, _var("LIUDONG_MEDIA_GRACE", "seconds an upload never attached is kept (24 h)", ge=0)
    ] = 24 * 3600.0
    media_sweep_interval: Annotated[
        float,
        _var(
            "LIUDONG_MEDIA_SWEEP_INTERVAL",
            "seconds between the server's sweeps of "
            "expired uploads (0: never; `liudong media sweep`)",
            ge=0,
        ),
    ] = 3600.0
    media_base_url: Annotated[
        str,
        _var(
            "LIUDONG_MEDIA_BASE_URL",
            "prefix of the picture URLs answered (unset: the request's origin)",
        ),
    ] = ""
    media_check: Annotated[
        MediaCheckProvider | None,
        _var(
            "LIUDONG_MEDIA_CHECK",
            "image check of uploaded pictures: `wechat` (mediaCheckAsync v2; a `risky` "
            "verdict takes the picture down; needs `LIUDONG_MEDIA_BASE_URL` or S3 so that "
            "WeChat can fetch it) or `off`; unset: `wechat` when `LIUDONG_MODERATION` is",
        ),
    ] = None
    s3_bucket: Annotated[
        str,
        _var(
            "LIUDONG_S3_BUCKET",
            "store pictures in this S3 bucket (unset: on disk "
            "under `LIUDONG_DATA_DIR/media`); credentials from `AWS_ACCESS_KEY_ID` / "
            "`AWS_SECRET_ACCESS_KEY`",
        ),
    ] = ""
    s3_endpoint_url: Annotated[
        str, _var("LIUDONG_S3_ENDPOINT_URL", "S3-compatible endpoint (unset: AWS)")
    ] = ""
    s3_region: Annotated[str, _var("LIUDONG_S3_REGION", "the bucket's region")] = ""
    s3_presign_expiry: Annotated[
        int,
        _var(
            "LIUDONG_S3_PRESIGN_EXPIRY",
            "seconds a picture's presigned redirect URL is valid",
            ge=1,
            le=7 * 24 * 3600,
        ),
    ] = 3600

    @property
    def moderation_provider(self) -> ModerationProvider:
        """``LIUDONG_MODERATION``, else ``wechat`` in production and ``local`` elsewhere."""
        if self.moderation is not None:
            return self.moderation
        return "wechat" if self.env == "production" else "local"

    @property
    def media_check_provider(self) -> MediaCheckProvider:
        """``LIUDONG_MEDIA_CHECK``, else ``wechat`` when the text check is WeChat's."""
        if self.media_check is not None:
            return self.media_check
        return "wechat" if self.moderation_provider == "wechat" else "off"

    @property
    def dev_login_allowed(self) -> bool:
        """Dev-mode login (``dev:<name>`` codes) is refused in production."""
        return self.env != "production"

    def with_(self, **changes: object) -> Settings:
        return msgspec.structs.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); empty values count as
        unset, except for the limits (``LIUDONG_RATE_*``, ``LIUDONG_WS_FRAME_RATE``), where
        empty means off.

        Raises ``SettingsError`` naming the variable when a value has the wrong type, is out
        of range, or is not a ``limits`` rate string (the limits)."""
        env = os.environ if environ is None else environ
        known = list(variables())
        names = {v.field: v.env for v in known}
        raw = {v.field: env[v.env] for v in known if env.get(v.env) or (v.rate and v.env in env)}
        try:
            settings = msgspec.convert(raw, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            field = str(exc).rsplit("$.", 1)[-1].rstrip("`")
            raise SettingsError(f"{names.get(field, field)}: {exc}") from exc
        for v in known:
            value = getattr(settings, v.field)
            if v.rate and value:
                try:
                    limits.parse(value)
                except ValueError as exc:
                    raise SettingsError(f"{v.env}: {exc} (e.g. `60/minute`)") from exc
        return settings


@dataclass(frozen=True)
class Variable:
    """One environment variable of ``Settings``."""

    env: str
    field: str
    default: Any
    meaning: str
    rate: bool = False
    """A ``limits`` rate string: empty sets it to ``""`` (off) rather than counting as unset."""

    @property
    def shown_default(self) -> str:
        if self.default is None:
            return "—"
        if self.default is _DEFAULT_DATA_DIR:
            return "`~/.local/share/liudong`"
        if isinstance(self.default, bool):
            return f"`{str(self.default).lower()}`"
        if isinstance(self.default, float) and self.default.is_integer():
            return f"`{int(self.default)}`"
        return f"`{self.default}`" if self.default != "" else "—"


def variables() -> Iterator[Variable]:
    """Every setting's variable, in the order of the ``Settings`` fields."""
    for f in msgspec.inspect.type_info(Settings).fields:  # type: ignore[attr-defined]
        meta = f.type
        yield Variable(
            env=meta.extra["env"],
            field=f.name,
            default=f.default,
            meaning=meta.extra_json_schema["description"],
            rate=meta.extra.get("rate", False),
        )


def variables_markdown() -> str:
    """The table of variables for README.md (``liudong settings --markdown``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.env}` | {v.shown_default} | {v.meaning} |" for v in variables()]
    return "\n".join(rows) + "\n"
