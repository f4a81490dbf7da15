"""WeChat's server API (服务端 API): one client, one access token shared by every node.

(Over 500 lines on purpose: the token's life — fetch, shared row, advisory-locked refresh,
one retry on a refused token — and the call path that uses it are one protocol, read top to
bottom; the thread wrapper for synchronous callers is its last part.)

``WeChatApi`` (async, ``httpx``) calls ``{LIUDONG_WECHAT_BASE_URL}/…`` with the same timeout
and the same retry policy as the login client (``api.adapters.wechat``); its errors are that
module's ``WeChatError`` tree. ``WeChatApiThread`` runs one on its own event loop thread, so
the request handlers' worker threads (the content check) and any event loop (the
subscribe-message notifier to come) share one client, one keep-alive connection pool and
one token.

The access token
    ``POST /cgi-bin/stable_token`` with ``{"grant_type": "client_credential", "appid",
    "secret", "force_refresh"}`` → ``{"access_token", "expires_in"}`` (at most 7,200 s).
    Normal mode (``force_refresh: false``) returns the current token while it is valid;
    force-refresh mode invalidates it and is limited to 20 calls a day, so it is used only
    when WeChat refused a token that normal mode still returns. Source (getStableAccessToken):
    https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-access-token/getStableAccessToken.html

    The token lives in PostgreSQL (``wechat_access_token``, migration ``0009_wechat``) so every
    node and worker uses the same one, plus a copy in memory. It is refreshed
    ``margin`` seconds (``LIUDONG_WECHAT_TOKEN_MARGIN``, 300) before it expires, by one node
    at a time: the refresh runs in a transaction holding ``pg_advisory_xact_lock``; a node
    that waited for the lock finds the new row and does not call WeChat. Within a process,
    one coroutine refreshes and the others wait for it.

    A call answered with errcode 40001 / 42001 / 40014 (invalid, expired, not the latest
    token) refreshes the token once (unless another node already did) and is retried once
    with the new one; a second refusal is raised (``AccessTokenRejected``).

Errors (beyond the login client's)
    -1 busy, network errors, timeouts, HTTP 5xx, a non-JSON answer: retried after
    ``backoff`` (0.1 s, 0.3 s), then ``WeChatBusy`` / ``WeChatUnavailable``.
    45009 (daily quota) / 45011 (per-minute frequency): ``WeChatQuotaExceeded`` with
    ``retry_after`` (the HTTP layer answers 503 with ``Retry-After``), not retried.
    40013 invalid AppID, 40125 invalid AppSecret, 40164 this server's IP is not in the API
    IP whitelist, 40243 AppSecret frozen, 89503 the IP awaits an administrator's
    confirmation, 41002/41004 missing AppID/AppSecret — and 40001 from ``stable_token``
    itself (the AppSecret does not belong to the AppID): ``WeChatConfigError``. In
    production, ``check_credentials()`` at start-up turns these into a refusal to start.

The AppSecret travels in a JSON body only; the token appears in URLs, which the ``httpx``
logger's filter masks (``access_token=***``); neither is ever logged nor put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol, TypeVar

import httpx
import msgspec
import psycopg

from api.adapters.wechat import (
    WeChatAppSettings,
    WeChatBusy,
    WeChatConfigError,
    WeChatError,
    WeChatQuotaExceeded,
    WeChatUnavailable,
    install_log_redaction,
    redact_secrets,
    require_credentials,
)

__all__ = [
    "AccessToken",
    "AccessTokenRejected",
    "MemoryTokenStore",
    "PgTokenStore",
    "SecCheckResult",
    "TokenSlot",
    "TokenStore",
    "WeChatApi",
    "WeChatApiSettings",
    "WeChatApiThread",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
MSG_SEC_CHECK_PATH = "/wxa/msg_sec_check"
SUBSCRIBE_SEND_PATH = "/cgi-bin/message/subscribe/send"
MEDIA_CHECK_ASYNC_PATH = "/wxa/media_check_async"
MIN_REFRESH_INTERVAL = 60.0
"""A token WeChat hands out with less than the margin left is still used for up to this many
seconds (or half its life) before the next refresh: never a refresh per call."""

_TOKEN_REJECTED = frozenset({40001, 40014, 42001})
_BUSY = frozenset({-1})
_QUOTA = frozenset({45009, 45011})
_CONFIG = frozenset({40013, 40125, 40164, 40243, 41002, 41004, 89503})
_BEIJING = timezone(timedelta(hours=8))


class WeChatApiSettings(WeChatAppSettings, Protocol):
    """The settings the server API client reads (``api.bootstrap.settings.Settings``)."""

    @property
    def wechat_token_margin(self) -> float: ...


class AccessTokenRejected(WeChatError):
    """WeChat refused the access token (40001 / 40014 / 42001) again, right after a refresh."""

    code = "wechat_token_rejected"
    retryable = True


def seconds_to_beijing_midnight(now: float | None = None) -> int:
    """Seconds until the next 00:00 in Beijing (UTC+8), when WeChat's daily quotas reset."""
    current = datetime.fromtimestamp(time.time() if now is None else now, _BEIJING)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - current).total_seconds()) + 1)


