"""WeChat login: a mini-program ``wx.login`` code → the user's ``openid`` (and ``unionid``).

Source: WeChat ``auth.code2Session``
https://developers.weixin.qq.com/minigame/dev/api-backend/open-api/login/auth.code2Session.html
(mirror https://mp.weixin.qq.com/debug/wxadoc/dev/OpenApiDoc/user-login/code2Session.html) and
the login guide
https://developers.weixin.qq.com/miniprogram/en/dev/framework/open-ability/login.html: a code
can be used only once, and the server must never send ``session_key`` to the client or expose
it. This module drops ``session_key`` at the boundary: it is never even decoded.

Exception hierarchy (each class has a stable ``code`` string, the WeChat ``errcode`` when one
was returned, and ``retryable``: whether the *mini-program* may retry with a **new** code)::

    WeChatError                 "wechat_error"          any other errcode
    ├── WeChatBusy              "wechat_busy"           -1 (system busy), still after retries
    ├── InvalidCode             "invalid_code"          40029 invalid code, 40163 code already
    │                                                   used; a malformed or dev code refused
    ├── RateLimited             "rate_limited"          45011 (100 calls per user per minute)
    ├── BlockedUser             "blocked_user"          40226 high-risk user, login blocked
    ├── WeChatUnavailable       "wechat_unavailable"    network error, timeout, HTTP 5xx or a
    │                                                   non-JSON answer, still after retries
    └── WeChatConfigError       "wechat_misconfigured"  40013 invalid appid, 40125 invalid
                                                        secret, 41002/41004/41008 missing
                                                        parameter, 40066 invalid URL, or
                                                        appid/secret unset in production

Low-level errors (``httpx`` transport errors, ``msgspec`` decode errors) are translated once,
in ``JsCode2SessionClient._attempt``, with ``raise ... from exc``.

Providers (all implement ``LoginProvider``):

- ``JsCode2SessionClient``: the real call to ``GET {base_url}/sns/jscode2session``.
- ``DevLoginProvider``: ``dev:<name>`` → a stable fake openId (never in production).
- ``StaticLoginProvider``: an in-memory table of code → session or error, for tests.
- ``login_provider_for(settings)`` builds the right one for the environment.

The AppSecret and the ``session_key`` are never logged: the ``httpx`` logger (which logs each
request URL at INFO) gets a filter that masks ``secret`` and ``js_code`` in the URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

import httpx
import msgspec

__all__ = [
    "BlockedUser",
    "DevLoginProvider",
    "InvalidCode",
    "JsCode2SessionClient",
    "LoginProvider",
    "RateLimited",
    "RoutingLoginProvider",
    "StaticLoginProvider",
    "WeChatBusy",
    "WeChatConfigError",
    "WeChatError",
    "WeChatSession",
    "WeChatUnavailable",
    "login_provider_for",
]

CODE2SESSION_DOC = (
    "https://developers.weixin.qq.com/minigame/dev/api-backend/open-api/login/"
    "auth.code2Session.html"
)
DEV_PREFIX = "dev:"

log = logging.getLogger(__name__)


class WeChatSettings(Protocol):
    """The settings this adapter reads (``api.bootstrap.settings.Settings`` has them)."""

    @property
    def wechat_appid(self) -> str: ...
    @property
    def wechat_secret(self) -> str: ...
    @property
    def wechat_base_url(self) -> str: ...
    @property
    def wechat_timeout(self) -> float: ...
    @property
    def dev_login_allowed(self) -> bool: ...


# --------------------------------------------------------------------------- errors


class WeChatError(Exception):
    """A WeChat login failed. ``code``: stable string for API problems; ``errcode``: WeChat's
    ``errcode`` (``None`` when WeChat gave none); ``errmsg``: WeChat's ``errmsg`` (may be "")."""

    code: ClassVar[str] = "wechat_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, errcode: int | None = None, errmsg: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.errcode = errcode
        self.errmsg = errmsg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, errcode={self.errcode!r})"


