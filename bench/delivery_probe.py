"""Delivery latency probe: from a chat command's commit to the ``event`` frame at the
receiving WebSocket, through the whole realtime path (inbox projection → relay → JetStream →
gateway → socket). Prints one JSON document on stdout; progress on stderr.

    python -m bench.delivery_probe [--messages 200] [--resume 1000] [--url http://host:port]

Without ``--url`` it starts two ``liudong serve`` processes on a throwaway database of
``DATABASE_URL``'s server (or the embedded PostgreSQL) and ``NATS_URL`` (or an embedded
nats-server), and measures the receiver on the sender's node (``same_node``) and on the
other node (``cross_node``). With ``--url`` it probes that one running server (dev login must
be allowed there).

Per message, sent one at a time (an unloaded system: this is latency, not throughput):

- ``ack_to_frame``: the sender's ``ack`` (sent right after the command committed) → the
  receiver's frame. The closest observable to commit → frame (it under-counts by the ack's
  own trip, ~0.1 ms on loopback).
- ``event_at_to_frame``: the event's own timestamp (taken just before its INSERT) → the
  frame, on the same machine's clock: commit → frame plus the commit itself.
- ``send_to_frame``: the client's ``chat.send`` → the receiver's frame (command included).

``resume``: the receiver goes offline, ``--resume`` messages are sent, the receiver reconnects
with ``?after=<last seq>``; the time from connect to the last replayed frame.
Not a test: no assertion; compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.common import (
    ServerProcess,
    log,
    machine_info,
    services,
    summary_ms,
    throwaway_database,
)


def _ws_url(base: str, token: str, after: int | None = None) -> str:
    url = base.replace("http://", "ws://", 1) + f"/v1/ws?token={token}"
    return url if after is None else url + f"&after={after}"


async def _open(
    base: str, token: str, after: int | None = None
) -> tuple[ClientConnection, dict[str, Any]]:
    conn = await connect(
        _ws_url(base, token, after), compression=None, ping_interval=None, max_queue=None
    )
    hello = json.loads(await conn.recv())
    assert hello["type"] == "hello", hello
    return conn, hello


async def _next(
    conn: ClientConnection, kind: str, timeout: float = 30.0
) -> tuple[dict[str, Any], float]:
    """The next frame of ``type`` ``kind`` and when it arrived (``perf_counter``)."""
    deadline = time.perf_counter() + timeout
    while True:
        raw = await asyncio.wait_for(conn.recv(), max(0.001, deadline - time.perf_counter()))
        now = time.perf_counter()
        frame = json.loads(raw)
        if frame["type"] == "ping":
            await conn.send('{"type":"pong"}')
        elif frame["type"] == kind:
            return frame, now


def _send_frame(conversation: str, text: str, client_msg_id: str) -> str:
    return json.dumps(
        {
            "type": "chat.send",
            "conversation_id": conversation,
            "text": text,
            "client_msg_id": client_msg_id,
        }
    )


async def _login(http: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    r = await http.post("/v1/auth/login", json={"code": f"dev:probe{uuid4().hex[:10]}"})
    r.raise_for_status()
    return r.json()["token"], r.json()["reader"]


async def probe_latency(sender_url: str, receiver_url: str, messages: int) -> dict[str, Any]:
    """Send ``messages`` chat messages one at a time from a reader on ``sender_url`` to one
    whose socket is on ``receiver_url``; latency summaries in ms."""
    async with httpx.AsyncClient(base_url=sender_url, timeout=30) as http:
        a_token, _a = await _login(http)
        b_token, b = await _login(http)
        r = await http.post(
            "/v1/conversations",
            json={"peer_id": b["id"]},
            headers={"Authorization": f"Bearer {a_token}"},
        )
        r.raise_for_status()
        conversation = r.json()["id"]
    sender, _ = await _open(sender_url, a_token)
    receiver, _ = await _open(receiver_url, b_token)
    ack_to_frame: list[float] = []
    at_to_frame: list[float] = []
    send_to_frame: list[float] = []
    try:
        for i in range(messages + 10):  # the first 10 warm up (not counted)
            started = time.perf_counter()
            await sender.send(_send_frame(conversation, f"probe {i}", f"p{i}"))
            _ack, acked = await _next(sender, "ack")
            event, arrived = await _next(receiver, "event")
            wall = time.time()
            assert event["data"]["text"] == f"probe {i}", event
            if i < 10:
                continue
            ack_to_frame.append(arrived - acked)
            send_to_frame.append(arrived - started)
            at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
            at_to_frame.append(wall - (time.perf_counter() - arrived) - at)
    finally:
        await sender.close()
        await receiver.close()
    return {
        "ack_to_frame_ms": summary_ms(ack_to_frame),
        "event_at_to_frame_ms": summary_ms(at_to_frame),
        "send_to_frame_ms": summary_ms(send_to_frame),
    }


async def probe_resume(url: str, count: int) -> dict[str, Any]:
    """Receiver offline while ``count`` messages are sent; reconnect with ``?after=``."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        a_token, _a = await _login(http)
        b_token, b = await _login(http)
        headers_a = {"Authorization": f"Bearer {a_token}"}
        r = await http.post("/v1/conversations", json={"peer_id": b["id"]}, headers=headers_a)
        r.raise_for_status()
        conversation = r.json()["id"]
        receiver, hello = await _open(url, b_token)
        last = hello["head"]
        await receiver.close()
        sender, _ = await _open(url, a_token)
        for i in range(count):
            await sender.send(_send_frame(conversation, f"offline {i}", f"o{i}"))
            await _next(sender, "ack")
        await sender.close()
        deadline = time.monotonic() + 60
        while True:  # the inbox has them all (the replay reads the inbox)
            r = await http.get(
                "/v1/inbox", params={"limit": 1}, headers={"Authorization": f"Bearer {b_token}"}
            )
            if r.json()["head"] >= last + count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    started = time.perf_counter()
    receiver, _ = await _open(url, b_token, after=last)
    first_at = None
    seqs = []
    for _ in range(count):
        event, arrived = await _next(receiver, "event")
        first_at = first_at or arrived
        seqs.append(event["seq"])
    elapsed = time.perf_counter() - started
    await receiver.close()
    in_order = seqs == list(range(last + 1, last + count + 1))
    return {
        "items": count,
        "connect_to_last_frame_ms": round(elapsed * 1000, 1),
        "connect_to_first_frame_ms": round(((first_at or started) - started) * 1000, 1),
        "items_per_s": round(count / elapsed, 1),
        "in_order_once": in_order,
    }


