"""Helpers of the realtime e2e tests: a small WebSocket client over ``websockets`` (a real
client: permessage-deflate off, as a WeChat client), and readers with a conversation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


def ws_url(base_url: str, **query: Any) -> str:
    url = base_url.replace("http://", "ws://", 1) + "/v1/ws"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


@dataclass
class Ws:
    """One client socket. ``recv_until`` skips (and answers) server pings, and keeps the
    frames it skipped in ``seen``."""

    conn: ClientConnection
    seen: list[Frame] = field(default_factory=list)
    answer_pings: bool = True

    @classmethod
    async def open(
        cls, base_url: str, token: str | None, *, header: bool = True, **query: Any
    ) -> Ws:
        """``token`` in the Authorization header (``header=False``: in ``?token=``, which the
        server refuses); ``ticket=`` and others go in the query."""
        headers = {"Authorization": f"Bearer {token}"} if token and header else {}
        if token and not header:
            query["token"] = token
        conn = await connect(
            ws_url(base_url, **query),
            additional_headers=headers,
            compression=None,
            max_size=2**20,
            ping_interval=None,
            open_timeout=10,
        )
        return cls(conn)

    async def send(self, frame: Frame | str | bytes) -> None:
        await self.conn.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> Frame:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        frame: Frame = json.loads(raw)
        if frame.get("type") == "ping" and self.answer_pings:
            await self.send({"type": "pong"})
        return frame

    async def recv_until(self, predicate: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; saw {self.seen[-5:]}")
            frame = await self.recv(remaining)
            if predicate(frame):
                return frame
            self.seen.append(frame)

    async def recv_type(self, kind: str, timeout: float = 10.0) -> Frame:
        return await self.recv_until(lambda f: f.get("type") == kind, timeout)

    async def take_type(self, kind: str, timeout: float = 10.0) -> Frame:
        """The first frame of type ``kind`` that an earlier ``recv_until`` skipped (taken out
        of ``seen``), else the next one: for frames of independent channels (a room's NATS
        subject, the inbox) whose relative order is not guaranteed."""
        for index, frame in enumerate(self.seen):
            if frame.get("type") == kind:
                return self.seen.pop(index)
        return await self.recv_type(kind, timeout)

    async def events(self, count: int, timeout: float = 30.0) -> list[Frame]:
        """The next ``count`` ``event`` frames."""
        found: list[Frame] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            found.append(
                await self.recv_until(
                    lambda f: f.get("type") == "event", max(0.01, deadline - time.monotonic())
                )
            )
        return found

    async def quiet(self, seconds: float) -> list[Frame]:
        """Frames (other than pings) received within ``seconds``."""
        got: list[Frame] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = await self.recv(remaining)
            except TimeoutError:
                break
            if frame.get("type") != "ping":
                got.append(frame)
        return got

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Wait for the server to close; ``(code, reason)``."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(self.conn.recv(), deadline - time.monotonic())
                self.seen.append(json.loads(raw) if isinstance(raw, str) else {"raw": raw})
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")
        raise AssertionError(f"the server did not close within {timeout} s")

    async def close(self) -> None:
        await self.conn.close()


async def login(http: httpx.AsyncClient, name: str | None = None) -> tuple[str, dict[str, Any]]:
    name = name or f"rt{uuid4().hex[:10]}"
    response = await http.post("/v1/auth/login", json={"code": f"dev:{name}"})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["token"], body["reader"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def open_conversation(http: httpx.AsyncClient, token: str, peer_id: str) -> str:
    response = await http.post("/v1/conversations", json={"peer_id": peer_id}, headers=auth(token))
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["id"])


async def inbox_head(http: httpx.AsyncClient, token: str) -> int:
    response = await http.get("/v1/inbox", params={"limit": 1}, headers=auth(token))
    assert response.status_code == 200, response.text
    return int(response.json()["head"])


async def wait_for_head(
    http: httpx.AsyncClient, token: str, at_least: int, timeout: float = 30.0
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        head = await inbox_head(http, token)
        if head >= at_least:
            return head
        if time.monotonic() > deadline:
            raise AssertionError(f"inbox head {head} < {at_least} after {timeout} s")
        await asyncio.sleep(0.05)