def _mapped_error(errcode: int, errmsg: str, what: str) -> WeChatError:
    message = f"{what} errcode {errcode}: {redact_secrets(errmsg)}"
    if errcode in _QUOTA:
        retry_after = seconds_to_beijing_midnight() if errcode == 45009 else 60
        return WeChatQuotaExceeded(message, errcode=errcode, errmsg=errmsg, retry_after=retry_after)
    if errcode in _CONFIG:
        return WeChatConfigError(
            f"{message} (check LIUDONG_WECHAT_APPID, LIUDONG_WECHAT_SECRET and the API IP "
            "whitelist of the mini-program)",
            errcode=errcode,
            errmsg=errmsg,
        )
    if errcode in _BUSY:
        return WeChatBusy(message, errcode=errcode, errmsg=errmsg)
    if errcode in _TOKEN_REJECTED:
        return AccessTokenRejected(message, errcode=errcode, errmsg=errmsg)
    return WeChatError(message, errcode=errcode, errmsg=errmsg)


# --------------------------------------------------------------------------- the token store


@dataclass(frozen=True)
class AccessToken:
    """A token and when it expires / should be refreshed (``time.time()`` seconds)."""

    token: str
    expires_at: float
    refresh_at: float

    def usable(self, now: float | None = None) -> bool:
        """Not due for a refresh yet (and not expired)."""
        now = time.time() if now is None else now
        return now < self.refresh_at and now < self.expires_at

    def __repr__(self) -> str:  # never the token itself
        return f"AccessToken(expires_at={self.expires_at:.0f}, refresh_at={self.refresh_at:.0f})"


def refresh_delay(expires_in: float, margin: float) -> float:
    """Seconds from now until a token valid for ``expires_in`` seconds is due for a refresh:
    ``margin`` seconds before it expires, but not sooner than ``MIN_REFRESH_INTERVAL`` (or
    half its life, if shorter)."""
    return max(expires_in - margin, min(MIN_REFRESH_INTERVAL, expires_in / 2))


class TokenSlot(Protocol):
    """Inside ``TokenStore.refreshing``: the stored token (``None`` if none) and ``save``."""

    current: AccessToken | None

    async def save(self, token: str, expires_in: int, margin: float) -> AccessToken: ...


class TokenStore(Protocol):
    """Where the access token is shared. ``refreshing`` holds the store's lock (one refresher
    at a time, across processes for ``PgTokenStore``) while the caller fetches and saves."""

    async def load(self, appid: str) -> AccessToken | None: ...

    def refreshing(self, appid: str) -> contextlib.AbstractAsyncContextManager[TokenSlot]: ...


class _MemorySlot:
    def __init__(self, store: MemoryTokenStore, appid: str) -> None:
        self._store = store
        self._appid = appid
        self.current = store.tokens.get(appid)

    async def save(self, token: str, expires_in: int, margin: float) -> AccessToken:
        now = time.time()
        saved = AccessToken(token, now + expires_in, now + refresh_delay(expires_in, margin))
        self._store.tokens[self._appid] = saved
        self.current = saved
        return saved