class WeChatBusy(WeChatError):
    """errcode -1 (system busy) on every attempt. Retry later with a new code."""

    code = "wechat_busy"
    retryable = True


class InvalidCode(WeChatError):
    """The code is not a valid, unused ``wx.login`` code (40029, 40163), or it was refused
    locally (malformed, or a ``dev:`` code where dev login is disabled)."""

    code = "invalid_code"


class RateLimited(WeChatError):
    """errcode 45011: more than 100 calls per user per minute. Retry in the next minute."""

    code = "rate_limited"
    retryable = True


class BlockedUser(WeChatError):
    """errcode 40226: WeChat rates the user high-risk and blocks the mini-program login."""

    code = "blocked_user"


class WeChatUnavailable(WeChatError):
    """WeChat could not be reached or answered garbage (network error, timeout, HTTP 5xx,
    non-JSON body), on every attempt."""

    code = "wechat_unavailable"
    retryable = True


class WeChatConfigError(WeChatError):
    """Our appid/secret/base URL are wrong or missing: an operator problem, not the user's."""

    code = "wechat_misconfigured"


_RETRY_ERRCODES = frozenset({-1})
_ERRCODE_MAP: Mapping[int, type[WeChatError]] = {
    -1: WeChatBusy,
    40029: InvalidCode,
    40163: InvalidCode,
    45011: RateLimited,
    40226: BlockedUser,
    40013: WeChatConfigError,
    40125: WeChatConfigError,
    40066: WeChatConfigError,
    41002: WeChatConfigError,
    41004: WeChatConfigError,
    41008: WeChatConfigError,
}


# --------------------------------------------------------------------------- the session


class WeChatSession(msgspec.Struct, frozen=True, kw_only=True):
    """Who logged in: ``open_id`` (per mini-program) and ``union_id`` (only when the
    mini-program is bound to an Open Platform account, else ``None``).

    Deliberately has no ``session_key`` field: it is dropped at decode time."""

    open_id: str
    union_id: str | None = None


@runtime_checkable
class LoginProvider(Protocol):
    """Turns a ``wx.login`` code into a ``WeChatSession``."""

    async def code_to_session(self, code: str) -> WeChatSession:
        """Exchange ``code`` (single use). Raises a ``WeChatError`` subclass."""
        ...

    async def aclose(self) -> None:
        """Release connections (call once, at shutdown)."""
        ...


# --------------------------------------------------------------------------- the real client


class _Reply(msgspec.Struct):
    """The fields of a jscode2session answer we read. ``session_key`` is *not* a field, so
    msgspec skips it without building a Python string for it."""

    openid: str | None = None
    unionid: str | None = None
    errcode: int = 0
    errmsg: str = ""


_reply_decoder = msgspec.json.Decoder(_Reply)

_SENSITIVE_QUERY = re.compile(r"((?:^|[?&])(?:secret|js_code)=)[^&\s\"']*")


def _redact(text: str) -> str:
    return _SENSITIVE_QUERY.sub(r"\1***", text)


