"""Reader presence across two ``liudong serve`` processes (real subprocesses sharing one
PostgreSQL database and one NATS; helpers of ``test_multinode``): a reader online on one node
is online on the other, a second device on the other node keeps them online, and the readers
of a node killed with SIGKILL go offline once its heartbeats have expired."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation
from tests.e2e.test_multinode import PRESENCE_INTERVAL, Node, _start, _wait_ready

pytestmark = pytest.mark.slow

EXPIRY = 3.5 * PRESENCE_INTERVAL  # 3 missed heartbeats, checked every half interval


@pytest.fixture(scope="module")
def presence_nodes(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Node, Node]]:
    tmp = tmp_path_factory.mktemp("presence-nodes")
    one = _start("presence-1", database_url, nats_url, tmp)
    two = _start("presence-2", database_url, nats_url, tmp)
    try:
        _wait_ready(one)
        _wait_ready(two)
        yield one, two
    finally:
        for node in (one, two):
            node.stop()


@pytest.fixture
async def clients(
    presence_nodes: tuple[Node, Node],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    one, two = presence_nodes
    async with (
        httpx.AsyncClient(base_url=one.url, timeout=30) as http_1,
        httpx.AsyncClient(base_url=two.url, timeout=30) as http_2,
    ):
        yield http_1, http_2


def is_presence(reader_id: str, online: bool) -> Any:
    return lambda f: (
        f.get("type") == "presence" and f["reader"]["id"] == reader_id and f["online"] is online
    )


async def peers_online(http: httpx.AsyncClient, token: str) -> dict[str, bool]:
    r = await http.get("/v1/conversations", headers=auth(token))
    assert r.status_code == 200, r.text
    return {c["peer"]["id"]: c["peer_online"] for c in r.json()["items"]}


async def test_presence_is_correct_across_nodes_and_a_killed_nodes_readers_go_offline(
    presence_nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    node_1, node_2 = presence_nodes
    http_1, http_2 = clients
    a_token, a = await login(http_1)
    b_token, b = await login(http_2)
    e_token, e = await login(http_2)
    await open_conversation(http_1, a_token, b["id"])
    await open_conversation(http_1, a_token, e["id"])

    a_ws = await Ws.open(node_1.url, a_token)  # a on node 1
    b_phone = e_ws = b_tablet = None
    try:
        await a_ws.recv_type("hello")
        started = time.perf_counter()
        b_phone = await Ws.open(node_2.url, b_token)  # b and e on node 2
        await a_ws.recv_until(is_presence(b["id"], True))
        elapsed = (time.perf_counter() - started) * 1000
        print(f"\nconnect on node 2 → presence on node 1: {elapsed:.1f} ms")
        await b_phone.recv_type("hello")
        e_ws = await Ws.open(node_2.url, e_token)
        await a_ws.recv_until(is_presence(e["id"], True))
        await e_ws.recv_type("hello")
        assert await peers_online(http_1, a_token) == {b["id"]: True, e["id"]: True}

        # node 2 knows a (whose socket is on node 1) is online
        await b_phone.send({"type": "presence.query", "reader_ids": [a["id"]]})
        state = await b_phone.recv_type("presence.state")
        assert state["readers"] == [{"id": a["id"], "online": True}]
        assert (await peers_online(http_2, b_token)) == {a["id"]: True}
        await a_ws.send({"type": "presence.query", "reader_ids": [b["id"], e["id"]]})
        state = await a_ws.recv_type("presence.state")
        assert state["readers"] == [
            {"id": b["id"], "online": True},
            {"id": e["id"], "online": True},
        ]

        # b's second device on node 1; then node 2 dies without a word
        b_tablet = await Ws.open(node_1.url, b_token)
        await b_tablet.recv_type("hello")
        killed = time.monotonic()
        node_2.kill()
        offline = await a_ws.recv_until(is_presence(e["id"], False), timeout=EXPIRY + 5)
        waited = time.monotonic() - killed
        print(f"killed node's reader offline after {waited:.2f} s (interval {PRESENCE_INTERVAL})")
        # expiry: 3 intervals after node 2's last beat, which was at most 1 interval ago
        assert 2 * PRESENCE_INTERVAL - 0.1 <= waited <= EXPIRY + 2
        assert offline["reader"] == {"id": e["id"]}
        # b is still online: the tablet on node 1 keeps them
        frames = await a_ws.quiet(PRESENCE_INTERVAL)
        assert [f for f in (*a_ws.seen, *frames) if f.get("type") == "presence"] == []
        assert await peers_online(http_1, a_token) == {b["id"]: True, e["id"]: False}

        await b_tablet.close()
        await a_ws.recv_until(is_presence(b["id"], False))
        assert await peers_online(http_1, a_token) == {b["id"]: False, e["id"]: False}
    finally:
        for ws in (a_ws, b_phone, e_ws, b_tablet):
            if ws is not None:
                await ws.close()

    assert node_1.stop() in (0, -signal.SIGTERM)
