"""``kill -9`` of ``liudong serve`` under load (issue 10, part 7): several clients send a stream
of commands (publish a book, send a chat message) while the server is killed without warning
and started again, more than once. Each client behaves like a real one: every command has its
own ``Idempotency-Key`` and is retried with that key (and the same body) until it gets a 2xx.
Afterwards every acknowledged command is there, exactly once: no book and no message lost,
none doubled by the retries. A private PostgreSQL and NATS (tests/e2e/processes.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
import pytest

from api.bootstrap.db import migrate
from tests.conftest import wait_until
from tests.e2e.processes import PrivateNats, PrivatePostgres, Serve, private_folder
from tests.e2e.test_api_auth import isbn13

pytestmark = [pytest.mark.fault, pytest.mark.slow]

CLIENTS = 6  # three pairs of readers who chat, and each publishes books
KILLS = 2
LOAD_BETWEEN_KILLS = 2.0  # seconds of load before each kill, and after the last restart


@dataclass
class Client:
    """A reader sending commands in a loop; ``acked`` are the 2xx answers."""

    name: str
    token: str = ""
    reader_id: str = ""
    conversation: str = ""
    acked_books: dict[str, str] = field(default_factory=dict)  # title → book id
    acked_messages: dict[str, str] = field(default_factory=dict)  # client_msg_id → message id
    retries: int = 0
    replayed: int = 0  # 2xx answers to a retry of a command the kill had cut off
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def private_server() -> Iterator[tuple[Serve, str]]:
    tmp = private_folder("fault-kill")
    pg = PrivatePostgres(tmp / "pg")
    nats = PrivateNats(tmp / "nats").start()
    try:
        migrate(pg.url)
        server = Serve.configured("serve", tmp, database_url=pg.url, nats_url=nats.url)
        server.start().wait_ready()
        try:
            yield server, pg.url
        finally:
            server.stop()
    finally:
        nats.stop()
        pg.cleanup()


async def _until_2xx(
    http: httpx.AsyncClient, client: Client, path: str, body: dict[str, Any], key: str
) -> dict[str, Any]:
    """POST with ``key`` until a 2xx, as a client would across a server crash."""
    headers = {"Authorization": f"Bearer {client.token}", "Idempotency-Key": key}
    deadline = time.monotonic() + 60
    while True:
        try:
            r = await http.post(path, json=body, headers=headers)
        except httpx.TransportError:  # refused, reset, or cut off mid-answer by the kill
            r = None
        if r is not None:
            client.statuses[r.status_code] = client.statuses.get(r.status_code, 0) + 1
            if r.is_success:
                client.replayed += r.headers.get("Idempotent-Replayed") == "true"
                return dict(r.json())
            # 503 while the database pool reconnects; nothing else is acceptable
            assert r.status_code == 503, (path, r.status_code, r.text)
        client.retries += 1
        assert time.monotonic() < deadline, f"no 2xx for {path} within 60 s"
        await asyncio.sleep(0.1)


async def _login(http: httpx.AsyncClient, client: Client) -> None:
    r = await http.post("/v1/auth/login", json={"code": f"dev:{client.name}"})
    assert r.status_code == 200, r.text
    client.token, client.reader_id = r.json()["token"], r.json()["reader"]["id"]


async def _load(http: httpx.AsyncClient, client: Client, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        key = f"{client.name}-{n}"
        if n % 2:
            title = f"{client.name} 第{n}本"
            book = await _until_2xx(
                http, client, "/v1/books", {"isbn": isbn13(), "title": title}, key
            )
            client.acked_books[title] = book["id"]
        else:
            path = f"/v1/conversations/{client.conversation}/messages"
            body = {"text": f"{client.name} #{n}", "client_msg_id": key}
            message = await _until_2xx(http, client, path, body, key)
            # 201: the message; 202 (the inbox lags): ``message_id`` beside the conversation's id
            client.acked_messages[key] = message.get("message_id") or message["id"]


def _pages(http: httpx.Client, path: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        r = http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json().get("next_cursor")
        if not cursor:
            return items


def test_kill_9_under_load_loses_no_acknowledged_command_and_doubles_none(
    private_server: tuple[Serve, str],
) -> None:
    server, _ = private_server
    clients = [Client(f"k{i}{uuid4().hex[:6]}") for i in range(CLIENTS)]
    restarts: list[float] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for client in clients:
                await _login(http, client)
            for a, b in zip(clients[::2], clients[1::2], strict=True):
                r = await http.post(
                    "/v1/conversations",
                    json={"peer_id": b.reader_id},
                    headers={"Authorization": f"Bearer {a.token}"},
                )
                assert r.status_code in (200, 201), r.text
                a.conversation = b.conversation = r.json()["id"]
            stop = asyncio.Event()
            load = [asyncio.create_task(_load(http, c, stop)) for c in clients]
            for _ in range(KILLS):
                await asyncio.sleep(LOAD_BETWEEN_KILLS)
                assert not any(t.done() for t in load), [t.exception() for t in load if t.done()]
                server.kill()
                await asyncio.sleep(0.3)
                server.start()
                restarts.append(await asyncio.to_thread(server.wait_ready))
            await asyncio.sleep(LOAD_BETWEEN_KILLS)
            stop.set()
            await asyncio.gather(*load)

    started = time.monotonic()
    asyncio.run(scenario())
    took = time.monotonic() - started

    acked = sum(len(c.acked_books) + len(c.acked_messages) for c in clients)
    lost = doubled = 0
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for client in clients:
            # the read models catch up with what was recorded before the last kill
            def books(client: Client = client) -> list[dict[str, Any]] | None:
                mine = [
                    b
                    for b in _pages(http, "/v1/me/books", client.token)
                    if b["title"].startswith(client.name)
                ]
                return mine if len(mine) >= len(client.acked_books) else None

            mine = wait_until(books, timeout=30, interval=0.2)
            by_title: dict[str, list[str]] = {}
            for book in mine:
                by_title.setdefault(book["title"], []).append(book["id"])
            for title, book_id in client.acked_books.items():
                lost += book_id not in by_title.get(title, [])
            doubled += sum(len(ids) - 1 for ids in by_title.values())
            assert set(by_title) == set(client.acked_books)  # nothing unacknowledged either

            path = f"/v1/conversations/{client.conversation}/messages"
            messages = [
                m for m in _pages(http, path, client.token) if m["sender"]["id"] == client.reader_id
            ]
            by_key: dict[str, list[str]] = {}
            for message in messages:
                by_key.setdefault(message["client_msg_id"], []).append(message["id"])
            for key, message_id in client.acked_messages.items():
                lost += by_key.get(key) != [message_id]
            doubled += sum(len(ids) - 1 for ids in by_key.values())
            assert set(by_key) == set(client.acked_messages)
    retries = sum(c.retries for c in clients)
    replayed = sum(c.replayed for c in clients)
    statuses: dict[int, int] = {}
    for c in clients:
        for status, count in c.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    print(
        f"kill -9 ×{KILLS} under {CLIENTS} clients in {took:.1f} s: {acked} acknowledged "
        f"commands, {lost} lost, {doubled} doubled; {retries} retries, {replayed} answered as "
        f"replays of a command cut off by a kill; answers {statuses}; "
        f"ready again after {[round(s, 1) for s in restarts]} s"
    )
    assert (lost, doubled) == (0, 0)
    assert acked > 3 * CLIENTS  # the load did run
    assert retries > 0  # and the kills did cut some commands off