class _RedactQueryFilter(logging.Filter):
    """Masks ``secret=`` and ``js_code=`` in the URLs the ``httpx`` logger prints."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _redact(str(a)) if isinstance(a, httpx.URL | str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


def _install_log_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQueryFilter) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactQueryFilter())


class _RetryableFailure(Exception):
    """Internal: an attempt failed in a way worth retrying. ``maybe_consumed``: the request
    may have reached WeChat (so the single-use code may be spent)."""

    def __init__(self, error: WeChatError, *, maybe_consumed: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.maybe_consumed = maybe_consumed


class JsCode2SessionClient:
    """The production ``LoginProvider``: ``GET {base_url}/sns/jscode2session``.

    ``appid``/``secret``: the mini-program's AppID and AppSecret (both required, else
    ``WeChatConfigError``). ``timeout``: seconds per HTTP attempt (connect + read).
    ``backoff``: seconds to wait before each retry; its length is the number of retries
    (default two retries after 0.1 s and 0.3 s, so at most 3 attempts and about
    ``3 * timeout + 0.4`` s in the worst case). Retried: errcode -1, network errors, timeouts,
    HTTP 5xx, a non-JSON body. Not retried: every other errcode.
    ``transport``: an ``httpx.AsyncBaseTransport`` (tests: ``httpx.MockTransport``).
    ``sleep``: the backoff sleeper (tests may pass a fake).

    Holds one ``httpx.AsyncClient`` (keep-alive to WeChat): use it from one event loop and
    ``await aclose()`` at shutdown (or use ``async with``).

    Source (WeChat ``auth.code2Session``):
    https://developers.weixin.qq.com/minigame/dev/api-backend/open-api/login/auth.code2Session.html
    """

    def __init__(
        self,
        appid: str,
        secret: str,
        *,
        base_url: str = "https://api.weixin.qq.com",
        timeout: float = 5.0,
        backoff: Sequence[float] = (0.1, 0.3),
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not appid or not secret:
            missing = " and ".join(
                n
                for n, v in (("LIUDONG_WECHAT_APPID", appid), ("LIUDONG_WECHAT_SECRET", secret))
                if not v
            )
            raise WeChatConfigError(f"WeChat login needs {missing}")
        self._appid = appid
        self._secret = secret
        self._url = base_url.rstrip("/") + "/sns/jscode2session"
        self._backoff = tuple(backoff)
        self._sleep = sleep
        _install_log_redaction()
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(
        cls, settings: WeChatSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> JsCode2SessionClient:
        """Built from ``wechat_appid``, ``wechat_secret``, ``wechat_base_url`` and
        ``wechat_timeout`` (seconds). Raises ``WeChatConfigError`` if appid/secret are unset."""
        return cls(
            settings.wechat_appid,
            settings.wechat_secret,
            base_url=settings.wechat_base_url,
            timeout=settings.wechat_timeout,
            transport=transport,
        )

    def __repr__(self) -> str:  # never the secret
        return f"JsCode2SessionClient(appid={self._appid!r}, url={self._url!r})"

    async def __aenter__(self) -> JsCode2SessionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def code_to_session(self, code: str) -> WeChatSession:
        """Exchange a ``wx.login`` code for the user's openid/unionid.

        Returns a ``WeChatSession`` (never the ``session_key``). Raises ``InvalidCode`` for an
        empty/over-long code or a ``dev:`` code without a call; otherwise the mapped
        ``WeChatError`` subclass (see the module docstring). A code is single-use: when an
        attempt may have reached WeChat but its answer was lost (read timeout, 5xx) and the
        retry says 40163 "code been used", ``WeChatUnavailable`` is raised instead of
        ``InvalidCode`` (either way the mini-program must call ``wx.login`` again)."""
        _check_code_shape(code)
        if code.startswith(DEV_PREFIX):
            raise InvalidCode(
                "dev:<name> codes are not WeChat codes; dev login is disabled in production"
            )
        maybe_consumed = False
        last: _RetryableFailure | None = None
        for attempt in range(len(self._backoff) + 1):
            if attempt:
                await self._sleep(self._backoff[attempt - 1])
            try:
                return await self._attempt(code)
            except _RetryableFailure as failure:
                last = failure
                maybe_consumed = maybe_consumed or failure.maybe_consumed
                log.warning(
                    "jscode2session attempt %d failed: %s", attempt + 1, failure.error.message
                )
            except InvalidCode as exc:
                if exc.errcode == 40163 and maybe_consumed:
                    raise WeChatUnavailable(
                        "the answer to an earlier attempt was lost and WeChat now says the "
                        "code was used; log in again with a new code",
                        errcode=exc.errcode,
                        errmsg=exc.errmsg,
                    ) from exc
                raise
        assert last is not None
        raise last.error from last.error.__cause__

    async def _attempt(self, code: str) -> WeChatSession:
        """One HTTP call; translates every low-level error exactly once."""
        params = {
            "appid": self._appid,
            "secret": self._secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        try:
            response = await self._http.get(self._url, params=params)
        except httpx.TimeoutException as exc:
            err = WeChatUnavailable(f"WeChat did not answer in time ({type(exc).__name__})")
            err.__cause__ = exc
            # a connect timeout never reached WeChat; a read/write timeout may have
            raise _RetryableFailure(
                err, maybe_consumed=not isinstance(exc, httpx.ConnectTimeout)
            ) from exc
        except httpx.TransportError as exc:
            err = WeChatUnavailable(
                f"cannot reach WeChat ({type(exc).__name__}: {_redact(str(exc))})"
            )
            err.__cause__ = exc
            raise _RetryableFailure(
                err, maybe_consumed=not isinstance(exc, httpx.ConnectError)
            ) from exc
        if response.status_code >= 500:
            err = WeChatUnavailable(f"WeChat answered HTTP {response.status_code}")
            raise _RetryableFailure(err, maybe_consumed=True)
        try:
            # WeChat often says Content-Type: text/plain; the body is JSON regardless.
            reply = _reply_decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            err = WeChatUnavailable(
                f"WeChat answered HTTP {response.status_code} with a body that is not the "
                f"expected JSON ({exc})"
            )
            err.__cause__ = exc
            raise _RetryableFailure(err, maybe_consumed=True) from exc
        if reply.errcode != 0:
            cls = _ERRCODE_MAP.get(reply.errcode, WeChatError)
            mapped: WeChatError = cls(
                f"jscode2session errcode {reply.errcode}: {reply.errmsg}",
                errcode=reply.errcode,
                errmsg=reply.errmsg,
            )
            if reply.errcode in _RETRY_ERRCODES:
                raise _RetryableFailure(mapped, maybe_consumed=False)
            raise mapped
        if not reply.openid:
            raise WeChatUnavailable(
                f"WeChat answered HTTP {response.status_code} without errcode nor openid"
            )
        return WeChatSession(open_id=reply.openid, union_id=reply.unionid or None)


_MAX_CODE_LENGTH = 256


def _check_code_shape(code: object) -> None:
    if not isinstance(code, str) or not code or len(code) > _MAX_CODE_LENGTH:
        raise InvalidCode(f"a login code is a string of 1..{_MAX_CODE_LENGTH} characters")
    if not code.isprintable() or any(c.isspace() for c in code):
        raise InvalidCode("a login code has no whitespace or control characters")


# --------------------------------------------------------------------------- dev mode

_DEV_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class DevLoginProvider:
    """Dev-mode login: code ``dev:<name>`` (name: 1..64 of ``[A-Za-z0-9_.-]``) → openId
    ``"dev-" + sha256("liudong-dev:" + name).hexdigest()[:28]`` (32 characters, stable across
    runs, distinct per name, and never shaped like a real openId). No network.

    Raises ``InvalidCode`` for anything else. Must never be reachable in production: use
    ``login_provider_for`` (see ``Settings.dev_login_allowed``)."""

    @staticmethod
    def open_id_for(name: str) -> str:
        """The fake openId of dev user ``name`` (no validation)."""
        return "dev-" + hashlib.sha256(("liudong-dev:" + name).encode()).hexdigest()[:28]

    async def code_to_session(self, code: str) -> WeChatSession:
        if not isinstance(code, str) or not code.startswith(DEV_PREFIX):
            raise InvalidCode("a dev login code looks like dev:<name>")
        name = code[len(DEV_PREFIX) :]
        if not _DEV_NAME.fullmatch(name):
            raise InvalidCode("a dev login name is 1..64 characters of A-Z a-z 0-9 _ . -")
        return WeChatSession(open_id=self.open_id_for(name), union_id=None)

    async def aclose(self) -> None:
        return None


def default_nickname(code: str, open_id: str) -> str:
    """A new reader's nickname: the name of a ``dev:<name>`` code, else ``读者`` and six hex
    digits of a hash of the openId (stable, and the openId itself never shown)."""
    if code.startswith(DEV_PREFIX):
        return code[len(DEV_PREFIX) :]
    return "读者" + hashlib.sha256(open_id.encode()).hexdigest()[:6]


# --------------------------------------------------------------------------- routing


class RoutingLoginProvider:
    """Sends ``dev:`` codes to ``dev`` and every other code to ``wechat``.

    ``dev=None`` (production): ``dev:`` codes raise ``InvalidCode`` ("dev login is disabled in
    production"). ``wechat=None`` (development without appid/secret): WeChat codes raise
    ``InvalidCode`` saying WeChat login is not configured."""

    def __init__(self, *, wechat: LoginProvider | None, dev: LoginProvider | None) -> None:
        self.wechat = wechat
        self.dev = dev

    async def code_to_session(self, code: str) -> WeChatSession:
        if isinstance(code, str) and code.startswith(DEV_PREFIX):
            if self.dev is None:
                raise InvalidCode("dev login is disabled in production")
            return await self.dev.code_to_session(code)
        if self.wechat is None:
            raise InvalidCode(
                "WeChat login is not configured here (set LIUDONG_WECHAT_APPID and "
                "LIUDONG_WECHAT_SECRET); use a dev:<name> code"
            )
        return await self.wechat.code_to_session(code)

    async def aclose(self) -> None:
        for provider in (self.wechat, self.dev):
            if provider is not None:
                await provider.aclose()


def login_provider_for(
    settings: WeChatSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> LoginProvider:
    """The login provider for ``settings``.

    - production (``not settings.dev_login_allowed``): a ``JsCode2SessionClient``; raises
      ``WeChatConfigError`` when appid or secret is unset. ``dev:`` codes → ``InvalidCode``.
    - otherwise: a ``RoutingLoginProvider``: ``dev:<name>`` → ``DevLoginProvider``; other codes
      → ``JsCode2SessionClient`` when appid and secret are both set, else ``InvalidCode``.
      Raises ``WeChatConfigError`` when only one of appid/secret is set (a typo, surely).

    The caller owns the result: ``await provider.aclose()`` at shutdown."""
    if not settings.dev_login_allowed:
        return JsCode2SessionClient.from_settings(settings, transport=transport)
    appid, secret = settings.wechat_appid, settings.wechat_secret
    if bool(appid) != bool(secret):
        # the client's constructor names the missing variable
        JsCode2SessionClient.from_settings(settings, transport=transport)
    wechat = (
        JsCode2SessionClient.from_settings(settings, transport=transport)
        if appid and secret
        else None
    )
    return RoutingLoginProvider(wechat=wechat, dev=DevLoginProvider())


# --------------------------------------------------------------------------- test double


class StaticLoginProvider:
    """In-memory ``LoginProvider`` for tests of the API: ``answers`` maps a code to the
    ``WeChatSession`` to return or the ``WeChatError`` to raise; unknown codes raise
    ``InvalidCode`` (errcode 40029). Each code works once, like WeChat's (40163 after)."""

    def __init__(self, answers: Mapping[str, WeChatSession | WeChatError]) -> None:
        self._answers = dict(answers)
        self._used: set[str] = set()
        self.calls: list[str] = []

    async def code_to_session(self, code: str) -> WeChatSession:
        self.calls.append(code)
        if code in self._used:
            raise InvalidCode("jscode2session errcode 40163: code been used", errcode=40163)
        answer = self._answers.get(code)
        if answer is None:
            raise InvalidCode("jscode2session errcode 40029: invalid code", errcode=40029)
        if isinstance(answer, WeChatError):
            raise answer
        self._used.add(code)
        return answer

    async def aclose(self) -> None:
        return None
