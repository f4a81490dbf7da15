"""E2E over real HTTP and WebSockets: the content check on every path that takes a reader's
text (chat and room messages, loan note and decline reason, book fields, nickname), its
problems (422 ``content_rejected``, 503 with ``Retry-After``), the flags of ``review``
verdicts (``liudong moderation list``), the metrics, and the WeChat check against the fake
WeChat (the writer's openId remembered at login)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from click.testing import CliRunner

from api.adapters.moderation import FlagStore, Moderator, WeChatContentCheck, WordListCheck
from api.adapters.wechat import DevLoginProvider
from api.adapters.wechat_api import MemoryTokenStore, WeChatApi, WeChatApiThread
from api.cli import main as cli
from domain.moderation import ContentCheckUnavailable, Scene, Verdict
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_helpers import Ws, login, open_conversation
from tests.e2e.test_api_auth import Actor, assert_problem, loan_action, publish, request_loan
from tests.wechat_fake import running_fake_wechat

Actors = Callable[..., Actor]
ABUSE = "你真是个傻 逼"


def rejected(response: httpx.Response, field: str) -> None:
    body = assert_problem(response, 422, "content_rejected")
    assert body["errors"] == [{"field": field, "label": "abuse"}]


def flags_of(live_server: LiveServer, reader_id: str) -> list[dict[str, Any]]:
    store = FlagStore(live_server.container.pool)
    return [f for f in store.list(limit=1000) if str(f["reader_id"]) == reader_id]


@contextlib.contextmanager
def moderation(live_server: LiveServer, moderator: Moderator) -> Iterator[Moderator]:
    """Swap the live server's moderator for the block."""
    platform = live_server.container.wechat
    saved = platform.moderation
    platform.moderation = moderator
    try:
        yield moderator
    finally:
        platform.moderation = saved


# -- REST ------------------------------------------------------------------------------------


def test_a_rejected_chat_message_is_not_recorded(actors: Actors) -> None:
    a, b = actors(), actors()
    conversation = a.http.post("/v1/conversations", json={"peer_id": b.id}).json()["id"]
    refused = a.http.post(
        f"/v1/conversations/{conversation}/messages", json={"text": ABUSE, "client_msg_id": "m1"}
    )
    rejected(refused, "text")
    sent = a.http.post(
        f"/v1/conversations/{conversation}/messages", json={"text": "你好", "client_msg_id": "m2"}
    )
    assert sent.status_code == 201 and sent.json()["seq"] == 1  # the refused one took no seq
    history = b.http.get(f"/v1/conversations/{conversation}/messages").json()["items"]
    assert [m["text"] for m in history] == ["你好"]