class MemoryTokenStore:
    """A ``TokenStore`` in this process only (tests, benchmarks, tools without a database)."""

    def __init__(self) -> None:
        self.tokens: dict[str, AccessToken] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def load(self, appid: str) -> AccessToken | None:
        return self.tokens.get(appid)

    @contextlib.asynccontextmanager
    async def refreshing(self, appid: str) -> AsyncIterator[TokenSlot]:
        async with self._locks.setdefault(appid, asyncio.Lock()):
            yield _MemorySlot(self, appid)


def token_lock_keys(appid: str) -> tuple[int, int]:
    """The two-integer advisory-lock key of ``appid``'s token (a key space apart from the
    one-bigint keys of the projections)."""
    return (
        zlib.crc32(b"liudong.wechat_access_token") - 2**31,
        zlib.crc32(appid.encode()) - 2**31,
    )


_SELECT_TOKEN = """
SELECT access_token,
       extract(epoch FROM expires_at - now())::float8 AS expires_in,
       extract(epoch FROM refresh_after - now())::float8 AS refresh_in
  FROM wechat_access_token WHERE appid = %s
"""
_SAVE_TOKEN = """
INSERT INTO wechat_access_token AS t
       (appid, access_token, expires_at, refresh_after, refreshed_at, refreshed_by)
VALUES (%(appid)s, %(token)s, now() + make_interval(secs => %(expires_in)s),
        now() + make_interval(secs => %(refresh_in)s), now(), %(node)s)
ON CONFLICT (appid) DO UPDATE SET
       access_token = excluded.access_token, expires_at = excluded.expires_at,
       refresh_after = excluded.refresh_after, refreshed_at = excluded.refreshed_at,
       refreshed_by = excluded.refreshed_by
"""


def _token_of(row: Sequence[Any] | None) -> AccessToken | None:
    if row is None:
        return None
    now = time.time()
    return AccessToken(str(row[0]), now + float(row[1]), now + float(row[2]))


class _PgSlot:
    def __init__(
        self, conn: psycopg.AsyncConnection[Any], appid: str, node: str, current: AccessToken | None
    ) -> None:
        self._conn = conn
        self._appid = appid
        self._node = node
        self.current = current

    async def save(self, token: str, expires_in: int, margin: float) -> AccessToken:
        refresh_in = refresh_delay(expires_in, margin)
        await self._conn.execute(
            _SAVE_TOKEN,
            {
                "appid": self._appid,
                "token": token,
                "expires_in": float(expires_in),
                "refresh_in": refresh_in,
                "node": self._node,
            },
        )
        now = time.time()
        self.current = AccessToken(token, now + expires_in, now + refresh_in)
        return self.current


class PgTokenStore:
    """The token in ``wechat_access_token``. Each operation opens its own short connection
    (a load happens only when the in-memory copy is due: at start-up and every ~2 hours).

    ``refreshing`` runs in one transaction holding ``pg_advisory_xact_lock`` on the AppID (at
    most ``lock_timeout`` seconds of waiting); the lock ends with the transaction.
    Database errors become ``WeChatUnavailable`` (the caller cannot get a token either way)."""

    def __init__(
        self, database_url: str, *, node: str | None = None, lock_timeout: float = 60.0
    ) -> None:
        self.database_url = database_url
        self.node = node or socket.gethostname()
        self.lock_timeout = lock_timeout

    async def load(self, appid: str) -> AccessToken | None:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True, connect_timeout=5
            ) as conn:
                cursor = await conn.execute(_SELECT_TOKEN, (appid,))
                return _token_of(await cursor.fetchone())
        except psycopg.Error as exc:
            raise WeChatUnavailable(f"the access token store is unavailable ({exc})") from exc

    @contextlib.asynccontextmanager
    async def refreshing(self, appid: str) -> AsyncIterator[TokenSlot]:
        try:
            conn = await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=5)
        except psycopg.Error as exc:
            raise WeChatUnavailable(f"the access token store is unavailable ({exc})") from exc
        async with conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"SET LOCAL lock_timeout = '{int(self.lock_timeout * 1000)}ms'"
                    )
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, %s)", token_lock_keys(appid)
                    )
                    cursor = await conn.execute(_SELECT_TOKEN, (appid,))
                    current = _token_of(await cursor.fetchone())
                    yield _PgSlot(conn, appid, self.node, current)
            except psycopg.Error as exc:
                raise WeChatUnavailable(f"the access token store is unavailable ({exc})") from exc


