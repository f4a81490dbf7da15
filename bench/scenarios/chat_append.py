"""``chat_append``: the latency of sending message 10,000 of one conversation vs message 10.

Over real HTTP (``POST /v1/conversations/{id}/messages``, the two members taking turns, one
request at a time) when the server has that route; otherwise through ``Chat.handle`` in this
process (the command path without HTTP), and ``params.path`` says which.

A single send is too noisy to compare, and every 100th version of a conversation also takes a
snapshot, so each figure is the median over a window of ``W`` consecutive sends starting at
that message number (W = 100 covers one whole snapshot cycle): messages 10..109 against
messages 10,000..10,099.

How the conversation gets to message 9,999: messages 1..9 go through ``Chat.handle``; the
ones between the two windows (110..9,999) are bulk-loaded, because sending them one by one
takes minutes on a loaded 2-vCPU machine: the conversation is loaded with the Chat
Application's repository, the real ``Conversation.send`` produces each event, and the
Application's mapper encodes the events and, at every version divisible by 100, the snapshot
the Application would have taken (``Snapshot.take``); both are COPYed into ``chat_events`` /
``chat_snapshots`` under the events table's lock. So message 10,000 finds exactly the stream
shape (snapshot + ≤ 99 events) that 9,999 single sends leave. Before each window the server's
inbox projection has caught up, so both windows meet the same read-model state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from uuid import UUID

import psycopg

from bench.common import (
    HttpConnection,
    ServerProcess,
    Target,
    json_decode,
    log,
    summary_ms,
    throwaway_database,
)

ROUTE = "/v1/conversations/{conversation_id}/messages"


def _wait_inbox(url: str, position: int, timeout: float = 300.0) -> float:
    """Until the inbox projection has processed the chat log up to ``position``, and the
    server's relay has published its items to NATS (``relay_tracking``): the bulk-loaded
    messages' items would otherwise still be publishing during the measured window, which
    no real conversation at message 10,000 has pending. Returns the seconds the relay
    took after the inbox had caught up."""
    from projections.board import tracked_position

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while tracked_position(conn, "inbox", "chat") < position:
            if time.monotonic() > deadline:
                raise RuntimeError(f"inbox did not reach chat position {position}")
            time.sleep(0.05)
        inbox_done = time.monotonic()
        while True:
            row = conn.execute(
                "SELECT position FROM relay_tracking WHERE source = 'chat'"
            ).fetchone()
            if row is not None and row[0] >= position:
                return time.monotonic() - inbox_done
            if time.monotonic() > deadline:
                raise RuntimeError(f"the relay did not reach chat position {position}")
            time.sleep(0.05)


def _fill(chat: Any, conversation_id: UUID, members: list[UUID], first: int, last: int) -> int:
    """Send messages ``first..last`` through ``Chat.handle``; returns the last position."""
    from domain.chat_commands import SendMessage

    position = 0
    for n in range(first, last + 1):
        recorded = chat.handle(
            SendMessage(
                conversation_id=conversation_id,
                sender_id=members[n % 2],
                text=f"message {n} 你好",
                client_msg_id=f"fill-{n}",
            )
        )
        position = recorded.position or position
    return position


def _bulk_fill(
    url: str, chat: Any, conversation_id: UUID, members: list[UUID], first: int, last: int
) -> int:
    """Messages ``first..last`` (and their snapshots) bulk-loaded; returns the log head."""
    from bench.loader import copy_stored

    conversation = chat.conversation(conversation_id)
    snapshot_class = getattr(type(conversation), "Snapshot", None) or chat.snapshot_class
    interval = chat.snapshotting_intervals[type(conversation)]
    snapshots = []
    for n in range(first, last + 1):
        conversation.send(members[n % 2], f"message {n} 你好", f"fill-{n}")
        if conversation.version % interval == 0:  # encoded now: the state keeps changing
            snapshots.append(chat.mapper.to_stored_event(snapshot_class.take(conversation)))
    stored = [chat.mapper.to_stored_event(e) for e in conversation.collect_events()]
    with psycopg.connect(url) as conn:
        with conn.transaction():
            copy_stored(conn, "chat_events", stored)
            copy_stored(conn, "chat_snapshots", snapshots)
        row = conn.execute("SELECT max(notification_id) FROM chat_events").fetchone()
    return int(row[0]) if row else 0


def run(ctx: Any) -> None:
    from api.bootstrap.db import eventsourcing_env
    from domain.chat import Chat

    target_n = ctx.size(10_000, 300)
    early_n = 10
    window = ctx.size(100, 10)
    with throwaway_database(ctx.svc.server_url, "chat") as url:
        server = ServerProcess(
            url, ctx.svc.nats_url, ctx.work_dir / "server-chat", ctx.work_dir / "server-chat.log"
        )
        chat = Chat(env=eventsourcing_env(url, pool_size=2))
        try:
            with server:
                over_http = any(
                    p.rstrip("/") == ROUTE
                    or p.startswith("/v1/conversations/{")
                    and p.endswith("/messages")
                    for p in server.openapi_paths()
                )
                asyncio.run(_measure(ctx, server, url, chat, over_http, early_n, target_n, window))
        finally:
            chat.close()


async def _measure(
    ctx: Any,
    server: ServerProcess,
    url: str,
    chat: Any,
    over_http: bool,
    early_n: int,
    target_n: int,
    window: int,
) -> None:
    from domain.chat_commands import OpenConversation, SendMessage

    run_id = uuid.uuid4().hex[:6]
    anon = HttpConnection(server.url)
    a = await anon.json("POST", "/v1/auth/login", {"code": f"dev:chat{run_id}a"}, 200)
    b = await anon.json("POST", "/v1/auth/login", {"code": f"dev:chat{run_id}b"}, 200)
    await anon.close()
    members = [UUID(a["reader"]["id"]), UUID(b["reader"]["id"])]
    conns = [HttpConnection(server.url, a["token"]), HttpConnection(server.url, b["token"])]
    if over_http:
        opened = await conns[0].json(
            "POST", "/v1/conversations", {"peer_id": str(members[1])}, (200, 201, 202)
        )
        conversation_id = UUID(opened["id"])
    else:
        conversation_id = chat.handle(OpenConversation(reader_id=members[0], peer_id=members[1])).id
    path = f"/v1/conversations/{conversation_id}/messages"
    accepted = 0
    seqs: dict[int, int] = {}

    async def send(n: int) -> float:
        nonlocal accepted
        sender = n % 2
        body = {"text": f"message {n} 你好", "client_msg_id": f"m-{n}"}
        t0 = time.perf_counter()
        if over_http:
            status, data = await conns[sender].request("POST", path, body)
            if status not in (201, 202):
                raise RuntimeError(f"send {n}: HTTP {status} {data[:200]!r}")
            elapsed = time.perf_counter() - t0
            accepted += status == 202
            seqs[n] = int(json_decode(data).get("seq", -1))
            return elapsed
        recorded = await asyncio.to_thread(
            chat.handle,
            SendMessage(conversation_id=conversation_id, sender_id=members[sender], **body),
        )
        seqs[n] = recorded.seq
        return time.perf_counter() - t0

    async def measure_window(start: int) -> list[float]:
        return [await send(n) for n in range(start, start + window)]

    fill_started = time.monotonic()
    position = await asyncio.to_thread(_fill, chat, conversation_id, members, 1, early_n - 1)
    await asyncio.to_thread(_wait_inbox, url, position)
    early = await measure_window(early_n)
    log(
        f"chat_append: window at {early_n}: p50 {summary_ms(early)['p50']} ms; filling to "
        f"{target_n - 1}"
    )
    t_fill = time.monotonic()
    position = await asyncio.to_thread(
        _bulk_fill, url, chat, conversation_id, members, early_n + window, target_n - 1
    )
    fill_seconds = time.monotonic() - t_fill
    relay_seconds = await asyncio.to_thread(_wait_inbox, url, position)
    log(
        f"chat_append: the relay published the bulk-loaded items {relay_seconds:.1f} s after the inbox"
    )
    late = await measure_window(target_n)
    for conn in conns:
        await conn.close()
    wrong = {n: seq for n, seq in seqs.items() if seq != n}
    if wrong:
        raise RuntimeError(f"sends got unexpected seqs (message n should be seq n): {wrong}")
    e, lt = summary_ms(early), summary_ms(late)
    params = {
        "path": "HTTP POST /v1/conversations/{id}/messages"
        if over_http
        else "Chat.handle(SendMessage) in-process (no HTTP route yet)",
        "window": window,
        "message_early": f"{early_n}..{early_n + window - 1}",
        "message_late": f"{target_n}..{target_n + window - 1}",
        "early_ms": e,
        "late_ms": lt,
        "single_send_ms": {
            str(early_n): round(early[0] * 1000, 3),
            str(target_n): round(late[0] * 1000, 3),
        },
        "accepted_202": accepted,
        "fill": f"messages 1..{early_n - 1} through Chat.handle; {early_n + window}.."
        f"{target_n - 1} bulk-loaded with their snapshots (module docstring)",
        "fill_seconds": round(fill_seconds, 1),
        "relay_catch_up_seconds": round(relay_seconds, 2),
        "setup_s": round(time.monotonic() - fill_started, 1),
        "baseline": f"the same window at message {early_n}",
    }
    log(f"chat_append: window at {target_n}: p50 {lt['p50']} ms vs {e['p50']} ms")
    ctx.emit(
        f"chat_append.msg{target_n}.p50",
        lt["p50"],
        "ms",
        baseline=e["p50"],
        target=Target("<=", 1.5, on="ratio"),
        params=params,
    )
    ctx.emit(
        f"chat_append.msg{target_n}.p99",
        lt["p99"],
        "ms",
        baseline=e["p99"],
        params={"window": window, "baseline": f"the same window at message {early_n}"},
    )
