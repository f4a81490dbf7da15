"""``LIUDONG_SINGLE_DEVICE``: two real ``liudong serve`` processes sharing PostgreSQL and NATS,
both with the setting on. A login of a reader on node a ends that reader's other sessions:
their sockets, on node a and on node b, get an ``error`` frame ``session_replaced`` and close
4409 within a second; their tokens answer 401 ``token_revoked``; another reader's socket and
the new session are untouched. (The setting off: ``tests/e2e/test_sessions_end.py`` keeps
several devices per reader.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import httpx
import pytest

from tests.e2e.nodes import Node, node_pair, pair_clients
from tests.e2e.realtime_helpers import Ws, auth, login

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Node, Node]]:
    tmp = tmp_path_factory.mktemp("single-device")
    with node_pair(database_url, nats_url, tmp, {"LIUDONG_SINGLE_DEVICE": "true"}, ()) as pair:
        yield pair


@pytest.fixture
async def clients(nodes: tuple[Node, Node]) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    async with pair_clients(nodes) as pair:
        yield pair


async def _replaced_within(ws: Ws, since: float) -> float:
    """Wait for ``error`` ``session_replaced`` then close 4409; seconds since ``since``."""
    frame = await ws.recv_until(lambda f: f.get("type") == "error", timeout=5)
    assert frame["code"] == "session_replaced"
    code, reason = await ws.closed(5)
    assert (code, reason) == (4409, "session_replaced")
    return time.monotonic() - since


async def test_a_new_login_replaces_the_readers_other_sessions_on_every_node(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...]
) -> None:
    a, b = nodes
    http_a, http_b = clients
    name = f"sd{uuid4().hex[:8]}"
    phone, _ = await login(http_a, name)
    bystander, _ = await login(http_b, f"by{uuid4().hex[:8]}")
    on_a = await Ws.open(a.url, phone)
    on_b = await Ws.open(b.url, phone)
    other = await Ws.open(b.url, bystander)
    try:
        for ws in (on_a, on_b, other):
            await ws.recv_type("hello")
        started = time.monotonic()
        tablet, _ = await login(http_a, name)  # the same reader, a new device
        took = await asyncio.gather(
            _replaced_within(on_a, started), _replaced_within(on_b, started)
        )
        print(f"login elsewhere → 4409: node a {took[0]:.3f} s, node b {took[1]:.3f} s")
        assert max(took) < 1.0
        await other.send({"type": "ping"})
        assert (await other.recv_type("pong"))["type"] == "pong"
    finally:
        for ws in (on_a, on_b, other):
            await ws.close()
    r = await http_b.get("/v1/me", headers=auth(phone))
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"
    assert (await http_b.get("/v1/me", headers=auth(tablet))).status_code == 200
    new = await Ws.open(b.url, tablet)
    try:
        assert (await new.recv_type("hello"))["type"] == "hello"
    finally:
        await new.close()


async def test_the_replaced_token_cannot_open_a_socket_again(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...]
) -> None:
    a, _ = nodes
    http_a, http_b = clients
    name = f"sr{uuid4().hex[:8]}"
    old, _ = await login(http_a, name)
    await login(http_b, name)
    ws = await Ws.open(a.url, old)
    frame = await ws.recv()
    assert frame["type"] == "error" and frame["code"] == "token_revoked"
    assert (await ws.closed())[0] == 4401
