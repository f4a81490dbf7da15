"""WebSocket abuse (issue 10, part 8): 1,000 malformed, oversized, binary and unknown frames
from several sockets, sent while another pair of readers chat over their own sockets, leave
that chat untouched: every message acknowledged, every message delivered to the peer once
and in order, neither good socket closed. Each bad frame gets its documented ``error`` frame
(``docs/REALTIME.md`` §4), and the documented close where one is promised: 1009 after a frame
over 16 KiB (with ``frame_too_large`` first), 1009 from the WebSocket layer itself over
64 KiB (no ``error`` frame: the server never reads such a frame)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from realtime.protocol import MAX_FRAME_BYTES
from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_helpers import Ws, login, open_conversation

BAD_SOCKETS = 5
BAD_FRAMES = 1000
GOOD_MESSAGES = 60

# (frame, the error code it must get; None: the socket is closed with no error frame)
Case = tuple[str | bytes, str | None]


def _cases(conversation: str) -> list[Case]:
    """One of each kind of bad frame; the abusers draw from these at random."""
    return [
        ("not json at all", "malformed_json"),
        ("{", "malformed_json"),
        ('{"type": "ping"', "malformed_json"),
        ("\u00ff\u00fe", "malformed_json"),
        ("null", "invalid_frame"),
        ("42", "invalid_frame"),
        ("[1, 2, 3]", "invalid_frame"),
        ('"ping"', "invalid_frame"),
        (b"\x00\x01binary", "binary_not_supported"),
        (b"", "binary_not_supported"),
        (json.dumps({"type": "ping"}).encode(), "binary_not_supported"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"no_type": 1}', "unknown_type"),
        ('{"type": ""}', "unknown_type"),
        ('{"type": 7}', "unknown_type"),
        ('{"type": "resume", "after": "x"}', "invalid_frame"),
        ('{"type": "resume", "after": -1}', "invalid_frame"),
        ('{"type": "ping", "extra": true}', "invalid_frame"),
        # a chat.send into the good pair's conversation by a stranger: refused, not delivered
        (
            json.dumps(
                {
                    "type": "chat.send",
                    "conversation_id": conversation,
                    "text": "intrusion",
                    "client_msg_id": "x",
                }
            ),
            "not_a_member",
        ),
        (
            json.dumps(
                {"type": "chat.send", "conversation_id": "nope", "text": "", "client_msg_id": ""}
            ),
            "invalid_frame",
        ),
        (json.dumps({"type": "read", "conversation_id": conversation, "up_to": 1}), None),
        (json.dumps({"type": "room.send", "room": "no-such-room", "text": "x"}), None),
    ]


OVERSIZED: Case = (json.dumps({"type": "ping", "pad": "x" * MAX_FRAME_BYTES}), "frame_too_large")
HUGE: Case = ("x" * (70 * 1024), None)  # over the WebSocket layer's 64 KiB: closed unread


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


class Abuser:
    """One bad client: sends its share of bad frames one after another (each answered
    before the next), reconnecting after each close the server makes."""

    def __init__(self, url: str, token: str, frames: list[Case]) -> None:
        self.url = url
        self.token = token
        self.frames = frames
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int | None] = Counter()
        self.sent = 0

    async def _open(self) -> Ws:
        ws = await Ws.open(self.url, self.token)
        await ws.recv_type("hello")
        return ws

    async def run(self) -> None:
        ws = await self._open()
        try:
            for raw, expected in self.frames:
                await ws.send(raw)
                self.sent += 1
                if raw is HUGE[0]:
                    code, _ = await ws.closed(10)
                    self.closes[code] += 1
                    ws = await self._open()
                    continue
                if expected is None:  # a refusal whose code depends on the frame: any error
                    error = await ws.recv_type("error")
                    self.errors[str(error["code"])] += 1
                    continue
                error = await ws.recv_type("error")
                assert error["code"] == expected, (raw[:80], error)
                self.errors[expected] += 1
                if expected == "frame_too_large":
                    code, _ = await ws.closed(10)
                    self.closes[code] += 1
                    ws = await self._open()
        finally:
            await ws.close()


async def test_a_thousand_bad_frames_from_several_sockets_leave_another_pairs_chat_untouched(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, _a = await login(http)
    b_token, b = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    a_ws = await Ws.open(live_server.url, a_token)
    b_ws = await Ws.open(live_server.url, b_token)
    await a_ws.recv_type("hello")
    await b_ws.recv_type("hello")

    rng = random.Random(10)
    cases = _cases(conversation)
    plan: list[Case] = [rng.choice(cases) for _ in range(BAD_FRAMES)]
    for i in range(0, BAD_FRAMES, 50):  # ~2% oversized, ~1% huge, spread over the sockets
        plan[i] = OVERSIZED
    for i in range(25, BAD_FRAMES, 100):
        plan[i] = HUGE
    abusers = []
    for n in range(BAD_SOCKETS):
        token, _ = await login(http, f"abuser{n}{uuid4().hex[:6]}")
        abusers.append(Abuser(live_server.url, token, plan[n::BAD_SOCKETS]))

    abuse_done = asyncio.Event()

    async def chat() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A sends over its socket for as long as the abuse lasts (at least GOOD_MESSAGES);
        B reads them live."""
        acks: list[dict[str, Any]] = []
        received: list[dict[str, Any]] = []
        sending = True

        async def send() -> None:
            nonlocal sending
            i = 0
            while i < GOOD_MESSAGES or not abuse_done.is_set():
                await a_ws.send(
                    {
                        "type": "chat.send",
                        "conversation_id": conversation,
                        "text": f"m{i}",
                        "client_msg_id": f"good-{i}",
                    }
                )
                acks.append(await a_ws.recv_type("ack", timeout=30))
                i += 1
                await asyncio.sleep(0.02)
            sending = False

        async def receive() -> None:
            deadline = time.monotonic() + 120
            while sending or len(received) < len(acks):
                assert time.monotonic() < deadline, (len(received), len(acks))
                try:
                    frame = await b_ws.recv(0.5)
                except TimeoutError:
                    continue
                if frame.get("type") == "event" and frame["kind"] == "chat.message":
                    received.append(frame)
                else:
                    b_ws.seen.append(frame)

        await asyncio.gather(send(), receive())
        return acks, received

    async def abuse() -> None:
        try:
            await asyncio.gather(*(abuser.run() for abuser in abusers))
        finally:
            abuse_done.set()

    started = time.monotonic()
    try:
        outcome = await asyncio.gather(chat(), abuse())
        acks, received = outcome[0]
        took = time.monotonic() - started

        # the good pair: everything acknowledged, delivered once and in order, sockets open
        sent = len(acks)
        assert sent >= GOOD_MESSAGES
        assert [ack["client_msg_id"] for ack in acks] == [f"good-{i}" for i in range(sent)]
        assert all(ack["created"] for ack in acks)
        assert [f["data"]["text"] for f in received] == [f"m{i}" for i in range(sent)]
        assert [f["data"]["seq"] for f in received] == [ack["seq"] for ack in acks]
        seqs = [f["seq"] for f in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert not [f for f in b_ws.seen if f.get("type") == "error"]
        assert not [f for f in a_ws.seen if f.get("type") == "error"]
        assert "intrusion" not in json.dumps(b_ws.seen + received)
        for ws in (a_ws, b_ws):  # still served
            await ws.send({"type": "ping"})
            assert await ws.recv_type("pong") == {"type": "pong"}

        # the bad sockets: each frame answered as documented
        bad = sum(abuser.sent for abuser in abusers)
        errors = sum((abuser.errors for abuser in abusers), Counter())
        closes = sum((abuser.closes for abuser in abusers), Counter())
        assert bad == BAD_FRAMES
        huge = plan.count(HUGE)
        assert sum(errors.values()) == BAD_FRAMES - huge
        assert errors["frame_too_large"] == plan.count(OVERSIZED)
        assert closes == Counter({1009: plan.count(OVERSIZED) + huge})
        assert (await http.get("/healthz")).status_code == 200
        print(
            f"ws abuse: {bad} bad frames from {BAD_SOCKETS} sockets in {took:.1f} s "
            f"({dict(errors)}; closes {dict(closes)}); "
            f"the good pair meanwhile: {len(received)}/{sent} messages delivered in order"
        )
    finally:
        for ws in (a_ws, b_ws):
            with contextlib.suppress(ConnectionClosed):
                await ws.close()
