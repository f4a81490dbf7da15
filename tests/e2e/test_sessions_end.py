"""Sessions end everywhere: two real ``liudong serve`` processes (``--access-log``) sharing
PostgreSQL and NATS. A logout on one node closes the session's sockets on both within 1 s
(``error`` ``session_ended``, close 4401); a login beyond ``LIUDONG_MAX_SESSIONS`` does the
same to the oldest session; browsers connect with single-use tickets, ``?token=`` is refused;
and neither a token nor a ticket appears anywhere in the servers' output."""

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

MAX_SESSIONS = 2
SECRETS: list[str] = []  # every token and ticket the tests used: grepped for at the end


@pytest.fixture(scope="module")
def nodes(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Node, Node]]:
    tmp = tmp_path_factory.mktemp("sessions-end")
    with node_pair(
        database_url, nats_url, tmp, {"LIUDONG_MAX_SESSIONS": str(MAX_SESSIONS)}, ("--access-log",)
    ) as pair:
        yield pair


@pytest.fixture
async def clients(nodes: tuple[Node, Node]) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    async with pair_clients(nodes) as pair:
        yield pair


async def _login(http: httpx.AsyncClient, name: str) -> str:
    token, _ = await login(http, name)
    SECRETS.append(token)
    return token


async def _ticket(http: httpx.AsyncClient, token: str) -> str:
    r = await http.post("/v1/ws/tickets", headers=auth(token))
    assert r.status_code == 201, r.text
    body = r.json()
    assert 0 < body["expires_in"] <= 60
    SECRETS.append(body["ticket"])
    return str(body["ticket"])


async def _ended_within(ws: Ws, since: float) -> float:
    """Wait for ``error`` ``session_ended`` then close 4401; seconds since ``since``."""
    frame = await ws.recv_until(lambda f: f.get("type") == "error", timeout=5)
    assert frame["code"] == "session_ended"
    code, _reason = await ws.closed(5)
    assert code == 4401
    return time.monotonic() - since


async def test_a_ticket_opens_one_socket_once_and_a_token_in_the_url_is_refused(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...]
) -> None:
    a, b = nodes
    http_a, _ = clients
    token = await _login(http_a, f"t{uuid4().hex[:8]}")
    ticket = await _ticket(http_a, token)
    ws = await Ws.open(b.url, None, ticket=ticket)  # issued on node a, used on node b
    try:
        assert (await ws.recv_type("hello"))["type"] == "hello"
    finally:
        await ws.close()
    again = await Ws.open(a.url, None, ticket=ticket)
    assert (await again.recv())["code"] == "invalid_ticket"
    assert (await again.closed())[0] == 4401
    in_url = await Ws.open(a.url, token, header=False)  # ?token=
    assert (await in_url.recv())["code"] == "token_in_url"
    assert (await in_url.closed())[0] == 4400
    assert (await http_a.post("/v1/ws/tickets")).status_code == 401


async def test_logout_closes_the_sessions_sockets_on_every_node_within_a_second(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...]
) -> None:
    a, b = nodes
    http_a, http_b = clients
    name = f"o{uuid4().hex[:8]}"
    token = await _login(http_a, name)
    other = await _login(http_b, name)  # the same reader on another device: stays
    on_a = await Ws.open(a.url, token)
    on_b = await Ws.open(b.url, None, ticket=await _ticket(http_b, token))
    keeps = await Ws.open(b.url, other)
    try:
        for ws in (on_a, on_b, keeps):
            await ws.recv_type("hello")
        started = time.monotonic()
        r = await http_a.post("/v1/auth/logout", headers=auth(token))
        assert r.status_code == 204
        took = await asyncio.gather(_ended_within(on_a, started), _ended_within(on_b, started))
        print(f"logout → 4401: node a {took[0]:.3f} s, node b {took[1]:.3f} s")
        assert max(took) < 1.0
        await keeps.send({"type": "ping"})
        assert (await keeps.recv_type("pong"))["type"] == "pong"
    finally:
        for ws in (on_a, on_b, keeps):
            await ws.close()


async def test_a_login_beyond_max_sessions_revokes_the_oldest_and_closes_its_sockets(
    nodes: tuple[Node, Node], clients: tuple[httpx.AsyncClient, ...]
) -> None:
    a, b = nodes
    http_a, http_b = clients
    name = f"m{uuid4().hex[:8]}"
    oldest = await _login(http_a, name)
    second = await _login(http_a, name)
    ws = await Ws.open(b.url, oldest)
    try:
        await ws.recv_type("hello")
        started = time.monotonic()
        await _login(http_a, name)  # the third: the oldest goes (LIUDONG_MAX_SESSIONS=2)
        assert await _ended_within(ws, started) < 1.0
    finally:
        await ws.close()
    r = await http_b.get("/v1/me", headers=auth(oldest))
    assert r.status_code == 401 and r.json()["code"] == "token_revoked"
    assert (await http_b.get("/v1/me", headers=auth(second))).status_code == 200


def test_no_token_or_ticket_in_any_log_line(nodes: tuple[Node, Node]) -> None:
    """Runs last in the module: every secret the tests used, grepped in both servers' whole
    output (the access log shows the requests: so it is on)."""
    assert SECRETS, "run with the other tests of this module"
    output = "".join(node.log.read_text(errors="replace") for node in nodes)
    assert "/v1/ws?" in output and "/v1/auth/logout" in output  # the access log is there
    leaked = [s for s in SECRETS if s in output or s[3:] in output]
    assert leaked == []
    assert "[redacted]" in output
