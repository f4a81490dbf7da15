"""``fanout``: room broadcast, frames delivered per second by one process.

One ``liudong serve`` process, one room (created with the ``CreateRoom`` command), ``M``
sockets joined to it (1,000; readers bulk-loaded, ``bench.realtime_setup``). ``K`` of them (8)
send ``room.send`` in a closed loop: each sends its next message once its previous one came
back to it as a ``room.message`` (so the offered load follows what the server delivers and no
socket queue overflows). Every ``room.message`` frame received by any socket inside the
window counts. The client is ``bench.wsclient`` (one process, frames counted, not decoded).

Baseline: the same client, sockets and loop against ``bench.ws_baseline``, a bare
``websockets`` broadcast server (``broadcast()`` to every connection; no database, NATS or
per-socket queue), run as a separate process in the same run; and, when ``node`` and ``npm``
are on PATH, against a Node ``ws`` server doing the same (``bench/peers/ws``,
``fanout.peer.node_ws``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import msgspec

from bench.common import (
    _UNLIMITED,
    REPO_ROOT,
    ServerProcess,
    Target,
    cpu_seconds,
    free_port,
    log,
    throwaway_database,
)
from bench.peers import PeerUnavailable, ws_peer
from bench.realtime_setup import bulk_readers, create_room, require_realtime, wait_projection
from bench.wsclient import WsClient, connect_many

ROOM = "bench-fanout"
_MESSAGE = b'{"type":"room.message"'
_JOINED = b'{"type":"room.joined"'
_ERROR = b'{"type":"error"'
_decode = msgspec.json.Decoder().decode


class _Run:
    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.frames = 0
        self.all_frames = 0
        self.joined = 0
        self.errors: dict[str, int] = {}
        self.last_frame = time.perf_counter()
        self.waiting: dict[str, asyncio.Future[None]] = {}

    def on_text(self, client: WsClient, payload: bytes, at: float) -> None:
        self.last_frame = at
        if payload.startswith(_MESSAGE):
            self.all_frames += 1
            if self.start <= at <= self.end:
                self.frames += 1
            if client.user is not None and self.waiting:
                text = _decode(payload).get("text")
                future = self.waiting.pop(text, None)
                if future is not None and not future.done():
                    future.set_result(None)
        elif payload.startswith(_JOINED):
            self.joined += 1
        elif payload.startswith(_ERROR) and client.user is not None:
            error = _decode(payload)
            code = str(error.get("code"))
            self.errors[code] = self.errors.get(code, 0) + 1
            k, _, i = str(error.get("client_msg_id") or "f-").partition("-")
            future = self.waiting.pop(f"fan {k[1:]} {i}", None)  # refused: send the next one
            if future is not None and not future.done():
                future.set_result(None)


async def _fanout(
    base_url: str, tokens: list[str | None], senders: int, warmup: float, duration: float, pid: int
) -> dict[str, Any]:
    run = _Run()
    clients = await connect_many(base_url, tokens, concurrency=100, on_text=run.on_text)
    for client in clients:
        client.send_text(f'{{"type":"room.join","room":"{ROOM}"}}')
    deadline = time.monotonic() + 120
    while run.joined < len(clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    while time.perf_counter() - run.last_frame < 1.0:  # let the join/presence frames drain
        await asyncio.sleep(0.2)
    for k in range(senders):
        clients[k].user = k
    log(f"fanout: {run.joined} sockets joined; sending")
    now = time.perf_counter()
    run.start, run.end = now + warmup, now + warmup + duration
    sent = 0
    timeouts = 0

    async def sender(k: int) -> None:
        nonlocal sent, timeouts
        client = clients[k]
        i = 0
        while time.perf_counter() < run.end:
            text = f"fan {k} {i}"
            future = asyncio.get_running_loop().create_future()
            run.waiting[text] = future
            client.send_text(
                msgspec.json.encode(
                    {"type": "room.send", "room": ROOM, "text": text, "client_msg_id": f"f{k}-{i}"}
                ).decode()
            )
            try:
                await asyncio.wait_for(future, 10)
            except TimeoutError:
                timeouts += 1
                run.waiting.pop(text, None)
            sent += 1
            i += 1

    await asyncio.sleep(0)
    cpu0 = None
    tasks = [asyncio.create_task(sender(k)) for k in range(senders)]
    await asyncio.sleep(warmup)
    cpu0 = cpu_seconds(pid)
    await asyncio.sleep(duration)
    cpu = cpu_seconds(pid) - cpu0
    await asyncio.gather(*tasks)
    closed = sum(1 for c in clients if c.close_code is not None)
    codes: dict[int, int] = {}
    for c in clients:
        if c.close_code is not None:
            codes[c.close_code] = codes.get(c.close_code, 0) + 1
    for client in clients:
        client.abort()
    return {
        "frames_per_s": run.frames / duration,
        "frames": run.frames,
        "messages_sent": sent,
        "send_timeouts": timeouts,
        "send_errors": run.errors,
        "sockets_closed": closed,
        "close_codes": codes,
        "server_cpu_cores": round(cpu / duration, 2),
        "members": len(clients),
    }


def run(ctx: Any) -> None:
    require_realtime()
    members = ctx.size(1000, 100)
    senders = ctx.size(8, 4)
    warmup, duration = ctx.size(3.0, 1.0), ctx.size(15.0, 3.0)
    with throwaway_database(ctx.svc.server_url, "fanout") as url:
        readers = bulk_readers(url, members, prefix="f")
        create_room(url, ROOM, "Bench fan-out")
        server = ServerProcess(
            url,
            ctx.svc.nats_url,
            ctx.work_dir / "server-fanout",
            ctx.work_dir / "server-fanout.log",
            # the senders loop as fast as the messages come back: the default room.send
            # limit (30/minute per reader) would make this measure the rate limiter
            extra_env={"LIUDONG_RATE_ROOM_SENDS": _UNLIMITED},
        )
        with server:
            wait_projection(url, "shelf", "library")
            log(f"fanout: {members} sockets, {senders} senders, product")
            product = asyncio.run(
                _fanout(server.url, [t for _, t in readers], senders, warmup, duration, server.pid)
            )
    port = free_port()
    log("fanout: bare websockets broadcast server (baseline)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.ws_baseline", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        base = asyncio.run(
            _fanout(
                f"http://127.0.0.1:{port}", [None] * members, senders, warmup, duration, proc.pid
            )
        )
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    node: dict[str, Any] | None = None
    node_skipped = None
    try:
        with ws_peer(ctx.work_dir.parent, ctx.work_dir / "node_ws.log") as peer:
            log(f"fanout: Node ws broadcast server (pid {peer.pid})")
            node = asyncio.run(
                _fanout(peer.url, [None] * members, senders, warmup, duration, peer.pid)
            )
    except PeerUnavailable as exc:
        node_skipped = str(exc)
        log(f"fanout: Node ws peer skipped: {exc}")
    log(
        f"fanout: {product['frames_per_s']:,.0f} frames/s (bare websockets "
        f"{base['frames_per_s']:,.0f}/s"
        + (f", Node ws {node['frames_per_s']:,.0f}/s)" if node else ")")
    )
    ctx.emit(
        "fanout.frames_per_s",
        product["frames_per_s"],
        "frames/s",
        baseline=base["frames_per_s"],
        target=Target(">=", 25_000),
        params={
            **product,
            "senders": senders,
            "duration_s": duration,
            "baseline": "bare websockets broadcast server, same client and load",
            "baseline_run": base,
            "node_ws_run": node,
        },
    )
    ctx.emit(
        "fanout.vs_node_ws",
        product["frames_per_s"] if node else None,
        "frames/s",
        baseline=node["frames_per_s"] if node else None,
        target=Target(">=", 0.8, on="ratio"),
        params={
            "server_cpu_cores": product.get("server_cpu_cores"),
            "node_ws_server_cpu_cores": (node or {}).get("server_cpu_cores"),
            "baseline": "Node ws broadcast server (bench/peers/ws), same client and load",
        },
        skipped=node_skipped,
    )
    ctx.emit(
        "fanout.peer.node_ws",
        node["frames_per_s"] if node else None,
        "frames/s",
        params={
            **(node or {}),
            "what": "Node ws broadcast server (bench/peers/ws), same client and load",
        },
        skipped=node_skipped,
    )