def test_a_message_for_review_is_sent_and_flagged(
    actors: Actors, live_server: LiveServer, database_url: str
) -> None:
    a, b = actors(), actors()
    conversation = a.http.post("/v1/conversations", json={"peer_id": b.id}).json()["id"]
    text = "书可以便宜卖你，加微信 abc"
    sent = a.http.post(
        f"/v1/conversations/{conversation}/messages", json={"text": text, "client_msg_id": "m1"}
    )
    assert sent.status_code == 201, sent.text
    [flag] = flags_of(live_server, a.id)
    assert (flag["scene"], flag["field"], flag["label"], flag["provider"]) == (
        Scene.SOCIAL_LOG,
        "text",
        "ad",
        "local",
    )
    assert flag["subject"] == f"conversation:{conversation}"

    env = {"DATABASE_URL": database_url, "LIUDONG_ENV": "test"}
    listed = CliRunner().invoke(cli, ["moderation", "list", "--limit", "1000"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"#{flag['id']}" in listed.output and "social_log/text" in listed.output
    as_json = CliRunner().invoke(cli, ["moderation", "list", "--json", "--limit", "1000"], env=env)
    assert any(json.loads(line)["id"] == flag["id"] for line in as_json.output.splitlines())
    done = CliRunner().invoke(
        cli, ["moderation", "resolve", str(flag["id"]), "--by", "ops", "--as", "removed"], env=env
    )
    assert done.exit_code == 0 and "resolved" in done.output
    every = CliRunner().invoke(cli, ["moderation", "list", "--all", "--limit", "1000"], env=env)
    assert "resolved by ops (removed)" in every.output
    again = CliRunner().invoke(cli, ["moderation", "resolve", str(flag["id"])], env=env)
    assert again.exit_code != 0 and "no open flag" in again.output
    checked = CliRunner().invoke(cli, ["moderation", "check", ABUSE], env=env)
    assert checked.exit_code == 0 and "local: reject (abuse)" in checked.output


def test_nickname(actors: Actors) -> None:
    a = actors()
    rejected(a.http.patch("/v1/me", json={"nickname": "FUCK"}), "nickname")
    assert a.http.get("/v1/me").json()["nickname"] == a.nickname
    assert a.http.patch("/v1/me", json={"nickname": "读书人"}).json()["nickname"] == "读书人"


def test_book_fields_on_publish_and_revise(actors: Actors) -> None:
    owner = actors()
    mine = lambda: owner.http.get("/v1/me/books").json()["items"]  # noqa: E731
    rejected(
        owner.http.post("/v1/books", json={"isbn": "9787536692930", "title": "傻逼书"}), "title"
    )
    rejected(
        owner.http.post(
            "/v1/books", json={"isbn": "9787536692930", "title": "三体", "tags": ["科幻", "fuck"]}
        ),
        "tags",
    )
    assert mine() == []
    book = publish(owner, title="三体", summary="地球往事", author="刘慈欣")
    rejected(
        owner.http.patch(f"/v1/books/{book['id']}", json={"summary": "写得像 s.h.i.t 操你妈"}),
        "summary",
    )
    rejected(owner.http.patch(f"/v1/books/{book['id']}", json={"author": "motherfucker"}), "author")
    [unchanged] = mine()
    assert (unchanged["summary"], unchanged["author"]) == ("地球往事", "刘慈欣")


def test_loan_note_and_decline_reason(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    rejected(borrower.http.post(f"/v1/books/{book['id']}/loans", json={"note": ABUSE}), "note")
    assert borrower.http.get("/v1/me/loans").json()["items"] == []
    loan = request_loan(borrower, book["id"], note="想借来看看")
    rejected(loan_action(owner, loan["id"], "decline", json={"reason": "滚你妈"}), "reason")
    assert owner.http.get(f"/v1/loans/{loan['id']}").json()["status"] == "requested"
    declined = loan_action(owner, loan["id"], "decline", json={"reason": "最近自己在看"})
    assert declined.status_code == 200 and declined.json()["status"] == "declined"


class Down:
    name = "down"

    def check(self, texts: Any, scene: Scene, author: UUID) -> list[Verdict]:
        raise ContentCheckUnavailable("WeChat is down", retry_after=17)


def test_an_outage_fails_open_for_messages_and_closed_for_profile(
    live_server: LiveServer, actors: Actors
) -> None:
    a, b = actors(), actors()
    conversation = a.http.post("/v1/conversations", json={"peer_id": b.id}).json()["id"]
    with moderation(live_server, Moderator(Down(), None)), live_server.client(a.token) as raw:  # type: ignore[arg-type]
        sent = raw.post(
            f"/v1/conversations/{conversation}/messages", json={"text": "hi", "client_msg_id": "m1"}
        )
        assert sent.status_code == 201, sent.text
        refused = raw.patch("/v1/me", json={"nickname": "新名字"})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "17"
        assert refused.json()["code"] == "content_check_unavailable"
        metrics = raw.get("/metrics").text
    assert 'liudong_moderation_errors_total{outcome="fail_open",provider="down"}' in metrics
    assert 'liudong_moderation_errors_total{outcome="fail_closed",provider="down"}' in metrics
    assert 'liudong_moderation_checks_total{scene="social_log",verdict="pass"}' in metrics
    assert a.http.get("/v1/me").json()["nickname"] == a.nickname


# -- WebSocket ---------------------------------------------------------------------------------


def _create_room(database_url: str, name: str) -> None:
    env = {"DATABASE_URL": database_url, "LIUDONG_ENV": "test"}
    result = CliRunner().invoke(cli, ["rooms", "create", name, "reading club"], env=env)
    assert result.exit_code == 0, result.output


async def test_the_socket_refuses_rejected_chat_and_room_texts(
    live_server: LiveServer, database_url: str
) -> None:
    room = f"mod-{uuid4().hex[:8]}"
    _create_room(database_url, room)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        a_token, _a = await login(http)
        b_token, b = await login(http)
        conversation = await open_conversation(http, a_token, b["id"])
        a_ws = await Ws.open(live_server.url, a_token)
        b_ws = await Ws.open(live_server.url, b_token)
        try:
            await a_ws.recv_type("hello")
            await b_ws.recv_type("hello")
            await a_ws.send(
                {
                    "type": "chat.send",
                    "conversation_id": conversation,
                    "text": ABUSE,
                    "client_msg_id": "bad",
                }
            )
            error = await a_ws.recv_type("error")
            assert error["code"] == "content_rejected" and error["client_msg_id"] == "bad"
            assert error["frame"] == "chat.send"
            await a_ws.send(
                {
                    "type": "chat.send",
                    "conversation_id": conversation,
                    "text": "你好",
                    "client_msg_id": "good",
                }
            )
            ack = await a_ws.recv_type("ack")
            assert ack["client_msg_id"] == "good" and ack["seq"] == 1
            event = await b_ws.recv_type("event")
            assert event["data"]["text"] == "你好"  # the refused one never reached b

            await a_ws.send({"type": "room.join", "room": room})
            await a_ws.recv_type("room.joined")
            await a_ws.send(
                {"type": "room.send", "room": room, "text": "F.U.C.K", "client_msg_id": "r1"}
            )
            error = await a_ws.recv_type("error")
            assert (error["code"], error["frame"]) == ("content_rejected", "room.send")
            await a_ws.send(
                {"type": "room.send", "room": room, "text": "大家好", "client_msg_id": "r2"}
            )
            assert (await a_ws.recv_type("ack"))["seq"] == 1
        finally:
            await a_ws.close()
            await b_ws.close()


# -- against the fake WeChat -----------------------------------------------------------------


@pytest.fixture
def wechat_moderation(live_server: LiveServer) -> Iterator[Any]:
    with running_fake_wechat() as fake:
        fake.rules = {"加微信": ("review", 10001), "坏话": ("risky", 20003)}
        api = WeChatApi(
            fake.appid,
            fake.secret,
            store=MemoryTokenStore(),
            base_url=fake.base_url,
            timeout=0.5,
            backoff=(0.01,),
        )
        runner = WeChatApiThread(api)
        platform = live_server.container.wechat
        check = WeChatContentCheck(runner, platform.openids.open_id, timeout=2.0)
        try:
            with moderation(live_server, Moderator(check, FlagStore(live_server.container.pool))):
                yield fake
        finally:
            runner.close()


def test_msg_sec_check_with_the_writers_openid(
    live_server: LiveServer, actors: Actors, wechat_moderation: Any
) -> None:
    fake = wechat_moderation
    a, b = actors(), actors()
    conversation = a.http.post("/v1/conversations", json={"peer_id": b.id}).json()["id"]
    refused = a.http.post(
        f"/v1/conversations/{conversation}/messages", json={"text": "说坏话", "client_msg_id": "m1"}
    )
    body = assert_problem(refused, 422, "content_rejected")
    assert body["errors"] == [{"field": "text", "label": "abuse"}]
    sent = a.http.post(
        f"/v1/conversations/{conversation}/messages", json={"text": "加微信", "client_msg_id": "m2"}
    )
    assert sent.status_code == 201
    [flag] = flags_of(live_server, a.id)
    assert (flag["provider"], flag["label"]) == ("wechat", "ad")
    bodies = fake.bodies("/wxa/msg_sec_check")
    assert [b["content"] for b in bodies] == ["说坏话", "加微信"]
    assert {b["openid"] for b in bodies} == {DevLoginProvider.open_id_for(a.name)}
    assert {b["scene"] for b in bodies} == {4}
    # a profile field when WeChat is down: refused for now (fields fail closed)
    fake.script["/wxa/msg_sec_check"] = []
    fake.check_delay = 5.0
    with live_server.client(a.token) as raw:
        response = raw.patch("/v1/me", json={"nickname": "新名字"})
    assert response.status_code == 503 and response.headers["Retry-After"]
    fake.check_delay = 0.0


def test_the_built_in_list_is_the_default(live_server: LiveServer) -> None:
    moderator = live_server.container.wechat.moderation
    assert moderator.provider == "local" and isinstance(moderator.check, WordListCheck)
