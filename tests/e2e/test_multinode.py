"""Two ``liudong serve`` processes (real subprocesses) sharing one PostgreSQL database and one
NATS: each delivers to the other's sockets, and room presence agrees across them, including
after one of them dies without saying goodbye."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from click.testing import CliRunner

from api.cli import main as cli
from tests.e2e.nodes import Node, node_pair, pair_clients, start_node, wait_ready
from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation

pytestmark = pytest.mark.slow

PRESENCE_INTERVAL = 0.5


PRESENCE = {"LIUDONG_PRESENCE_INTERVAL": str(PRESENCE_INTERVAL)}
_wait_ready = wait_ready


def _start(name: str, database_url: str, nats_url: str, tmp: Path) -> Node:
    return start_node(name, database_url, nats_url, tmp, PRESENCE)


@pytest.fixture(scope="module")
def nodes(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Node, Node]]:
    with node_pair(database_url, nats_url, tmp_path_factory.mktemp("multinode"), PRESENCE) as pair:
        yield pair


@pytest.fixture
async def clients(nodes: tuple[Node, Node]) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    async with pair_clients(nodes) as pair:
        yield pair


async def test_a_socket_on_node_b_receives_what_a_command_on_node_a_caused(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...]
) -> None:
    node_a, node_b = nodes
    http_a, http_b = clients
    x_token, _x = await login(http_a)  # x talks to node A only
    y_token, y = await login(http_b)  # y's socket is on node B
    y_ws = await Ws.open(node_b.url, y_token)
    try:
        head = (await y_ws.recv_type("hello"))["head"]
        r = await http_b.post(
            "/v1/books", json={"isbn": "9787020002207", "title": "红楼梦"}, headers=auth(y_token)
        )
        assert r.status_code == 201, r.text
        r = await http_a.post(
            f"/v1/books/{r.json()['id']}/loans", json={"note": "借我"}, headers=auth(x_token)
        )
        assert r.status_code == 201, r.text
        event = await y_ws.recv_type("event", timeout=15)
        assert event["kind"] == "loan.requested" and event["seq"] == head + 1

        conversation = await open_conversation(http_a, x_token, y["id"])
        started = time.perf_counter()
        r = await http_a.post(
            f"/v1/conversations/{conversation}/messages",
            json={"text": "跨节点", "client_msg_id": "n1"},
            headers=auth(x_token),
        )
        assert r.status_code in (201, 202), r.text
        seen = [event]
        while True:  # (the loan request's note may have opened the conversation with a message)
            seen.append(await y_ws.recv_type("event", timeout=15))
            if seen[-1]["kind"] == "chat.message" and seen[-1]["data"]["text"] == "跨节点":
                break
        print(f"\nnode A POST → node B socket: {(time.perf_counter() - started) * 1000:.1f} ms")
        last = seen[-1]["seq"]
        assert [e["seq"] for e in seen] == list(range(head + 1, last + 1))  # in order, once
    finally:
        await y_ws.close()

    # resume on the *other* node: the inbox, not the node, is the source of truth
    again = await Ws.open(node_a.url, y_token, after=head)
    try:
        replayed = await again.events(last - head, timeout=15)
        assert replayed == seen
        # `liudong serve` caps a WebSocket message at 64 KiB before it is even buffered
        await again.send('{"type": "ping", "pad": "' + "x" * 100_000 + '"}')
        assert (await again.closed())[0] == 1009
    finally:
        await again.close()


async def test_room_members_are_counted_across_nodes(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...], database_url: str
) -> None:
    node_a, node_b = nodes
    http_a, http_b = clients
    name = f"nodes-{uuid4().hex[:8]}"
    created = CliRunner().invoke(
        cli,
        ["rooms", "create", name, "两个节点"],
        env={"DATABASE_URL": database_url, "LIUDONG_ENV": "test"},
    )
    assert created.exit_code == 0, created.output
    x_token, x = await login(http_a)
    y_token, y = await login(http_b)
    x_ws = await Ws.open(node_a.url, x_token)
    y_ws = await Ws.open(node_b.url, y_token)
    try:
        await x_ws.recv_type("hello")
        await y_ws.recv_type("hello")
        await x_ws.send({"type": "room.join", "room": name})
        assert (await x_ws.recv_type("room.joined"))["members"] == 1
        await _until_members(http_b, name, 1)  # node B has heard of x
        await y_ws.send({"type": "room.join", "room": name})
        assert (await y_ws.recv_type("room.joined"))["members"] == 2
        joined = await x_ws.recv_type("room.presence", timeout=10)
        assert joined["members"] == 2 and joined["joined"]["id"] == y["id"]
        await _until_members(http_a, name, 2)
        await _until_members(http_b, name, 2)

        await y_ws.send({"type": "room.send", "room": name, "text": "从B来", "client_msg_id": "b1"})
        await y_ws.recv_type("ack")
        message = await x_ws.recv_type("room.message", timeout=10)
        assert message["text"] == "从B来" and message["sender"]["id"] == y["id"]

        # node B dies without a word: its members vanish from node A within 3 intervals
        node_b.kill()
        left = await x_ws.recv_type("room.presence", timeout=10 * PRESENCE_INTERVAL)
        assert left["members"] == 1 and left["left"]["id"] == y["id"]
        await _until_members(http_a, name, 1)
        assert x["id"] != y["id"]
    finally:
        await x_ws.close()
        await y_ws.close()  # already gone with node B: returns at once

    assert node_a.stop() in (0, -signal.SIGTERM)  # a clean shutdown on SIGTERM


async def _until_members(http: httpx.AsyncClient, name: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        rooms = {r["name"]: r for r in (await http.get("/v1/rooms")).json()["items"]}
        if name in rooms and rooms[name]["members"] == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{http.base_url}: {rooms.get(name)} != {count} members")
        await asyncio.sleep(0.05)
