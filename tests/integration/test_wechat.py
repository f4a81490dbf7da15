"""The jscode2session client through real HTTP, against a fake WeChat server on 127.0.0.1.

The fake serves ``GET /sns/jscode2session`` with answers scripted per ``js_code`` (one answer
per request, the last one repeating) and records every request it receives.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from api.adapters.wechat import (
    BlockedUser,
    InvalidCode,
    JsCode2SessionClient,
    RateLimited,
    RoutingLoginProvider,
    WeChatBusy,
    WeChatConfigError,
    WeChatError,
    WeChatSession,
    WeChatUnavailable,
    login_provider_for,
)
from api.bootstrap.settings import Settings

APPID = "wx1234567890abcdef"
SECRET = "s3cr3t-appsecret-0123456789abcdef"
SESSION_KEY = "SESSIONKEY+tiwj1xP4Kq3Ww3jCg=="
TIMEOUT = 0.3  # seconds per attempt in these tests


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"  # what WeChat really sends
    delay: float = 0.0


def ok(openid: str, unionid: str | None = None) -> Answer:
    body: dict[str, object] = {"openid": openid, "session_key": SESSION_KEY}
    if unionid is not None:
        body["unionid"] = unionid
    return Answer(body=msgspec.json.encode(body))


def err(errcode: int, errmsg: str = "error") -> Answer:
    return Answer(body=msgspec.json.encode({"errcode": errcode, "errmsg": errmsg}))


@dataclass
class FakeWeChat:
    """Scripted answers per js_code; records (path, query) of every request."""

    script: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self, path: str, query: dict[str, list[str]]) -> Answer:
        with self.lock:
            self.requests.append((path, query))
            if path != "/sns/jscode2session":
                return Answer(status=404, body=b"not found")
            code = query.get("js_code", [""])[0]
            answers = self.script.get(code)
            if not answers:
                return err(40029, "invalid code")
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def count(self, code: str) -> int:
        with self.lock:
            return sum(1 for _, q in self.requests if q.get("js_code") == [code])


@pytest.fixture
def wechat() -> Iterator[FakeWeChat]:
    fake = FakeWeChat()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            answer = fake.next_answer(url.path, parse_qs(url.query, keep_blank_values=True))
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-wechat", daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    fake.base_url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client_for(fake: FakeWeChat, **kwargs: object) -> JsCode2SessionClient:
    return JsCode2SessionClient(
        APPID,
        SECRET,
        base_url=fake.base_url,
        timeout=TIMEOUT,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_success_returns_openid_and_sends_the_documented_query(wechat: FakeWeChat) -> None:
    wechat.script["code-ok"] = [ok("oUser-1", unionid="uUnion-1")]
    async with client_for(wechat) as client:
        session = await client.code_to_session("code-ok")
    assert session == WeChatSession(open_id="oUser-1", union_id="uUnion-1")
    [(path, query)] = wechat.requests
    assert path == "/sns/jscode2session"
    assert query == {
        "appid": [APPID],
        "secret": [SECRET],
        "js_code": ["code-ok"],
        "grant_type": ["authorization_code"],
    }


async def test_unionid_is_optional(wechat: FakeWeChat) -> None:
    wechat.script["code-ok"] = [ok("oUser-2")]
    async with client_for(wechat) as client:
        assert await client.code_to_session("code-ok") == WeChatSession(
            open_id="oUser-2", union_id=None
        )


async def test_session_key_is_never_returned(wechat: FakeWeChat) -> None:
    wechat.script["code-ok"] = [ok("oUser-3", unionid="uUnion-3")]
    async with client_for(wechat) as client:
        session = await client.code_to_session("code-ok")
    assert set(WeChatSession.__struct_fields__) == {"open_id", "union_id"}
    assert not hasattr(session, "session_key")
    for rendering in (
        repr(session),
        str(session),
        msgspec.json.encode(session).decode(),
        str(msgspec.structs.asdict(session)),
    ):
        assert SESSION_KEY not in rendering
        assert "session_key" not in rendering


async def test_busy_once_is_retried_then_succeeds(wechat: FakeWeChat) -> None:
    wechat.script["busy-once"] = [err(-1, "system error"), ok("oUser-4")]
    async with client_for(wechat) as client:
        session = await client.code_to_session("busy-once")
    assert session.open_id == "oUser-4"
    assert wechat.count("busy-once") == 2


async def test_busy_always_gives_up_after_three_attempts(wechat: FakeWeChat) -> None:
    wechat.script["busy"] = [err(-1, "system error")]
    async with client_for(wechat) as client:
        with pytest.raises(WeChatBusy) as caught:
            await client.code_to_session("busy")
    assert caught.value.errcode == -1
    assert caught.value.code == "wechat_busy"
    assert caught.value.retryable
    assert wechat.count("busy") == 3


async def test_backoff_waits_before_each_retry(wechat: FakeWeChat) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    wechat.script["busy"] = [err(-1)]
    async with client_for(wechat, sleep=fake_sleep) as client:
        with pytest.raises(WeChatBusy):
            await client.code_to_session("busy")
    assert waits == [0.1, 0.3]


@pytest.mark.parametrize(
    ("errcode", "exc_type", "code"),
    [
        (40029, InvalidCode, "invalid_code"),
        (40163, InvalidCode, "invalid_code"),
        (45011, RateLimited, "rate_limited"),
        (40226, BlockedUser, "blocked_user"),
        (40013, WeChatConfigError, "wechat_misconfigured"),
        (40125, WeChatConfigError, "wechat_misconfigured"),
        (41002, WeChatConfigError, "wechat_misconfigured"),
        (41004, WeChatConfigError, "wechat_misconfigured"),
        (41008, WeChatConfigError, "wechat_misconfigured"),
        (99999, WeChatError, "wechat_error"),
    ],
)
async def test_errcodes_are_mapped_and_not_retried(
    wechat: FakeWeChat, errcode: int, exc_type: type[WeChatError], code: str
) -> None:
    wechat.script["c"] = [err(errcode, f"errmsg {errcode}")]
    async with client_for(wechat) as client:
        with pytest.raises(WeChatError) as caught:
            await client.code_to_session("c")
    assert type(caught.value) is exc_type
    assert caught.value.code == code
    assert caught.value.errcode == errcode
    assert caught.value.errmsg == f"errmsg {errcode}"
    assert wechat.count("c") == 1


async def test_invalid_code_is_not_retried(wechat: FakeWeChat) -> None:
    wechat.script["bad"] = [err(40029, "invalid code"), ok("never")]
    async with client_for(wechat) as client:
        with pytest.raises(InvalidCode):
            await client.code_to_session("bad")
    assert wechat.count("bad") == 1


async def test_timeout_is_retried_then_unavailable(wechat: FakeWeChat) -> None:
    wechat.script["slow"] = [Answer(body=msgspec.json.encode({"openid": "o"}), delay=2.0)]
    started = time.monotonic()
    async with client_for(wechat) as client:
        with pytest.raises(WeChatUnavailable) as caught:
            await client.code_to_session("slow")
    elapsed = time.monotonic() - started
    assert caught.value.code == "wechat_unavailable"
    assert caught.value.errcode is None
    assert elapsed < 3 * TIMEOUT + 0.4 + 1.0  # three attempts, not the server's 3 × 2 s
    deadline = time.monotonic() + 2
    while wechat.count("slow") < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert wechat.count("slow") == 3


async def test_timeout_once_then_success(wechat: FakeWeChat) -> None:
    wechat.script["slow-once"] = [Answer(body=b"{}", delay=2.0), ok("oUser-5")]
    async with client_for(wechat) as client:
        assert (await client.code_to_session("slow-once")).open_id == "oUser-5"
    assert wechat.count("slow-once") == 2


async def test_lost_answer_then_code_used_is_unavailable_not_invalid(wechat: FakeWeChat) -> None:
    # WeChat consumed the code but its answer timed out; the retry hears "code been used".
    wechat.script["lost"] = [Answer(body=b"{}", delay=2.0), err(40163, "code been used")]
    async with client_for(wechat) as client:
        with pytest.raises(WeChatUnavailable) as caught:
            await client.code_to_session("lost")
    assert caught.value.errcode == 40163
    assert wechat.count("lost") == 2


async def test_non_json_body_is_unavailable(wechat: FakeWeChat) -> None:
    wechat.script["html"] = [Answer(body=b"<html>502 Bad Gateway</html>", content_type="text/html")]
    async with client_for(wechat) as client:
        with pytest.raises(WeChatUnavailable):
            await client.code_to_session("html")
    assert wechat.count("html") == 3


async def test_http_5xx_is_retried(wechat: FakeWeChat) -> None:
    wechat.script["5xx-once"] = [Answer(status=502, body=b"bad gateway"), ok("oUser-6")]
    wechat.script["5xx"] = [Answer(status=503, body=b"unavailable")]
    async with client_for(wechat) as client:
        assert (await client.code_to_session("5xx-once")).open_id == "oUser-6"
        with pytest.raises(WeChatUnavailable):
            await client.code_to_session("5xx")
    assert wechat.count("5xx-once") == 2
    assert wechat.count("5xx") == 3


async def test_json_content_type_works_too(wechat: FakeWeChat) -> None:
    answer = ok("oUser-7")
    wechat.script["json"] = [Answer(body=answer.body, content_type="application/json")]
    async with client_for(wechat) as client:
        assert (await client.code_to_session("json")).open_id == "oUser-7"


async def test_success_without_openid_is_unavailable(wechat: FakeWeChat) -> None:
    wechat.script["empty"] = [Answer(body=b'{"errcode": 0, "errmsg": "ok"}')]
    async with client_for(wechat) as client:
        with pytest.raises(WeChatUnavailable):
            await client.code_to_session("empty")


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the client connects
    async with JsCode2SessionClient(
        APPID, SECRET, base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT, backoff=(0.01,)
    ) as client:
        with pytest.raises(WeChatUnavailable) as caught:
            await client.code_to_session("any")
    assert isinstance(caught.value.__cause__, Exception)


async def test_malformed_and_dev_codes_never_reach_wechat(wechat: FakeWeChat) -> None:
    async with client_for(wechat) as client:
        for code in ("", "a b", "x" * 300, "line\nbreak"):
            with pytest.raises(InvalidCode):
                await client.code_to_session(code)
        with pytest.raises(InvalidCode, match="disabled in production"):
            await client.code_to_session("dev:alice")
    assert wechat.requests == []


async def test_secret_and_code_are_never_logged(
    wechat: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wechat.script["code-log-ok"] = [ok("oUser-8")]
    wechat.script["code-log-busy"] = [err(-1)]
    wechat.script["code-log-slow"] = [Answer(body=b"{}", delay=2.0)]
    errors: list[WeChatError] = []
    async with client_for(wechat, backoff=(0.01, 0.01)) as client:
        await client.code_to_session("code-log-ok")
        for code in ("code-log-busy", "code-log-slow"):
            with pytest.raises(WeChatError) as caught:
                await client.code_to_session(code)
            errors.append(caught.value)
        assert SECRET not in repr(client)
    assert "jscode2session" in caplog.text  # httpx did log the requests…
    assert SECRET not in caplog.text  # …without the secret
    assert SESSION_KEY not in caplog.text
    for code in ("code-log-ok", "code-log-busy", "code-log-slow"):
        assert f"js_code={code}" not in caplog.text
    for error in errors:
        assert SECRET not in f"{error!s} {error!r} {error.__cause__!s} {error.__cause__!r}"


async def test_login_provider_for_production_calls_the_configured_base_url(
    wechat: FakeWeChat,
) -> None:
    wechat.script["prod-code"] = [ok("oUser-9")]
    settings = Settings(
        env="production",
        wechat_appid=APPID,
        wechat_secret=SECRET,
        wechat_base_url=wechat.base_url,
        wechat_timeout=TIMEOUT,
    )
    provider = login_provider_for(settings)
    try:
        assert isinstance(provider, JsCode2SessionClient)
        assert (await provider.code_to_session("prod-code")).open_id == "oUser-9"
        with pytest.raises(InvalidCode, match="dev login is disabled in production"):
            await provider.code_to_session("dev:alice")
    finally:
        await provider.aclose()
    assert wechat.count("prod-code") == 1
    assert len(wechat.requests) == 1


async def test_login_provider_for_development_routes_by_code(wechat: FakeWeChat) -> None:
    wechat.script["real-code"] = [ok("oUser-10")]
    settings = Settings(
        env="development",
        wechat_appid=APPID,
        wechat_secret=SECRET,
        wechat_base_url=wechat.base_url,
        wechat_timeout=TIMEOUT,
    )
    provider = login_provider_for(settings)
    try:
        assert isinstance(provider, RoutingLoginProvider)
        assert (await provider.code_to_session("real-code")).open_id == "oUser-10"
        dev = await provider.code_to_session("dev:alice")
        assert dev.open_id.startswith("dev-")
    finally:
        await provider.aclose()
    assert [q["js_code"] for _, q in wechat.requests] == [["real-code"]]
