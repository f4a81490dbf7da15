"""A fake of WeChat's server API on loopback, for the tests and the benchmark.

It serves, over real HTTP on ``127.0.0.1``:

- ``POST /cgi-bin/stable_token``: normal mode returns the current token while it is valid
  (a new one once it expired), ``force_refresh: true`` replaces it (the old one is refused
  from then on); the AppID/AppSecret must match (else 40013 / 40125).
- ``POST /wxa/msg_sec_check?access_token=…``: 40001 for a token it did not issue, revoked or
  expired, 42001 for an expired one; else a verdict from ``rules`` (a substring of the
  content → ``(suggest, label)``; ``pass``/100 otherwise).
- ``POST /cgi-bin/message/subscribe/send?access_token=…`` (subscribeMessage.send): the same
  token checks; 40003 without ``touser``, 40037 for a ``template_id`` not in
  ``subscribe_templates`` (when that is set), 47003 for a value that is empty or breaks its
  key's length rule (thing ≤ 20, name ≤ 10 CJK / 20, phrase ≤ 5, character_string ≤ 32…),
  43101 for a ``touser`` in ``subscribe_refused``; else ok.
- ``POST /wxa/media_check_async?access_token=…``: the same token checks; the body must be
  version 2, ``media_type`` 1 or 2, a scene 1–4, an openid and an http(s) ``media_url``;
  answers a new ``trace_id`` (kept in ``media_checks``: trace id → body). The verdict is
  the test's to push (``media_check_push``), as WeChat pushes it later.

``script[path]`` holds canned answers served before the behaviour above (one per request,
consumed in order): an HTTP status, a raw body, an errcode, a delay. Every request is
recorded (``requests``: path, query, JSON body).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

APPID = "wx1234567890abcdef"
SECRET = "s3cr3t-appsecret-0123456789abcdef"


@dataclass(frozen=True)
class Canned:
    """One scripted answer: ``status`` and ``body`` (or ``errcode``), after ``delay`` s."""

    status: int = 200
    body: bytes | None = None
    errcode: int | None = None
    errmsg: str = "error"
    delay: float = 0.0

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body
        return msgspec.json.encode({"errcode": self.errcode or 0, "errmsg": self.errmsg})


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]


@dataclass
class FakeWeChat:
    appid: str = APPID
    secret: str = SECRET
    expires_in: int = 7200
    base_url: str = ""
    script: dict[str, list[Canned]] = field(default_factory=dict)
    rules: dict[str, tuple[str, int]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    check_delay: float = 0.0
    current: str | None = None
    current_expires: float = 0.0
    media_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """mediaCheckAsync submissions: trace id → request body."""
    refused: set[str] = field(default_factory=set)
    """Tokens msgSecCheck refuses (40001) although stable_token may still hand them out."""
    subscribe_templates: set[str] = field(default_factory=set)
    """Template ids subscribeMessage.send knows (empty: any)."""
    subscribe_refused: set[str] = field(default_factory=set)
    """openIds subscribeMessage.send answers 43101 (no grant left) for."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- inspection -------------------------------------------------------------------------

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r.body for r in self.requests if r.path == path]

    def tokens_used(self, path: str) -> list[str]:
        with self.lock:
            return [r.query.get("access_token", [""])[0] for r in self.requests if r.path == path]

    # -- behaviour --------------------------------------------------------------------------

    def revoke_current(self) -> str:
        """Another system force-refreshed: a new current token, the old one refused."""
        with self.lock:
            if self.current is not None:
                self.refused.add(self.current)
            return self._new_token()

    def _new_token(self) -> str:
        self.current = f"TOKEN-{next(self._serial)}-{'x' * 40}"
        self.current_expires = time.time() + self.expires_in
        return self.current

    def handle(
        self, path: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, bytes, float]:
        try:
            body = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError:
            body = {"<raw>": raw.decode(errors="replace")}
        with self.lock:
            self.requests.append(Request(path, query, body if isinstance(body, dict) else {}))
            canned = self.script.get(path)
            if canned:
                answer = canned.pop(0)
                return answer.status, answer.payload(), answer.delay
            if path == "/cgi-bin/stable_token":
                return 200, self._stable_token(body), 0.0
            if path == "/wxa/msg_sec_check":
                return 200, self._msg_sec_check(query, body), self.check_delay
            if path == SUBSCRIBE_SEND:
                return 200, self._subscribe_send(query, body), 0.0
            if path == "/wxa/media_check_async":
                return 200, self._media_check_async(query, body), 0.0
        return 404, b"not found", 0.0

    def _token_error(self, query: dict[str, list[str]]) -> bytes | None:
        token = query.get("access_token", [""])[0]
        if token == self.current and time.time() >= self.current_expires:
            return _err(42001, "access_token expired")
        if token != self.current or token in self.refused:
            return _err(40001, "invalid credential, access_token is invalid or not latest")
        return None

    def _media_check_async(self, query: dict[str, list[str]], body: dict[str, Any]) -> bytes:
        refused = self._token_error(query)
        if refused is not None:
            return refused
        if body.get("version") != 2 or body.get("scene") not in (1, 2, 3, 4):
            return _err(40129, "invalid scene")
        if body.get("media_type") not in (1, 2):
            return _err(40097, "invalid media_type")
        if not body.get("openid"):
            return _err(40003, "invalid openid")
        if not str(body.get("media_url") or "").startswith(("http://", "https://")):
            return _err(40097, "invalid media_url")
        trace_id = f"media-trace-{next(self._serial)}-{uuid.uuid4().hex[:12]}"
        self.media_checks[trace_id] = body
        return msgspec.json.encode({"errcode": 0, "errmsg": "ok", "trace_id": trace_id})

    def media_check_push(
        self, trace_id: str, suggest: str = "risky", label: int = 20002
    ) -> dict[str, Any]:
        """The ``wxa_media_check`` push (version 2) WeChat sends for ``trace_id``."""
        return {
            "ToUserName": "gh_liudong",
            "FromUserName": "o_wechat_platform",
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "wxa_media_check",
            "appid": self.appid,
            "trace_id": trace_id,
            "version": 2,
            "detail": [
                {"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label}
            ],
            "errcode": 0,
            "errmsg": "ok",
            "result": {"suggest": suggest, "label": label},
        }

    def _stable_token(self, body: dict[str, Any]) -> bytes:
        if body.get("grant_type") != "client_credential":
            return _err(40002, "invalid grant_type")
        if body.get("appid") != self.appid:
            return _err(40013, "invalid appid")
        if body.get("secret") != self.secret:
            return _err(40125, "invalid appsecret")
        if body.get("force_refresh") is True:
            if self.current is not None:
                self.refused.add(self.current)
            self._new_token()
        elif self.current is None or time.time() >= self.current_expires:
            self._new_token()
        remaining = max(1, int(self.current_expires - time.time()))
        return msgspec.json.encode({"access_token": self.current, "expires_in": remaining})

    def _subscribe_send(self, query: dict[str, list[str]], body: dict[str, Any]) -> bytes:
        refused = self._token_error(query)
        if refused is not None:
            return refused
        if not body.get("touser"):
            return _err(40003, "invalid openid")
        if self.subscribe_templates and body.get("template_id") not in self.subscribe_templates:
            return _err(40037, "invalid template_id")
        data = body.get("data")
        if not isinstance(data, dict) or not data:
            return _err(47003, "argument invalid! data is empty")
        for key, value in data.items():
            text = value.get("value") if isinstance(value, dict) else None
            if not isinstance(text, str) or not _fits(key, text):
                return _err(47003, f"argument invalid! data.{key}.value invalid")
        if body["touser"] in self.subscribe_refused:
            return _err(43101, "user refuse to accept the msg")
        return _err(0, "ok")

    def _msg_sec_check(self, query: dict[str, list[str]], body: dict[str, Any]) -> bytes:
        refused = self._token_error(query)
        if refused is not None:
            return refused
        if body.get("version") != 2 or body.get("scene") not in (1, 2, 3, 4):
            return _err(40129, "invalid scene")
        if not body.get("openid"):
            return _err(40003, "invalid openid")
        content = str(body.get("content") or "")
        if not content:
            return _err(44002, "empty content")
        if len(content) > 2500:
            return _err(47001, "content too long")
        suggest, label = "pass", 100
        for needle, (rule_suggest, rule_label) in self.rules.items():
            if needle in content:
                suggest, label = rule_suggest, rule_label
                if suggest == "risky":
                    break
        return msgspec.json.encode(
            {
                "errcode": 0,
                "errmsg": "ok",
                "trace_id": f"trace-{next(self._serial)}",
                "result": {"suggest": suggest, "label": label},
                "detail": [
                    {
                        "strategy": "content_model",
                        "errcode": 0,
                        "suggest": suggest,
                        "label": label,
                        "prob": 90,
                    }
                ],
            }
        )


SUBSCRIBE_SEND = "/cgi-bin/message/subscribe/send"
_LIMITS = {"thing": 20, "character_string": 32, "number": 32, "letter": 32, "symbol": 5}


def _fits(key: str, text: str) -> bool:
    """WeChat's length rules of a subscribe-message value (the subscribeMessage.send page)."""
    rule = key.rstrip("0123456789")
    if not text or any(ord(c) < 32 for c in text):
        return False
    if rule in _LIMITS:
        if rule == "character_string" and any(ord(c) > 126 for c in text):
            return False
        return len(text) <= _LIMITS[rule]
    if rule == "name":
        cjk = any("\u4e00" <= c <= "\u9fff" for c in text)
        return len(text) <= (10 if cjk else 20)
    if rule == "phrase":
        return len(text) <= 5 and all("\u4e00" <= c <= "\u9fff" for c in text)
    return True


def _err(errcode: int, errmsg: str) -> bytes:
    return msgspec.json.encode({"errcode": errcode, "errmsg": errmsg})


@contextmanager
def running_fake_wechat(**kwargs: Any) -> Iterator[FakeWeChat]:
    """A ``FakeWeChat`` served on ``127.0.0.1`` (a free port) until the block ends."""
    fake = FakeWeChat(**kwargs)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like WeChat
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, payload, delay = fake.handle(
                url.path, parse_qs(url.query, keep_blank_values=True), raw
            )
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")  # what WeChat really sends
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        do_GET = _serve  # noqa: N815
        do_POST = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.02},
        name="fake-wechat-api",
        daemon=True,
    )
    thread.start()
    host, port = server.server_address[:2]
    fake.base_url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