async def _run(args: argparse.Namespace, urls: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": "delivery_probe",
        "params": {"messages": args.messages, "resume": args.resume, "nodes": len(urls)},
    }
    log(f"latency, same node: {args.messages} messages")
    result["same_node"] = await probe_latency(urls[0], urls[0], args.messages)
    if len(urls) > 1:
        log(f"latency, cross node: {args.messages} messages")
        result["cross_node"] = await probe_latency(urls[0], urls[1], args.messages)
    if args.resume:
        log(f"resume: {args.resume} items")
        result["resume"] = await probe_resume(urls[0], args.resume)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200, help="measured messages (200)")
    parser.add_argument("--resume", type=int, default=1000, help="items to resume (1000; 0: skip)")
    parser.add_argument("--url", help="probe this running server instead of starting two")
    args = parser.parse_args(argv)
    if args.url:
        result = asyncio.run(_run(args, [args.url.rstrip("/")]))
    else:
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liudong-probe-")))
            svc = stack.enter_context(services(work))
            database_url = stack.enter_context(throwaway_database(svc.server_url, "probe"))
            nodes = []
            for name in ("a", "b"):
                log(f"starting liudong serve ({name})")
                log_path = work / f"{name}.log"
                server = ServerProcess(database_url, svc.nats_url, work / name, log_path)
                nodes.append(stack.enter_context(server))
            result = asyncio.run(_run(args, [n.url for n in nodes]))
            result["machine"] = machine_info(svc)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
