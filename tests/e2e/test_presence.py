"""E2E of reader presence on one server (real WebSockets, NATS, PostgreSQL): ``presence``
frames to conversation peers, several devices, ``peer_online`` in ``GET /v1/conversations``,
``presence.query``, and nothing for strangers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


def is_presence(reader_id: str, online: bool) -> Any:
    return lambda f: (
        f.get("type") == "presence" and f["reader"]["id"] == reader_id and f["online"] is online
    )


async def no_presence(ws: Ws, seconds: float) -> None:
    frames = await ws.quiet(seconds)
    assert [f for f in frames if f["type"] == "presence"] == []
    assert [f for f in ws.seen if f.get("type") == "presence"] == []


async def peer_online(http: httpx.AsyncClient, token: str, peer_id: str) -> bool:
    r = await http.get("/v1/conversations", headers=auth(token))
    assert r.status_code == 200, r.text
    (item,) = [c for c in r.json()["items"] if c["peer"]["id"] == peer_id]
    return bool(item["peer_online"])


async def query(ws: Ws, *ids: str, ref: str = "q") -> dict[str, Any]:
    await ws.send({"type": "presence.query", "reader_ids": list(ids), "client_msg_id": ref})
    return await ws.recv_until(
        lambda f: f.get("type") == "presence.state" and f.get("client_msg_id") == ref
    )


async def test_a_peer_sees_the_other_come_online_and_go_offline_with_the_last_device(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, a = await login(http)
    b_token, b = await login(http)
    stranger_token, _stranger = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    a_ws = await Ws.open(live_server.url, a_token)
    stranger = await Ws.open(live_server.url, stranger_token)
    b_phone = b_tablet = None
    try:
        await a_ws.recv_type("hello")
        await stranger.recv_type("hello")
        assert await peer_online(http, a_token, b["id"]) is False
        assert await peer_online(http, b_token, a["id"]) is True  # a's socket is open

        b_phone = await Ws.open(live_server.url, b_token)
        await b_phone.recv_type("hello")
        online = await a_ws.recv_until(is_presence(b["id"], True))
        assert set(online) == {"type", "reader", "online", "at"}
        assert online["reader"] == {"id": b["id"]}
        assert abs(time.time() - datetime.fromisoformat(online["at"]).timestamp()) < 60
        assert await peer_online(http, a_token, b["id"]) is True
        detail = await http.get(f"/v1/conversations/{conversation}", headers=auth(a_token))
        assert detail.status_code == 200 and detail.json()["peer_online"] is True
        assert detail.json()["peer"]["id"] == b["id"]  # the existing fields are all there

        ticket = (await http.post("/v1/ws/tickets", headers=auth(b_token))).json()["ticket"]
        b_tablet = await Ws.open(live_server.url, None, ticket=ticket)  # a second device
        await b_tablet.recv_type("hello")
        await b_phone.close()  # b is still online on the tablet
        await no_presence(a_ws, 0.5)
        assert await peer_online(http, a_token, b["id"]) is True

        await b_tablet.close()  # b's last socket
        offline = await a_ws.recv_until(is_presence(b["id"], False))
        assert offline["at"] >= online["at"]
        assert await peer_online(http, a_token, b["id"]) is False
        detail = await http.get(f"/v1/conversations/{conversation}", headers=auth(a_token))
        assert detail.json()["peer_online"] is False

        # the stranger has no conversation with b: it heard nothing
        await no_presence(stranger, 0.2)
    finally:
        for ws in (a_ws, stranger, b_phone, b_tablet):
            if ws is not None:
                await ws.close()


async def test_presence_query_answers_for_conversation_peers_only(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, a = await login(http)
    b_token, b = await login(http)
    c_token, c = await login(http)  # a's peer, offline
    stranger_token, stranger = await login(http)
    await open_conversation(http, a_token, b["id"])
    await open_conversation(http, c_token, a["id"])
    a_ws = await Ws.open(live_server.url, a_token)
    b_ws = await Ws.open(live_server.url, b_token)
    s_ws = await Ws.open(live_server.url, stranger_token)
    try:
        for ws in (a_ws, b_ws, s_ws):
            await ws.recv_type("hello")
        nobody = str(uuid4())
        state = await query(a_ws, b["id"], c["id"], stranger["id"], nobody, a["id"], b["id"])
        assert state == {
            "type": "presence.state",
            "client_msg_id": "q",
            "readers": [{"id": b["id"], "online": True}, {"id": c["id"], "online": False}],
            "unknown": [stranger["id"], nobody, a["id"]],
        }

        # the stranger learns nothing about a, who is online: unknown, like a made-up id
        state = await query(s_ws, a["id"], b["id"], nobody, ref="s1")
        assert state["readers"] == [] and state["unknown"] == [a["id"], b["id"], nobody]

        # once they open a conversation, the stranger is a peer: at once, no waiting for a cache
        gateway = live_server.container.extras["realtime"].gateway
        saved = gateway.config
        gateway.config = replace(saved, peer_refresh=0.0)
        try:
            await open_conversation(http, stranger_token, a["id"])
            state = await query(s_ws, a["id"], ref="s2")
            assert state["readers"] == [{"id": a["id"], "online": True}]
        finally:
            gateway.config = saved

        await s_ws.send({"type": "presence.query", "reader_ids": [nobody] * 101})
        error = await s_ws.recv_type("error")
        assert error["code"] == "invalid_frame" and error["frame"] == "presence.query"
        await s_ws.send({"type": "presence.query", "reader_ids": ["not-a-uuid"]})
        assert (await s_ws.recv_type("error"))["code"] == "invalid_frame"
        assert (await query(s_ws, ref="empty")) == {
            "type": "presence.state",
            "client_msg_id": "empty",
            "readers": [],
            "unknown": [],
        }
    finally:
        for ws in (a_ws, b_ws, s_ws):
            await ws.close()


async def test_presence_goes_to_every_device_of_every_peer_and_only_to_peers(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    b_token, b = await login(http)
    peers = [await login(http) for _ in range(3)]
    stranger_token, _ = await login(http)
    for token, _reader in peers:
        await open_conversation(http, token, b["id"])
    sockets = [await Ws.open(live_server.url, token) for token, _ in peers]
    sockets.append(await Ws.open(live_server.url, peers[0][0]))  # peer 0's second device
    stranger = await Ws.open(live_server.url, stranger_token)
    b_ws = None
    try:
        for ws in (*sockets, stranger):
            await ws.recv_type("hello")
        b_ws = await Ws.open(live_server.url, b_token)
        await b_ws.recv_type("hello")
        await asyncio.gather(*(ws.recv_until(is_presence(b["id"], True)) for ws in sockets))
        # b's own socket is not told about b (nor about its peers: they were online first)
        await no_presence(b_ws, 0.3)
        await b_ws.close()
        await asyncio.gather(*(ws.recv_until(is_presence(b["id"], False)) for ws in sockets))
        await no_presence(stranger, 0.3)
    finally:
        for ws in (*sockets, stranger):
            await ws.close()
