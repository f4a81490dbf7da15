"""``delivery``: from a command's commit to the frame at the receiving WebSocket, p50/p99,
with 100 and 1,000 connected sockets and background load.

One ``liudong serve`` process. ``S`` readers (bulk-loaded, ``bench.realtime_setup``) each hold
one socket (``bench.wsclient``), paired into S/2 open conversations. Probe messages go out at
a fixed rate (20/s, open loop: a slow delivery does not slow the probe down), each a
``chat.send`` from one member's socket, round-robin over the conversations; the frame
measured is the ``event`` (``chat.message``) at the *other* member's socket. Meanwhile 8 HTTP
clients run the loan life cycle (``commands`` scenario's clients, on readers without
sockets) at a fixed 20 commands/s in all: the background load of the projections, relay and
database. (Back-to-back clients would saturate a 2-vCPU server, and the figure would then be
its queueing delay, not delivery.)

Two clocks, same machine (the path is commit → inbox projection page → relay → JetStream →
gateway → socket):

- ``event_at_to_frame`` (the figure): the event's own timestamp, taken just before its INSERT,
  to the frame's arrival. It includes the commit itself, so it is an upper bound of commit →
  frame.
- ``ack_to_frame`` (in params): the sender's ``ack`` (pushed right after the command
  committed) to the frame; a lower bound (it leaves out the ack's own trip), as in
  ``bench.delivery_probe``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from bench.common import ServerProcess, Target, log, summary_ms, throwaway_database
from bench.realtime_setup import (
    bulk_readers,
    open_conversations,
    require_realtime,
    wait_projection,
)
from bench.scenarios import commands
from bench.wsclient import WsClient, connect_many

_ACK = b'{"type":"ack"'
_EVENT = b'{"type":"event"'
_decode = msgspec.json.Decoder().decode


@dataclass
class _Probe:
    receiver: str
    sent: float
    ack: float | None = None
    frame: float | None = None
    at: float | None = None  # the event's timestamp (wall clock, seconds)


class _Tracker:
    def __init__(self) -> None:
        self.pending: dict[str, _Probe] = {}

    def on_text(self, client: WsClient, payload: bytes, at: float) -> None:
        if payload.startswith(_ACK):
            probe = self.pending.get(_decode(payload).get("client_msg_id"))
            if probe is not None and probe.ack is None:
                probe.ack = at
        elif payload.startswith(_EVENT):
            frame = _decode(payload)
            if frame.get("kind") != "chat.message":
                return
            probe = self.pending.get(frame["data"].get("client_msg_id"))
            if probe is not None and client.user == probe.receiver and probe.frame is None:
                probe.frame = at
                probe.at = datetime.fromisoformat(frame["at"].replace("Z", "+00:00")).timestamp()


def run(ctx: Any) -> None:
    require_realtime()
    levels = ctx.size((100, 1000), (20, 100))
    with throwaway_database(ctx.svc.server_url, "delivery") as url:
        readers = bulk_readers(url, max(levels), prefix="d")
        pairs = [(readers[i][0], readers[i + 1][0]) for i in range(0, max(levels), 2)]
        conversations = open_conversations(url, pairs)
        server = ServerProcess(
            url,
            ctx.svc.nats_url,
            ctx.work_dir / "server-delivery",
            ctx.work_dir / "server-delivery.log",
        )
        with server:
            wait_projection(url, "shelf", "library")
            wait_projection(url, "inbox", "chat")
            asyncio.run(_measure(ctx, server, readers, conversations, levels))


async def _measure(
    ctx: Any,
    server: ServerProcess,
    readers: list[Any],
    conversations: list[Any],
    levels: tuple[int, ...],
) -> None:
    rate = 20.0
    duration = ctx.size(30.0, 3.0)
    warmup = ctx.size(3.0, 0.5)
    background_clients = ctx.size(8, 2)
    background_rate = ctx.size(20.0, 5.0)  # commands/s over all background clients
    offset = time.time() - time.perf_counter()
    tracker = _Tracker()
    bg_pairs = await commands._setup_pairs(server.url, background_clients, uuid.uuid4().hex[:6])
    bg = commands.Window(start=0.0, end=float("inf"))
    bg_started = time.perf_counter()
    pace = background_clients / background_rate
    bg_tasks = [asyncio.create_task(commands._client(p, bg, pace)) for p in bg_pairs]
    clients: list[WsClient] = []
    try:
        for sockets in levels:
            more = await connect_many(
                server.url,
                [t for _, t in readers[len(clients) : sockets]],
                concurrency=50,
                on_text=tracker.on_text,
            )
            for client, (reader_id, _) in zip(more, readers[len(clients) : sockets], strict=True):
                client.user = str(reader_id)
            clients.extend(more)
            bg_before = bg.completed
            t_bg = time.perf_counter()
            probes = await _probe(
                tracker,
                clients,
                readers,
                conversations,
                sockets,
                rate,
                warmup,
                duration,
                f"s{sockets}",
            )
            bg_rate = (bg.completed - bg_before) / (time.perf_counter() - t_bg)
            _emit(
                ctx,
                sockets,
                probes,
                offset,
                rate,
                duration,
                bg_rate,
                background_clients,
                sum(1 for c in clients if c.close_code is not None),
            )
    finally:
        bg.end = time.perf_counter()
        await asyncio.gather(*bg_tasks, return_exceptions=True)
        for client in clients:
            client.abort()
        for pair in bg_pairs:
            await pair.owner.close()
            await pair.borrower.close()
    log(
        f"delivery: background {bg.completed / (time.perf_counter() - bg_started):.0f} commands/s, "
        f"{bg.errors} errors"
    )


async def _probe(
    tracker: _Tracker,
    clients: list[WsClient],
    readers: list[Any],
    conversations: list[Any],
    sockets: int,
    rate: float,
    warmup: float,
    duration: float,
    tag: str,
) -> list[_Probe]:
    started = time.perf_counter()
    count = int((warmup + duration) * rate)
    measured: list[_Probe] = []
    pairs = sockets // 2
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        j = i % pairs
        a, b = 2 * j, 2 * j + 1
        sender, receiver = (a, b) if (i // pairs) % 2 == 0 else (b, a)
        cmid = f"{tag}-{i}"
        probe = _Probe(receiver=str(readers[receiver][0]), sent=time.perf_counter())
        tracker.pending[cmid] = probe
        clients[sender].send_text(
            msgspec.json.encode(
                {
                    "type": "chat.send",
                    "conversation_id": str(conversations[j]),
                    "text": f"probe {i} 你好",
                    "client_msg_id": cmid,
                }
            ).decode()
        )
        if i >= warmup * rate:
            measured.append(probe)
    deadline = time.perf_counter() + 10
    while any(p.frame is None for p in measured) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return measured


def _emit(
    ctx: Any,
    sockets: int,
    probes: list[_Probe],
    offset: float,
    rate: float,
    duration: float,
    bg_rate: float,
    bg_clients: int,
    closed: int,
) -> None:
    got = [p for p in probes if p.frame is not None]
    at_to_frame = [p.frame + offset - p.at for p in got if p.at is not None]  # type: ignore[operator]
    ack_to_frame = [p.frame - p.ack for p in got if p.ack is not None]  # type: ignore[operator]
    send_to_frame = [p.frame - p.sent for p in got]  # type: ignore[operator]
    main = summary_ms(at_to_frame)
    params = {
        "sockets": sockets,
        "probe_rate_per_s": rate,
        "duration_s": duration,
        "probes": len(probes),
        "lost": len(probes) - len(got),
        "sockets_closed": closed,
        "event_at_to_frame_ms": main,
        "ack_to_frame_ms": summary_ms(ack_to_frame),
        "send_to_frame_ms": summary_ms(send_to_frame),
        "background": f"{bg_clients} HTTP clients running the loan life cycle, paced",
        "background_commands_per_s": round(bg_rate, 1),
    }
    log(
        f"delivery s={sockets}: p50 {main['p50']} ms p99 {main['p99']} ms "
        f"(ack→frame p99 {params['ack_to_frame_ms']['p99']} ms); lost {params['lost']}"
    )
    top = sockets >= 1000
    ctx.emit(f"delivery.s{sockets}.p50", main["p50"], "ms", params=params)
    ctx.emit(
        f"delivery.s{sockets}.p99",
        main["p99"],
        "ms",
        target=Target("<=", 25) if top else None,
        params={"sockets": sockets, "ack_to_frame_p99_ms": params["ack_to_frame_ms"]["p99"]},
    )
