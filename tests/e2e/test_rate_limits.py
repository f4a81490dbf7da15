"""Limits with honest answers: logins over the per-address or per-code limit get 429
problem+json ``rate_limited`` with ``Retry-After`` (the seconds until the moving window lets
one more through); a refused attempt is not counted. Chat sends count per reader over HTTP
and every socket together; over the WebSocket, a send over its limit (chat or room) gets an
``error`` frame ``rate_limited`` with ``retry_after`` and is neither recorded nor delivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest

from api.adapters.ratelimit import RateLimited, RateLimits
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation


def test_logins_over_the_limits_get_429_rate_limited_with_retry_after(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        live_server.container,
        "rate_limits",
        RateLimits({"login_address": "4/minute", "login_code": "2/minute"}),
    )
    with live_server.client() as http:
        code = f"dev:rl{uuid4().hex[:8]}"
        assert [http.post("/v1/auth/login", json={"code": code}).status_code for _ in range(2)] == [
            200,
            200,
        ]
        refused = http.post("/v1/auth/login", json={"code": code})  # the same code again
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "rate_limited"
        assert 0 < int(refused.headers["retry-after"]) <= 60
        other = http.post("/v1/auth/login", json={"code": f"dev:rl{uuid4().hex[:8]}"})
        assert other.status_code == 200  # 4th from this address (the refused one counted)
        over = http.post("/v1/auth/login", json={"code": f"dev:rl{uuid4().hex[:8]}"})
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"


def test_a_rule_counts_per_identifier_and_an_empty_rule_is_off() -> None:
    limits = RateLimits({"a": "2/minute", "off": ""})
    limits.hit("a", "x")
    limits.hit("a", "x")
    limits.hit("a", "y")
    with pytest.raises(RateLimited) as caught:
        limits.hit("a", "x")
    assert 1 <= caught.value.retry_after <= 60
    for _ in range(100):
        limits.hit("off", "x")
        limits.hit("unknown", "x")


def test_loan_requests_and_chat_sends_over_the_limit_per_reader_get_429(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.test_api_auth import isbn13

    owner, owner_reader = live_server.login()
    borrower, _ = live_server.login()
    with live_server.client(owner) as http:
        books = [
            http.post("/v1/books", json={"isbn": isbn13(), "title": f"书{i}"}).json()
            for i in range(2)
        ]
    monkeypatch.setattr(
        live_server.container,
        "rate_limits",
        RateLimits({"loan_requests": "1/minute", "chat_sends": "1/minute"}),
    )
    with live_server.client(borrower) as http:
        assert http.post(f"/v1/books/{books[0]['id']}/loans").status_code in (201, 202)
        key = {"Idempotency-Key": f"k-{uuid4().hex}"}
        over = http.post(f"/v1/books/{books[1]['id']}/loans", headers=key)
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"
        assert int(over.headers["retry-after"]) >= 1
        # a refusal is not remembered under its Idempotency-Key: later, the retry acts
        conversation = http.post("/v1/conversations", json={"peer_id": owner_reader["id"]})
        assert conversation.status_code in (200, 201), conversation.text
        messages = f"/v1/conversations/{conversation.json()['id']}/messages"
        sent = http.post(messages, json={"text": "一", "client_msg_id": "a"})
        assert sent.status_code in (201, 202), sent.text
        again = http.post(messages, json={"text": "二", "client_msg_id": "b"})
        assert again.status_code == 429 and again.json()["code"] == "rate_limited"


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


async def _eventually(
    read: Callable[[], Awaitable[list[dict[str, Any]]]],
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15.0,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = await read()
        if done(items) or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


async def test_chat_sends_over_http_and_every_socket_share_the_readers_limit(
    live_server: LiveServer, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_token, _a = await login(http)
    b_token, b = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    messages = f"/v1/conversations/{conversation}/messages"
    monkeypatch.setattr(
        live_server.container, "rate_limits", RateLimits({"chat_sends": "3/minute"})
    )
    a_phone = await Ws.open(live_server.url, a_token)
    a_pad = await Ws.open(live_server.url, a_token)
    b_ws = await Ws.open(live_server.url, b_token)
    try:
        for ws in (a_phone, a_pad, b_ws):
            await ws.recv_type("hello")

        def send(text: str, ref: str) -> dict[str, Any]:
            return {
                "type": "chat.send",
                "conversation_id": conversation,
                "text": text,
                "client_msg_id": ref,
            }

        sent = await http.post(
            messages, json={"text": "一", "client_msg_id": "h1"}, headers=auth(a_token)
        )
        assert sent.status_code in (201, 202), sent.text
        await a_phone.send(send("二", "p1"))
        assert (await a_phone.recv_type("ack"))["created"] is True
        await a_pad.send(send("三", "t1"))  # another socket of the same reader: same count
        assert (await a_pad.recv_type("ack"))["created"] is True

        await a_phone.send(send("超", "p2"))
        refused = await a_phone.recv_type("error")
        assert refused["code"] == "rate_limited" and refused["frame"] == "chat.send"
        assert refused["client_msg_id"] == "p2" and 1 <= refused["retry_after"] <= 60
        await a_pad.send(send("超", "t2"))
        assert (await a_pad.recv_type("error"))["code"] == "rate_limited"
        over = await http.post(
            messages, json={"text": "超", "client_msg_id": "h2"}, headers=auth(a_token)
        )
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"
        assert 1 <= int(over.headers["retry-after"]) <= 60

        # the peer got the three messages, and nothing refused
        def is_message(frame: dict[str, Any]) -> bool:
            return frame.get("type") == "event" and frame.get("kind") == "chat.message"

        delivered = [(await b_ws.recv_until(is_message))["data"]["text"] for _ in range(3)]
        assert delivered == ["一", "二", "三"]
        # the limit is the sender's: the peer still sends
        await b_ws.send(send("回", "b1"))
        assert (await b_ws.recv_type("ack"))["created"] is True
        later = [f["data"]["text"] for f in await b_ws.quiet(1.0) if is_message(f)]
        later += [f["data"]["text"] for f in b_ws.seen if is_message(f)]
        assert later == ["回"]  # b's own message (to its devices too), nothing refused

        async def history() -> list[dict[str, Any]]:
            r = await http.get(messages, headers=auth(b_token))
            assert r.status_code == 200, r.text
            return list(r.json()["items"])

        items = await _eventually(history, lambda got: any(m["text"] == "回" for m in got))
        assert sorted(m["text"] for m in items) == sorted(["一", "二", "三", "回"])
    finally:
        for ws in (a_phone, a_pad, b_ws):
            await ws.close()


async def test_room_sends_over_the_readers_limit_get_rate_limited_and_are_not_recorded(
    live_server: LiveServer,
    http: httpx.AsyncClient,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.e2e.test_realtime import _create_room

    name = f"room-{uuid4().hex[:8]}"
    _create_room(database_url, name, "限速")
    a_token, _a = await login(http)
    b_token, _b = await login(http)
    monkeypatch.setattr(
        live_server.container, "rate_limits", RateLimits({"room_sends": "2/minute"})
    )
    a_phone = await Ws.open(live_server.url, a_token)
    a_pad = await Ws.open(live_server.url, a_token)
    b_ws = await Ws.open(live_server.url, b_token)
    try:
        for ws in (a_phone, a_pad, b_ws):
            await ws.recv_type("hello")
            await ws.send({"type": "room.join", "room": name})
            await ws.recv_type("room.joined")

        def send(text: str, ref: str) -> dict[str, Any]:
            return {"type": "room.send", "room": name, "text": text, "client_msg_id": ref}

        await a_phone.send(send("一", "p1"))
        assert (await a_phone.recv_type("ack"))["created"] is True
        await a_pad.send(send("二", "t1"))
        assert (await a_pad.recv_type("ack"))["created"] is True
        await a_pad.send(send("超", "t2"))
        refused = await a_pad.recv_type("error")
        assert refused["code"] == "rate_limited" and refused["frame"] == "room.send"
        assert refused["client_msg_id"] == "t2" and 1 <= refused["retry_after"] <= 60

        await b_ws.send(send("回", "b1"))  # another reader: its own count
        assert (await b_ws.recv_type("ack"))["created"] is True
        texts = [f["text"] for f in b_ws.seen if f.get("type") == "room.message"]  # before the ack
        while len(texts) < 3:
            texts.append((await b_ws.recv_type("room.message"))["text"])
        assert texts == ["一", "二", "回"]
        assert not [f for f in await b_ws.quiet(1.0) if f.get("type") == "room.message"]

        async def history() -> list[dict[str, Any]]:
            r = await http.get(f"/v1/rooms/{name}/messages", headers=auth(b_token))
            assert r.status_code == 200, r.text
            return list(r.json()["items"])

        items = await _eventually(history, lambda got: any(m["text"] == "回" for m in got))
        assert sorted(m["text"] for m in items) == sorted(["一", "二", "回"])
    finally:
        for ws in (a_phone, a_pad, b_ws):
            await ws.close()