# --------------------------------------------------------------------------- the client


class SecCheckResult(msgspec.Struct, frozen=True):
    """msgSecCheck v2's overall ``result``: ``suggest`` (``pass`` | ``review`` | ``risky``) and
    ``label`` (100 normal, 10001 ad, 20001 politics, 20002 porn, 20003 abuse, 20006 crime,
    20008 fraud, 20012 vulgar, 20013 copyright, 21000 other)."""

    suggest: Literal["pass", "review", "risky"]
    label: int = 100
    trace_id: str = ""


class _SecCheckReply(msgspec.Struct):
    result: SecCheckResult | None = None
    trace_id: str = ""


class _Retry(Exception):
    def __init__(self, error: WeChatError) -> None:
        super().__init__(error.message)
        self.error = error


_json_decoder = msgspec.json.Decoder(dict[str, Any])


class WeChatApi:
    """The server API client (see the module docstring). ``store``: where the token is
    shared (``PgTokenStore`` in the app). ``margin``: seconds before expiry to refresh.
    ``timeout``: seconds per HTTP attempt; ``backoff``: the waits before each retry (its
    length is the number of retries). ``transport``/``sleep``/``clock``: for tests.

    Use it from one event loop (``WeChatApiThread`` gives it one) and ``await aclose()``."""

    def __init__(
        self,
        appid: str,
        secret: str,
        *,
        store: TokenStore,
        base_url: str = "https://api.weixin.qq.com",
        timeout: float = 5.0,
        backoff: Sequence[float] = (0.1, 0.3),
        margin: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        require_credentials(appid, secret, "WeChat's server API")
        self.appid = appid
        self._secret = secret
        self._store = store
        self._base = base_url.rstrip("/")
        self._backoff = tuple(backoff)
        self._margin = margin
        self._sleep = sleep
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0  # stable_token calls made by this client (tests, metrics)
        install_log_redaction()
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(
        cls,
        settings: WeChatApiSettings,
        store: TokenStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> WeChatApi:
        return cls(
            settings.wechat_appid,
            settings.wechat_secret,
            store=store,
            base_url=settings.wechat_base_url,
            timeout=settings.wechat_timeout,
            margin=settings.wechat_token_margin,
            transport=transport,
        )

    def __repr__(self) -> str:  # never the secret nor the token
        return f"WeChatApi(appid={self.appid!r}, base_url={self._base!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the token ------------------------------------------------------------------------

    async def access_token(self) -> str:
        """A valid access token: the in-memory copy, else the shared one, else a new one."""
        held = self._token
        if held is not None and held.usable():
            return held.token
        async with self._lock:
            held = self._token
            if held is not None and held.usable():
                return held.token
            stored = await self._store.load(self.appid)
            if stored is not None and stored.usable():
                self._token = stored
                return stored.token
            return await self._refresh(rejected=None)

    async def check_credentials(self) -> None:
        """Get a token now: raises ``WeChatConfigError`` when WeChat refuses the AppID, the
        AppSecret or this server's address (start-up check in production)."""
        await self.access_token()

    async def _token_after_rejection(self, rejected: str) -> str:
        async with self._lock:
            held = self._token
            if held is not None and held.token != rejected and held.usable():
                return held.token  # another coroutine already replaced it
            return await self._refresh(rejected=rejected)

    async def _refresh(self, rejected: str | None) -> str:
        """Under the store's lock: adopt a token another node saved meanwhile, else fetch one
        (normal mode; force-refresh mode when normal mode returns the ``rejected`` token)."""
        async with self._store.refreshing(self.appid) as slot:
            current = slot.current
            if current is not None and current.usable() and current.token != rejected:
                self._token = current
                return current.token
            token, expires_in = await self._fetch(force=False)
            if rejected is not None and token == rejected:
                log.warning("wechat: stable_token returned the refused token; force-refreshing")
                token, expires_in = await self._fetch(force=True)
            self._token = await slot.save(token, expires_in, self._margin)
            log.info("wechat: new access token for %s, valid %d s", self.appid, expires_in)
            return token

    async def _fetch(self, *, force: bool) -> tuple[str, int]:
        self.refreshes += 1
        body = {
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self._secret,
            "force_refresh": force,
        }
        reply = await self._request(STABLE_TOKEN_PATH, None, body, what="stable_token")
        token = reply.get("access_token")
        expires_in = reply.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise WeChatUnavailable("stable_token answered without access_token / expires_in")
        if expires_in <= 0:
            raise WeChatUnavailable(f"stable_token answered expires_in={expires_in}")
        return token, expires_in

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST {base_url}{path}?access_token=…`` with the JSON ``body`` (``GET`` when
        ``body`` is None); returns the decoded answer (``errcode`` 0). Refreshes the token
        and retries once when WeChat refuses it. Raises a ``WeChatError``."""
        token = await self.access_token()
        try:
            return await self._request(path, {**(params or {}), "access_token": token}, body)
        except AccessTokenRejected as exc:
            log.info("wechat: %s refused the access token (errcode %s)", path, exc.errcode)
        token = await self._token_after_rejection(token)
        return await self._request(path, {**(params or {}), "access_token": token}, body)

    async def msg_sec_check(self, *, openid: str, scene: int, content: str) -> SecCheckResult:
        """msgSecCheck v2 of ``content`` (at most 2,500 characters) written by ``openid`` (who
        must have used the mini-program in the last two hours) in ``scene`` (1 profile,
        2 comment, 3 forum, 4 social log). Source:
        https://developers.weixin.qq.com/miniprogram/dev/server/API/sec-center/sec-check/api_msgseccheck.html
        """
        reply = await self.call(
            MSG_SEC_CHECK_PATH,
            {"version": 2, "openid": openid, "scene": scene, "content": content},
        )
        try:
            decoded = msgspec.convert(reply, _SecCheckReply)
        except msgspec.ValidationError as exc:
            raise WeChatUnavailable(f"msgSecCheck answered an unexpected result ({exc})") from exc
        if decoded.result is None:
            raise WeChatUnavailable("msgSecCheck answered without a result")
        if not decoded.result.trace_id and decoded.trace_id:
            return msgspec.structs.replace(decoded.result, trace_id=decoded.trace_id)
        return decoded.result

    async def subscribe_send(self, message: Mapping[str, Any]) -> None:
        """subscribeMessage.send: ``message`` is ``{"touser": openId, "template_id", "page"
        (optional), "data": {"thing1": {"value": …}, …}, "miniprogram_state", "lang"}``.
        Raises a ``WeChatError``: errcode 43101 when the user has no grant left (or
        withdrew it), 47003 a value breaks its rule, 40037 a wrong template id, 41030 a
        wrong page, 40003 a wrong openId. Source:
        https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html
        """
        await self.call(SUBSCRIBE_SEND_PATH, message)

    async def media_check_async(self, *, openid: str, scene: int, media_url: str) -> str:
        """mediaCheckAsync v2 of the picture at ``media_url`` (which WeChat fetches; at most
        10 MB) uploaded by ``openid`` (who must have used the mini-program in the last two
        hours) in ``scene`` (1 profile, 2 comment, 3 forum, 4 social log): ``media_type``
        2 (a picture). Returns the ``trace_id`` the verdict will name when WeChat pushes it
        (``wxa_media_check``, within 30 minutes) to the message push endpoint. Raises a
        ``WeChatError``. Source (frequency limit: 2,000 calls a minute, 200,000 a day):
        https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/sec-center/sec-check/mediaCheckAsync.html
        """
        reply = await self.call(
            MEDIA_CHECK_ASYNC_PATH,
            {
                "media_url": media_url,
                "media_type": 2,
                "version": 2,
                "scene": scene,
                "openid": openid,
            },
        )
        trace_id = reply.get("trace_id")
        if not isinstance(trace_id, str) or not trace_id:
            raise WeChatUnavailable("mediaCheckAsync answered without a trace_id")
        return trace_id

    async def _request(
        self,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        *,
        what: str | None = None,
    ) -> dict[str, Any]:
        """One call with the retries of the login client; errcode ≠ 0 → a ``WeChatError``."""
        last: WeChatError | None = None
        for attempt in range(len(self._backoff) + 1):
            if attempt:
                await self._sleep(self._backoff[attempt - 1])
            try:
                return await self._attempt(path, params, body, what or path)
            except _Retry as retry:
                last = retry.error
                log.warning(
                    "wechat: %s attempt %d failed: %s",
                    what or path,
                    attempt + 1,
                    retry.error.message,
                )
        assert last is not None
        raise last from last.__cause__

    async def _attempt(
        self,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        what: str,
    ) -> dict[str, Any]:
        url = self._base + path
        try:
            if body is None:
                response = await self._http.get(url, params=params)
            else:
                response = await self._http.post(
                    url,
                    params=params,
                    content=msgspec.json.encode(body),
                    headers={"Content-Type": "application/json"},
                )
        except httpx.TimeoutException as exc:
            err = WeChatUnavailable(f"WeChat did not answer {what} in time ({type(exc).__name__})")
            err.__cause__ = exc
            raise _Retry(err) from exc
        except httpx.TransportError as exc:
            err = WeChatUnavailable(
                f"cannot reach WeChat for {what} ({type(exc).__name__}: {redact_secrets(str(exc))})"
            )
            err.__cause__ = exc
            raise _Retry(err) from exc
        if response.status_code >= 500:
            raise _Retry(
                WeChatUnavailable(f"WeChat answered {what} with HTTP {response.status_code}")
            )
        try:
            reply = _json_decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            err = WeChatUnavailable(
                f"WeChat answered {what} with HTTP {response.status_code} and a body that is "
                f"not JSON ({exc})"
            )
            err.__cause__ = exc
            raise _Retry(err) from exc
        errcode = reply.get("errcode") or 0
        if not isinstance(errcode, int):
            raise _Retry(WeChatUnavailable(f"WeChat answered {what} with errcode {errcode!r}"))
        if errcode == 0:
            return reply
        errmsg = str(reply.get("errmsg") or "")
        if path == STABLE_TOKEN_PATH and errcode == 40001:
            raise WeChatConfigError(
                f"stable_token errcode 40001: {redact_secrets(errmsg)} "
                "(LIUDONG_WECHAT_SECRET is not the AppSecret of LIUDONG_WECHAT_APPID)",
                errcode=errcode,
                errmsg=errmsg,
            )
        error = _mapped_error(errcode, errmsg, what)
        if errcode in _BUSY:
            raise _Retry(error)
        raise error


# --------------------------------------------------------------------------- its own thread


class WeChatApiThread:
    """A ``WeChatApi`` on its own event loop, in a daemon thread started here, usable from
    anywhere:

    - ``call(fn, *args, timeout=…, **kwargs)`` from a worker thread blocks until
      ``await fn(*args, **kwargs)`` finished on the client's loop (``TimeoutError`` after
      ``timeout`` seconds, the call cancelled); refused on a thread running an event loop
      (it would block that loop).
    - ``await acall(fn, *args, **kwargs)`` from any other event loop.

    ``fn`` is usually a bound method of ``api`` (e.g. ``api.msg_sec_check``) or a coroutine
    function taking the client. ``close()`` closes the client and stops the thread (a daemon:
    a process that forgot to close it still exits)."""

    def __init__(self, api: WeChatApi) -> None:
        self.api = api
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="liudong-wechat-api", daemon=True
        )
        self._thread.start()

    def call(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("WeChatApiThread.call blocks: call it from a worker thread")
        if self._closed:
            raise RuntimeError("the WeChat API thread is closed")
        coroutine = _with_deadline(timeout, fn(*args, **kwargs))
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def acall(
        self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any, **kwargs: Any
    ) -> T:
        if self._closed:
            raise RuntimeError("the WeChat API thread is closed")
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.call(self.api.aclose, timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            log.warning("wechat: closing the API client failed", exc_info=True)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()


async def _with_deadline(timeout: float | None, coroutine: Coroutine[Any, Any, T]) -> T:
    async with asyncio.timeout(timeout):
        return await coroutine
