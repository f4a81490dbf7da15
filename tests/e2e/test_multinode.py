"""Two ``liudong serve`` processes (real subprocesses) sharing one PostgreSQL database and one
NATS: each delivers to the other's sockets, and room presence agrees across them, including
after one of them dies without saying goodbye."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from click.testing import CliRunner

from api.cli import main as cli
from tests.e2e.conftest import OPERATOR, OPERATOR_TOKEN, free_port
from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PRESENCE_INTERVAL = 0.5


@dataclass
class Node:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _start(name: str, database_url: str, nats_url: str, tmp: Path) -> Node:
    port = free_port()
    log = tmp / f"{name}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "LIUDONG_ENV": "test",
        "LIUDONG_DATA_DIR": str(tmp / name),
        "LIUDONG_PRESENCE_INTERVAL": str(PRESENCE_INTERVAL),
        "LIUDONG_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "LIUDONG_RATE_LOGIN_ADDRESS": "",
        "LIUDONG_RATE_LOGIN_CODE": "",
        "LIUDONG_RATE_LOAN_REQUESTS": "",
        "LIUDONG_RATE_CHAT_SENDS": "",
        "LIUDONG_RATE_ROOM_SENDS": "",
        "LIUDONG_WS_FRAME_RATE": "",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Node(name, f"http://127.0.0.1:{port}", process, log)


def _wait_ready(node: Node, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name} exited:\n{node.log.read_text()[-3000:]}")
        try:
            r = httpx.get(node.url + "/readyz", timeout=2, headers=OPERATOR)
            if r.status_code == 200 and r.json()["checks"].get("nats", {}).get("ok"):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.name} not ready:\n{node.log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def nodes(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Node, Node]]:
    tmp = tmp_path_factory.mktemp("multinode")
    a = _start("node-a", database_url, nats_url, tmp)
    b = _start("node-b", database_url, nats_url, tmp)
    try:
        _wait_ready(a)
        _wait_ready(b)
        yield a, b
    finally:
        for node in (a, b):
            node.stop()


@pytest.fixture
async def clients(nodes: tuple[Node, Node]) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    a, b = nodes
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as http_b,
    ):
        yield http_a, http_b


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
