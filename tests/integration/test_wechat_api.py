"""The server API client (``api.adapters.wechat_api``) over real HTTP against the fake WeChat
on loopback (``tests.wechat_fake``), its token shared through the session's PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from api.adapters.wechat import (
    WeChatBusy,
    WeChatConfigError,
    WeChatQuotaExceeded,
    WeChatUnavailable,
)
from api.adapters.wechat_api import (
    AccessTokenRejected,
    MemoryTokenStore,
    PgTokenStore,
    WeChatApi,
    WeChatApiThread,
    refresh_delay,
    seconds_to_beijing_midnight,
)
from tests.wechat_fake import SECRET, Canned, FakeWeChat, running_fake_wechat

CHECK = "/wxa/msg_sec_check"
TOKEN = "/cgi-bin/stable_token"


@pytest.fixture
def wechat() -> Iterator[FakeWeChat]:
    # a distinct AppID per test: the token table is keyed by it
    with running_fake_wechat(appid=f"wx{uuid.uuid4().hex[:16]}") as fake:
        yield fake


def client(
    fake: FakeWeChat, store: object | None = None, *, margin: float = 300.0, timeout: float = 0.3
) -> WeChatApi:
    return WeChatApi(
        fake.appid,
        fake.secret,
        store=store or MemoryTokenStore(),
        base_url=fake.base_url,
        timeout=timeout,
        backoff=(0.01, 0.01),
        margin=margin,
    )


async def check(api: WeChatApi, content: str = "hello") -> str:
    result = await api.msg_sec_check(openid="oUser", scene=2, content=content)
    return result.suggest


# -- the token ---------------------------------------------------------------------------


async def test_one_token_for_many_calls(wechat: FakeWeChat) -> None:
    api = client(wechat)
    try:
        for _ in range(3):
            assert await check(api) == "pass"
    finally:
        await api.aclose()
    assert wechat.count(TOKEN) == 1
    [body] = wechat.bodies(TOKEN)
    assert body == {
        "grant_type": "client_credential",
        "appid": wechat.appid,
        "secret": SECRET,
        "force_refresh": False,
    }
    assert set(wechat.tokens_used(CHECK)) == {wechat.current}
    [sent] = wechat.bodies(CHECK)[:1]
    assert sent == {"version": 2, "openid": "oUser", "scene": 2, "content": "hello"}


async def test_nodes_share_the_token_through_postgres(
    wechat: FakeWeChat, database_url: str
) -> None:
    first, second = (
        client(wechat, PgTokenStore(database_url, node="a")),
        client(wechat, PgTokenStore(database_url, node="b")),
    )
    try:
        await check(first)
        await check(second)
    finally:
        await first.aclose()
        await second.aclose()
    assert wechat.count(TOKEN) == 1
    assert (first.refreshes, second.refreshes) == (1, 0)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT access_token, refreshed_by, expires_at > now() + interval '7000 s' "
            "FROM wechat_access_token WHERE appid = %s",
            (wechat.appid,),
        ).fetchone()
    assert row == (wechat.current, "a", True)


async def test_concurrent_nodes_refresh_once(wechat: FakeWeChat, database_url: str) -> None:
    """Eight 'nodes' (own client, own connection) wanting a token at once: one calls WeChat,
    the others wait on the advisory lock and read its row."""
    apis = [client(wechat, PgTokenStore(database_url, node=f"n{i}")) for i in range(8)]
    try:
        tokens = await asyncio.gather(*(api.access_token() for api in apis))
    finally:
        for api in apis:
            await api.aclose()
    assert len(set(tokens)) == 1
    assert wechat.count(TOKEN) == 1
    assert sum(api.refreshes for api in apis) == 1


async def test_concurrent_calls_in_one_process_refresh_once(wechat: FakeWeChat) -> None:
    api = client(wechat)
    try:
        results = await asyncio.gather(*(check(api) for _ in range(20)))
    finally:
        await api.aclose()
    assert results == ["pass"] * 20
    assert wechat.count(TOKEN) == 1


async def test_refreshed_before_it_expires(wechat: FakeWeChat) -> None:
    """expires_in 3 s, margin 2 s: used as is for the first second, then refreshed (WeChat's
    normal mode may hand out the same token until it expires) — never a refresh per call."""
    wechat.expires_in = 3
    api = client(wechat, margin=2.0)
    try:
        await check(api)
        await check(api)
        assert wechat.count(TOKEN) == 1
        await asyncio.sleep(1.2)
        await check(api)
        assert wechat.count(TOKEN) == 2
        await check(api)
        assert wechat.count(TOKEN) == 2  # the next refresh is due in ~0.9 s, not now
    finally:
        await api.aclose()


async def test_a_row_due_for_refresh_is_refreshed_by_the_next_node(
    wechat: FakeWeChat, database_url: str
) -> None:
    first = client(wechat, PgTokenStore(database_url))
    await check(first)
    await first.aclose()
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE wechat_access_token SET refresh_after = now() - interval '1 s' "
            "WHERE appid = %s",
            (wechat.appid,),
        )
    second = client(wechat, PgTokenStore(database_url))
    try:
        await check(second)
    finally:
        await second.aclose()
    assert wechat.count(TOKEN) == 2


def test_refresh_delay() -> None:
    assert refresh_delay(7200, 300) == 6900
    assert refresh_delay(200, 300) == 60  # a short-lived token: a minute, not every call
    assert refresh_delay(40, 300) == 20


# -- a refused token: refreshed once, the call retried once ------------------------------------


async def test_invalid_token_is_refreshed_once_and_the_call_retried(wechat: FakeWeChat) -> None:
    api = client(wechat)
    try:
        await check(api)
        first = wechat.current
        second = wechat.revoke_current()  # someone else force-refreshed: ours is refused
        assert await check(api) == "pass"
        assert await check(api) == "pass"
    finally:
        await api.aclose()
    assert wechat.tokens_used(CHECK) == [first, first, second, second]
    assert [b["force_refresh"] for b in wechat.bodies(TOKEN)] == [False, False]


async def test_refused_token_that_normal_mode_still_returns_is_force_refreshed(
    wechat: FakeWeChat,
) -> None:
    api = client(wechat)
    try:
        await check(api)
        first = wechat.current
        assert first is not None
        wechat.refused.add(first)
        assert await check(api) == "pass"
    finally:
        await api.aclose()
    assert [b["force_refresh"] for b in wechat.bodies(TOKEN)] == [False, False, True]
    assert wechat.tokens_used(CHECK)[-1] == wechat.current != first


async def test_expired_token_42001_is_refreshed(wechat: FakeWeChat) -> None:
    api = client(wechat)
    try:
        await check(api)
        wechat.current_expires = time.time() - 1  # WeChat says expired before we thought
        assert await check(api) == "pass"
    finally:
        await api.aclose()
    assert wechat.count(TOKEN) == 2
    assert wechat.count(CHECK) == 3


async def test_a_second_refusal_is_raised_not_looped(wechat: FakeWeChat) -> None:
    api = client(wechat)
    try:
        await api.access_token()
        wechat.script[CHECK] = [Canned(errcode=40001), Canned(errcode=40001)]
        with pytest.raises(AccessTokenRejected) as caught:
            await check(api)
    finally:
        await api.aclose()
    assert caught.value.errcode == 40001
    assert wechat.count(CHECK) == 2
    # normal mode handed back the refused token, so it was force-refreshed; no third call
    assert [b["force_refresh"] for b in wechat.bodies(TOKEN)] == [False, False, True]


async def test_refresh_after_refusal_by_another_node_adopts_its_token(
    wechat: FakeWeChat, database_url: str
) -> None:
    """Node A's token is refused; node B already saved a new one: A adopts it from the table
    instead of calling stable_token."""
    a = client(wechat, PgTokenStore(database_url, node="a"))
    b = client(wechat, PgTokenStore(database_url, node="b"))
    try:
        await check(a)
        old = wechat.current
        wechat.revoke_current()
        with psycopg.connect(database_url) as conn:  # as if node b had refreshed it
            conn.execute(
                "UPDATE wechat_access_token SET access_token = %s WHERE appid = %s",
                (wechat.current, wechat.appid),
            )
        assert await check(a) == "pass"
        assert await check(b) == "pass"
    finally:
        await a.aclose()
        await b.aclose()
    assert wechat.count(TOKEN) == 1
    assert wechat.tokens_used(CHECK) == [old, old, wechat.current, wechat.current]


# -- errors ------------------------------------------------------------------------------------


async def test_busy_is_retried_with_backoff(wechat: FakeWeChat) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    api = WeChatApi(
        wechat.appid,
        wechat.secret,
        store=MemoryTokenStore(),
        base_url=wechat.base_url,
        timeout=0.3,
        backoff=(0.1, 0.3),
        sleep=fake_sleep,
    )
    try:
        await api.access_token()
        wechat.script[CHECK] = [Canned(errcode=-1), Canned(errcode=-1)]
        assert await check(api) == "pass"
        assert waits == [0.1, 0.3]
        wechat.script[CHECK] = [Canned(errcode=-1)] * 3
        with pytest.raises(WeChatBusy) as caught:
            await check(api)
    finally:
        await api.aclose()
    assert caught.value.errcode == -1
    assert wechat.count(CHECK) == 6


@pytest.mark.parametrize(("errcode", "retry_after_max"), [(45011, 60), (45009, 86401)])
async def test_quota_exceeded_is_not_retried(
    wechat: FakeWeChat, errcode: int, retry_after_max: int
) -> None:
    api = client(wechat)
    try:
        await api.access_token()
        wechat.script[CHECK] = [Canned(errcode=errcode, errmsg="reach max api daily quota limit")]
        with pytest.raises(WeChatQuotaExceeded) as caught:
            await check(api)
    finally:
        await api.aclose()
    assert caught.value.code == "wechat_quota_exceeded"
    assert caught.value.errcode == errcode
    assert 1 <= caught.value.retry_after <= retry_after_max
    assert wechat.count(CHECK) == 1


def test_daily_quota_resets_at_beijing_midnight() -> None:
    # 2024-05-01 23:59:00 in Beijing = 15:59:00 UTC
    assert seconds_to_beijing_midnight(1714579140.0) == 61


@pytest.mark.parametrize(
    ("appid", "secret", "errcode"),
    [("wrong", SECRET, 40013), (None, "wrong-secret", 40125)],
)
async def test_bad_credentials_are_a_config_error(
    wechat: FakeWeChat, appid: str | None, secret: str, errcode: int
) -> None:
    api = WeChatApi(
        appid or wechat.appid,
        secret,
        store=MemoryTokenStore(),
        base_url=wechat.base_url,
        timeout=0.3,
        backoff=(0.01,),
    )
    try:
        with pytest.raises(WeChatConfigError) as caught:
            await api.check_credentials()
    finally:
        await api.aclose()
    assert caught.value.errcode == errcode
    assert "LIUDONG_WECHAT_APPID" in str(caught.value)
    assert wechat.count(TOKEN) == 1  # not retried


async def test_40001_from_stable_token_itself_is_a_config_error(wechat: FakeWeChat) -> None:
    wechat.script[TOKEN] = [Canned(errcode=40001, errmsg="invalid credential")]
    api = client(wechat)
    try:
        with pytest.raises(WeChatConfigError, match="LIUDONG_WECHAT_SECRET"):
            await api.check_credentials()
    finally:
        await api.aclose()


async def test_ip_not_whitelisted_is_a_config_error(wechat: FakeWeChat) -> None:
    wechat.script[TOKEN] = [Canned(errcode=40164, errmsg="invalid ip 1.2.3.4, not in whitelist")]
    api = client(wechat)
    try:
        with pytest.raises(WeChatConfigError, match="whitelist"):
            await api.access_token()
    finally:
        await api.aclose()


def test_missing_appid_or_secret_is_refused_at_construction() -> None:
    with pytest.raises(WeChatConfigError, match="LIUDONG_WECHAT_SECRET"):
        WeChatApi("wxappid", "", store=MemoryTokenStore())


async def test_timeouts_are_retried_then_unavailable(wechat: FakeWeChat) -> None:
    api = client(wechat, timeout=0.2)
    try:
        await api.access_token()
        wechat.check_delay = 1.0
        started = time.monotonic()
        with pytest.raises(WeChatUnavailable) as caught:
            await check(api)
        assert time.monotonic() - started < 3 * 0.2 + 0.02 + 1.0
    finally:
        await api.aclose()
    assert "in time" in str(caught.value)
    assert wechat.count(CHECK) == 3


async def test_http_5xx_and_garbage_are_retried(wechat: FakeWeChat) -> None:
    api = client(wechat)
    try:
        await api.access_token()
        wechat.script[CHECK] = [
            Canned(status=502, body=b"bad gateway"),
            Canned(body=b"<html>oops</html>"),
        ]
        assert await check(api) == "pass"
        wechat.script[TOKEN] = [Canned(status=503, body=b"")] * 3
        wechat.revoke_current()
        with pytest.raises(WeChatUnavailable):
            await check(api)
    finally:
        await api.aclose()
    assert wechat.count(CHECK) == 4


async def test_verdicts_and_labels(wechat: FakeWeChat) -> None:
    wechat.rules = {"加微信": ("review", 10001), "傻": ("risky", 20003)}
    api = client(wechat)
    try:
        review = await api.msg_sec_check(openid="o", scene=4, content="加微信聊")
        risky = await api.msg_sec_check(openid="o", scene=4, content="你个傻子")
    finally:
        await api.aclose()
    assert (review.suggest, review.label) == ("review", 10001)
    assert (risky.suggest, risky.label) == ("risky", 20003)
    assert risky.trace_id.startswith("trace-")


async def test_secret_and_token_are_never_logged(
    wechat: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = client(wechat)
    try:
        await check(api)
        wechat.revoke_current()
        await check(api)
        wechat.script[CHECK] = [Canned(status=500, body=b"")] * 3
        with pytest.raises(WeChatUnavailable) as caught:
            await check(api)
        assert SECRET not in repr(api)
    finally:
        await api.aclose()
    assert "msg_sec_check" in caplog.text  # httpx did log the requests…
    assert "access_token=***" in caplog.text  # …with the token masked
    for token in {*wechat.tokens_used(CHECK)}:
        assert token not in caplog.text
        assert token not in f"{caught.value!s} {caught.value!r}"
    assert SECRET not in caplog.text


# -- on its own thread ---------------------------------------------------------------------------


def test_thread_serves_worker_threads_and_other_loops(wechat: FakeWeChat) -> None:
    runner = WeChatApiThread(client(wechat))
    try:
        results: list[str] = []

        def worker() -> None:
            results.append(runner.call(_check, runner.api, timeout=2.0))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == ["pass"] * 4

        async def from_another_loop() -> str:
            return await runner.acall(_check, runner.api)

        assert asyncio.run(from_another_loop()) == "pass"
        assert wechat.count(TOKEN) == 1

        wechat.check_delay = 1.0
        with pytest.raises(TimeoutError):
            runner.call(_check, runner.api, timeout=0.1)
    finally:
        runner.close()


async def test_thread_refuses_a_blocking_call_on_an_event_loop(wechat: FakeWeChat) -> None:
    runner = WeChatApiThread(client(wechat))
    try:
        with pytest.raises(RuntimeError, match="worker thread"):
            runner.call(_check, runner.api)
    finally:
        await asyncio.to_thread(runner.close)


async def _check(api: WeChatApi) -> str:
    return await check(api)
