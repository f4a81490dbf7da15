"""Embedded servers shared by two processes (issue 10, part 9): two ``liudong serve`` on one
data folder (``LIUDONG_DATA_DIR``, neither ``DATABASE_URL`` nor ``NATS_URL``: the embedded
PostgreSQL and nats-server) keep working when the one that started the embedded NATS stops:
the folder's ``nats/server.json`` counts the processes using it, and the server stops with
the last. When the nats-server itself dies, a node that lost it starts it again on the port
recorded in the folder, and every node's NATS client finds it there. A restarted node joins.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.bootstrap.embedded import _pid_alive
from tests.e2e.processes import Serve, private_folder
from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation

pytestmark = [pytest.mark.fault, pytest.mark.slow]


@pytest.fixture(scope="module")
def folder() -> Iterator[tuple[Path, Path]]:
    tmp = private_folder("shared")
    yield tmp, tmp / "data"


def _state(data_dir: Path) -> dict[str, Any]:
    return dict(json.loads((data_dir / "nats" / "server.json").read_text()))


async def _push_arrives(url_from: str, url_to: str, timeout: float) -> float:
    """A message sent over ``url_from``'s REST reaches its peer's socket on ``url_to``;
    seconds from the send to the push."""
    async with (
        httpx.AsyncClient(base_url=url_from, timeout=30) as sender_http,
        httpx.AsyncClient(base_url=url_to, timeout=30) as receiver_http,
    ):
        sender_token, _ = await login(sender_http)
        receiver_token, receiver = await login(receiver_http)
        conversation = await open_conversation(sender_http, sender_token, receiver["id"])
        ws = await Ws.open(url_to, receiver_token)
        try:
            await ws.recv_type("hello")
            started = time.monotonic()
            r = await sender_http.post(
                f"/v1/conversations/{conversation}/messages",
                json={"text": "还在吗", "client_msg_id": "m1"},
                headers=auth(sender_token),
            )
            assert r.status_code in (201, 202), r.text
            event = await ws.recv_until(
                lambda f: f.get("type") == "event" and f["kind"] == "chat.message", timeout
            )
            assert event["data"]["text"] == "还在吗"
            return time.monotonic() - started
        finally:
            await ws.close()


def test_two_nodes_on_one_data_folder_keep_nats_when_either_stops_or_nats_dies(
    folder: tuple[Path, Path],
) -> None:
    tmp, data_dir = folder
    a = Serve.configured("a", tmp, database_url=None, nats_url=None, data_dir=data_dir)
    b = Serve.configured("b", tmp, database_url=None, nats_url=None, data_dir=data_dir)
    figures: dict[str, float] = {}
    try:
        a.start().wait_ready(90)
        b.start().wait_ready(90)
        first = _state(data_dir)
        assert _pid_alive(first["pid"])
        users = {u.split("-")[0] for u in first["users"]}
        assert users == {str(a.process.pid), str(b.process.pid)}  # type: ignore[union-attr]
        figures["a→b"] = asyncio.run(_push_arrives(a.url, b.url, 10))

        # A, which started the embedded nats-server, stops: the server stays for B
        assert a.stop() == 0
        assert _state(data_dir)["pid"] == first["pid"] and _pid_alive(first["pid"])
        figures["b after a stopped"] = asyncio.run(_push_arrives(b.url, b.url, 5))

        # the nats-server dies: B starts it again on the same port and reconnects to it
        os.kill(first["pid"], signal.SIGKILL)
        killed = time.monotonic()
        figures["b after nats died"] = asyncio.run(_push_arrives(b.url, b.url, 15))
        figures["nats back"] = time.monotonic() - killed
        second = _state(data_dir)
        assert second["port"] == first["port"] and second["pid"] != first["pid"]

        # A comes back and joins the same servers: pushes cross between the nodes again
        a.start().wait_ready(90)
        assert _state(data_dir)["pid"] == second["pid"]
        figures["a→b again"] = asyncio.run(_push_arrives(a.url, b.url, 10))
        figures["b→a"] = asyncio.run(_push_arrives(b.url, a.url, 10))
    finally:
        codes = (a.stop(), b.stop())
    print(
        "shared data folder: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures.items())
        + f"; exit codes {codes}"
    )
    # the last user stopped the embedded nats-server it did not start
    last = _state(data_dir)
    assert not last.get("users")
    assert "pid" not in last and not _pid_alive(second["pid"])
