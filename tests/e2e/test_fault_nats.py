"""NATS killed for 10 s under chat load (issue 10, part 7): pairs of readers chat (REST sends,
WebSocket receivers) while the private nats-server is killed with SIGKILL and started again
10 s later on the same port. Commands keep succeeding during the outage (``/readyz`` says
NATS is down), and every message reaches its receiver's socket, live or after the outage
(the gateway re-reads each socket's gap from the inbox when NATS is back; a client whose
socket closes reconnects with ``?after=<last seq>``): each once, in order, the inbox ``seq``
without a gap. A private PostgreSQL and NATS (tests/e2e/processes.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from api.bootstrap.db import migrate
from tests.e2e.conftest import OPERATOR
from tests.e2e.processes import PrivateNats, PrivatePostgres, Serve, private_folder
from tests.e2e.realtime_helpers import Ws

pytestmark = [pytest.mark.fault, pytest.mark.slow]

PAIRS = 3
OUTAGE = 10.0  # seconds without NATS
BEFORE = AFTER = 2.0  # seconds of chat load before the kill and after the restart
RATE = 8.0  # messages per second per sender


@pytest.fixture(scope="module")
def nats_and_server() -> Iterator[tuple[PrivateNats, Serve]]:
    tmp = private_folder("fault-nats")
    pg = PrivatePostgres(tmp / "pg")
    nats = PrivateNats(tmp / "nats").start()
    try:
        migrate(pg.url)
        server = Serve.configured("serve", tmp, database_url=pg.url, nats_url=nats.url)
        server.start().wait_ready()
        try:
            yield nats, server
        finally:
            server.stop()
    finally:
        nats.stop()
        pg.cleanup()


@dataclass
class Receiver:
    """A client's socket: keeps the last ``seq`` and reconnects with it when closed."""

    url: str
    token: str
    last_seq: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat.message data, in order
    seqs: list[int] = field(default_factory=list)
    reconnects: int = 0
    arrived: dict[str, float] = field(default_factory=dict)  # message id → monotonic time

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                ws = await Ws.open(self.url, self.token, after=self.last_seq)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            try:
                hello = await ws.recv_type("hello")
                if not self.seqs:
                    self.last_seq = hello["head"]
                    self.seqs.append(hello["head"])
                while not stop.is_set():
                    try:
                        frame = await ws.recv(0.5)
                    except TimeoutError:
                        continue
                    if frame.get("type") != "event" or frame["seq"] <= self.last_seq:
                        continue  # a duplicate across a resume is dropped by seq
                    self.last_seq = frame["seq"]
                    self.seqs.append(frame["seq"])
                    if frame["kind"] == "chat.message":
                        self.messages.append(frame["data"])
                        self.arrived[frame["data"]["message_id"]] = time.monotonic()
            except ConnectionClosed:
                self.reconnects += 1
                await asyncio.sleep(0.2)
            finally:
                await ws.close()


def test_nats_killed_for_10_s_under_chat_load_every_push_arrives(
    nats_and_server: tuple[PrivateNats, Serve],
) -> None:
    nats, server = nats_and_server
    sent: dict[int, list[str]] = {}  # pair → message ids in the order acknowledged
    sent_at: dict[str, float] = {}  # message id → when its 2xx came
    readiness: list[dict[str, Any]] = []
    marks: dict[str, float] = {}

    async def scenario() -> list[Receiver]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

            async def login() -> tuple[str, str]:
                r = await http.post("/v1/auth/login", json={"code": f"dev:n{uuid4().hex[:10]}"})
                assert r.status_code == 200, r.text
                return r.json()["token"], r.json()["reader"]["id"]

            pairs = []
            for _ in range(PAIRS):
                (a_token, _), (b_token, b_id) = await login(), await login()
                r = await http.post(
                    "/v1/conversations",
                    json={"peer_id": b_id},
                    headers={"Authorization": f"Bearer {a_token}"},
                )
                assert r.status_code in (200, 201), r.text
                pairs.append((a_token, r.json()["id"], Receiver(server.url, b_token)))
            stop_receiving = asyncio.Event()
            receivers = [asyncio.create_task(p[2].run(stop_receiving)) for p in pairs]
            for _, _, receiver in pairs:  # every socket is up before the load starts
                while not receiver.seqs:
                    await asyncio.sleep(0.05)

            stop_sending = asyncio.Event()

            async def sender(index: int, token: str, conversation: str) -> None:
                sent[index] = []
                n = 0
                while not stop_sending.is_set():
                    n += 1
                    key = f"p{index}-{n}"
                    r = await http.post(
                        f"/v1/conversations/{conversation}/messages",
                        json={"text": f"消息 {n}", "client_msg_id": key},
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                    )
                    assert r.status_code in (201, 202), r.text  # NATS down: still accepted
                    body = r.json()
                    sent[index].append(body.get("message_id") or body["id"])
                    sent_at[sent[index][-1]] = time.monotonic()
                    await asyncio.sleep(1 / RATE)

            senders = [
                asyncio.create_task(sender(i, token, conv))
                for i, (token, conv, _) in enumerate(pairs)
            ]
            await asyncio.sleep(BEFORE)
            nats.kill()
            marks["killed"] = time.monotonic()
            await asyncio.sleep(1.5)
            r = await http.get("/readyz", headers=OPERATOR)
            readiness.append(r.json())
            await asyncio.sleep(OUTAGE - 1.5)
            await asyncio.to_thread(nats.start)
            marks["back"] = time.monotonic()
            await asyncio.sleep(AFTER)
            stop_sending.set()
            await asyncio.gather(*senders)
            marks["sent"] = time.monotonic()

            deadline = time.monotonic() + 20
            while (
                any(len(p[2].messages) < len(sent[i]) for i, p in enumerate(pairs))
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.1)
            stop_receiving.set()
            await asyncio.gather(*receivers)
            return [p[2] for p in pairs]

    receivers = asyncio.run(scenario())

    assert readiness[0]["checks"]["nats"]["ok"] is False, readiness  # /readyz said so
    total = during = 0
    for index, receiver in enumerate(receivers):
        got = [m["message_id"] for m in receiver.messages]
        assert got == sent[index], (index, len(got), len(sent[index]))  # all, once, in order
        seqs = receiver.seqs
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # no gap in the inbox
        total += len(got)
        during += sum(marks["killed"] <= receiver.arrived[m] < marks["back"] for m in got)
    killed, back = marks["killed"], marks["back"]
    in_outage = [m for m, at in sent_at.items() if killed <= at < back]
    caught_up = max(r.arrived[m] for r in receivers for m in in_outage if m in r.arrived) - back
    print(
        f"NATS killed for {OUTAGE:.0f} s under {PAIRS} chatting pairs: {total}/{len(sent_at)} "
        f"pushes delivered, each once and in order ({len(in_outage)} sent while NATS was down, "
        f"{during} of them delivered meanwhile, the rest by {caught_up:.1f} s after it was "
        f"back); socket reconnects {[r.reconnects for r in receivers]}"
    )
    assert total == len(sent_at)
    assert len(in_outage) >= PAIRS * OUTAGE  # the load ran through the outage
