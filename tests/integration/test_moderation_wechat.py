"""The WeChat content check (msgSecCheck v2) against the fake WeChat on loopback, the flags
and openIds in PostgreSQL, and the production start-up check of the credentials."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg_pool import ConnectionPool

from api.adapters.moderation import FlagStore, Moderator, WeChatContentCheck
from api.adapters.openids import OpenIdDirectory
from api.adapters.wechat import WeChatConfigError
from api.adapters.wechat_api import MemoryTokenStore, WeChatApi, WeChatApiThread
from api.bootstrap.container import Container
from api.bootstrap.db import make_pool
from api.bootstrap.settings import Settings
from domain.moderation import (
    ContentCheckUnavailable,
    ContentFlagged,
    ContentRejected,
    Scene,
    Verdict,
)
from tests.wechat_fake import Canned, FakeWeChat, running_fake_wechat

CHECK = "/wxa/msg_sec_check"
OPENID = "oWriter-123"


@pytest.fixture
def wechat() -> Iterator[FakeWeChat]:
    with running_fake_wechat(appid=f"wx{uuid.uuid4().hex[:16]}") as fake:
        fake.rules = {"加微信": ("review", 10001), "坏话": ("risky", 20003)}
        yield fake


@pytest.fixture
def runner(wechat: FakeWeChat) -> Iterator[WeChatApiThread]:
    api = WeChatApi(
        wechat.appid,
        wechat.secret,
        store=MemoryTokenStore(),
        base_url=wechat.base_url,
        timeout=0.3,
        backoff=(0.01, 0.01),
    )
    thread = WeChatApiThread(api)
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def pool(database_url: str) -> Iterator[ConnectionPool[Any]]:
    pool = make_pool(database_url, size=2)
    yield pool
    pool.close()


def checker(
    runner: WeChatApiThread, known: dict[UUID, str], timeout: float = 2.0
) -> WeChatContentCheck:
    return WeChatContentCheck(runner, known.get, timeout=timeout)


def test_verdicts_of_msg_sec_check(wechat: FakeWeChat, runner: WeChatApiThread) -> None:
    author = uuid4()
    check = checker(runner, {author: OPENID})
    verdicts = check.check(["你好", "加微信聊", "说坏话"], Scene.COMMENT, author)
    assert verdicts == [Verdict(), Verdict("review", "ad"), Verdict("reject", "abuse")]
    bodies = wechat.bodies(CHECK)
    assert {b["content"] for b in bodies} == {"你好", "加微信聊", "说坏话"}
    assert all(b["openid"] == OPENID and b["scene"] == 2 and b["version"] == 2 for b in bodies)


def test_a_long_text_is_checked_in_chunks(wechat: FakeWeChat, runner: WeChatApiThread) -> None:
    author = uuid4()
    text = "好" * 4000 + "坏话" + "好" * 990  # 4,992 characters: three chunks
    [verdict] = checker(runner, {author: OPENID}).check([text], Scene.FORUM, author)
    assert verdict == Verdict("reject", "abuse")
    contents = [b["content"] for b in wechat.bodies(CHECK)]
    assert sorted(len(c) for c in contents) == [192, 2500, 2500]
    # the word straddling the boundary of the 2nd and 3rd chunk is seen by one of them
    assert any("坏话" in c for c in contents)


def test_a_word_on_a_chunk_boundary_is_not_missed(
    wechat: FakeWeChat, runner: WeChatApiThread
) -> None:
    author = uuid4()
    text = "好" * 2499 + "坏话" + "好" * 100  # "坏" ends chunk 1, "话" starts… chunk 2 overlaps
    [verdict] = checker(runner, {author: OPENID}).check([text], Scene.FORUM, author)
    assert verdict.suggest == "reject"


def test_no_openid_means_no_verdict(wechat: FakeWeChat, runner: WeChatApiThread) -> None:
    with pytest.raises(ContentCheckUnavailable, match="openId"):
        checker(runner, {}).check(["hi"], Scene.PROFILE, uuid4())
    assert wechat.count(CHECK) == 0


def test_wechat_failures_mean_no_verdict(wechat: FakeWeChat, runner: WeChatApiThread) -> None:
    author = uuid4()
    check = checker(runner, {author: OPENID})
    wechat.script[CHECK] = [Canned(status=502, body=b"")] * 3
    with pytest.raises(ContentCheckUnavailable, match="msgSecCheck failed"):
        check.check(["hi"], Scene.COMMENT, author)
    wechat.script[CHECK] = [Canned(errcode=45009, errmsg="reach max api daily quota limit")]
    with pytest.raises(ContentCheckUnavailable) as caught:
        check.check(["hi"], Scene.COMMENT, author)
    assert caught.value.retry_after > 60


def test_a_slow_wechat_is_given_up_on_time(wechat: FakeWeChat, runner: WeChatApiThread) -> None:
    author = uuid4()
    check = checker(runner, {author: OPENID}, timeout=0.2)
    runner.call(runner.api.access_token)
    wechat.check_delay = 1.0
    with pytest.raises(ContentCheckUnavailable, match="within 0.2 s"):
        check.check(["hi"], Scene.SOCIAL_LOG, author)


def test_review_verdicts_are_flagged_in_postgres(
    wechat: FakeWeChat, runner: WeChatApiThread, pool: ConnectionPool[Any]
) -> None:
    author = uuid4()
    flags = FlagStore(pool)
    moderator = Moderator(checker(runner, {author: OPENID}), flags)
    with pytest.raises(ContentRejected):
        moderator.check_texts(author, {"note": "说坏话"}, Scene.COMMENT, subject="book:1")
    assert moderator.check_texts(
        author, {"note": "加微信"}, Scene.COMMENT, subject="book:2"
    ) == Verdict("review", "ad")
    mine = [f for f in flags.list(limit=100) if f["reader_id"] == author]
    assert [
        (f["field"], f["subject"], f["label"], f["provider"], f["text"], f["scene"]) for f in mine
    ] == [("note", "book:2", "ad", "wechat", "加微信", 2)]
    assert flags.resolve(mine[0]["id"], by="ops") is True
    assert flags.resolve(mine[0]["id"], by="ops") is False
    assert all(f["reader_id"] != author for f in flags.list(limit=100))
    resolved = [f for f in flags.list(include_resolved=True, limit=100) if f["reader_id"] == author]
    assert resolved[0]["resolved_by"] == "ops"


def test_flag_record_round_trip(pool: ConnectionPool[Any]) -> None:
    flags, author = FlagStore(pool), uuid4()
    flag = ContentFlagged(
        reader_id=author,
        scene=Scene.PROFILE,
        field="nickname",
        text="脑残",
        label="abuse",
        provider="local",
    )
    flag_id = flags.record(flag)
    [row] = [f for f in flags.list() if f["id"] == flag_id]
    assert row["subject"] is None and row["resolved_at"] is None


def test_openids_are_remembered(pool: ConnectionPool[Any]) -> None:
    directory = OpenIdDirectory(pool)
    reader = uuid4()
    assert directory.open_id(reader) is None
    directory.remember(reader, "oA")
    assert directory.open_id(reader) == "oA"
    assert OpenIdDirectory(pool).open_id(reader) == "oA"  # from the table, not the cache


def test_production_refuses_to_start_with_credentials_wechat_refuses(
    wechat: FakeWeChat, database_url: str, tmp_path: Any
) -> None:
    settings = Settings(
        env="production",
        database_url=database_url,
        data_dir=tmp_path,
        run_projections=False,
        wechat_appid=wechat.appid,
        wechat_secret="not-the-secret",
        wechat_base_url=wechat.base_url,
        wechat_timeout=0.5,
    )
    with pytest.raises(WeChatConfigError, match="at start-up.*40125"):
        Container.build(settings)


async def test_production_starts_with_the_wechat_check(
    wechat: FakeWeChat, database_url: str, tmp_path: Any
) -> None:
    settings = Settings(
        env="production",
        database_url=database_url,
        data_dir=tmp_path,
        run_projections=False,
        wechat_appid=wechat.appid,
        wechat_secret=wechat.secret,
        wechat_base_url=wechat.base_url,
        wechat_timeout=0.5,
    )
    import anyio.to_thread

    container = await anyio.to_thread.run_sync(Container.build, settings)
    try:
        assert container.wechat is not None and container.wechat.moderation is not None
        assert container.wechat.moderation.provider == "wechat"
        assert wechat.count("/cgi-bin/stable_token") == 1  # the start-up check got the token
    finally:
        await container.aclose()
