"""``commands``: the loan life cycle over real HTTP at 1, 16 and 64 concurrent clients.

Each client is one owner/borrower pair with one book, looping the loan life cycle
``request → approve → return → confirm-return`` (four commands, each a POST that records
events and waits for the shelf read model: read-your-writes, as a client gets it). A client
has one request in flight at a time, so N clients are N concurrent requests. Latency is
measured by the client from writing the request to reading the whole response; throughput
counts the commands completed inside the measuring window (after a warm-up), and the
latencies are those of the commands completed inside it.

Baseline: raw psycopg single-row ``INSERT`` autocommit transactions per second at the same
concurrency (N async connections in one process, a 300-byte row each, on the same
PostgreSQL server): the ceiling of "one durable row per request".
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.common import (
    HttpConnection,
    ServerProcess,
    Target,
    cpu_seconds,
    json_decode,
    log,
    summary_ms,
    throwaway_database,
)

ISBN = "9787536692930"
_STEP_FROM_STATUS = {"requested": 1, "approved": 2, "returning": 3}


@dataclass
class Pair:
    """One client: an owner and a borrower (a connection each) sharing one book."""

    owner: HttpConnection
    borrower: HttpConnection
    book_id: str
    loan_id: str | None = None
    step: int = 0  # 0 request, 1 approve, 2 return, 3 confirm-return

    def next_request(self) -> tuple[str, HttpConnection, str, Any]:
        if self.step == 0:
            return "request", self.borrower, f"/v1/books/{self.book_id}/loans", {"note": "bench"}
        if self.step == 1:
            return "approve", self.owner, f"/v1/loans/{self.loan_id}/approve", None
        if self.step == 2:
            return "return", self.borrower, f"/v1/loans/{self.loan_id}/return", None
        return "confirm-return", self.owner, f"/v1/loans/{self.loan_id}/confirm-return", None

    async def resync(self) -> None:
        """After an unexpected answer: read the loan and continue from its state."""
        if self.loan_id is None:
            self.step = 0
            return
        status, body = await self.owner.request("GET", f"/v1/loans/{self.loan_id}")
        state = json_decode(body).get("status") if status == 200 else None
        self.step = _STEP_FROM_STATUS.get(state or "", 0)
        if self.step == 0:
            self.loan_id = None


@dataclass
class Window:
    start: float
    end: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    completed: int = 0
    accepted: int = 0  # 202: recorded, read model not caught up within the timeout
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


async def _client(pair: Pair, window: Window, pace: float | None = None) -> None:
    """Run ``pair``'s life cycle until ``window.end``: back to back, or one command every
    ``pace`` seconds (open loop: a slow answer does not delay the next slot)."""
    next_at = time.perf_counter()
    while True:
        if pace is not None:
            next_at += pace
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        started = time.perf_counter()
        if started >= window.end:
            return
        kind, conn, path, body = pair.next_request()
        try:
            status, data = await conn.request("POST", path, body)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            status, data = 599, repr(exc).encode()
            await conn.close()
        finished = time.perf_counter()
        inside = window.start <= finished <= window.end
        if status in (200, 201, 202):
            if pair.step == 0:
                pair.loan_id = json_decode(data)["id"]
            pair.step = (pair.step + 1) % 4
            if inside:
                window.completed += 1
                window.accepted += status == 202
                window.latencies.setdefault(kind, []).append(finished - started)
        else:
            if inside:
                window.errors += 1
            if len(window.error_samples) < 5:
                window.error_samples.append(f"{kind}: {status} {data[:200]!r}")
            await pair.resync()


async def _setup_pairs(base_url: str, count: int, run_id: str) -> list[Pair]:
    async def one(i: int) -> Pair:
        anon = HttpConnection(base_url)
        try:
            o = await anon.json("POST", "/v1/auth/login", {"code": f"dev:b{run_id}o{i}"}, 200)
            b = await anon.json("POST", "/v1/auth/login", {"code": f"dev:b{run_id}b{i}"}, 200)
        finally:
            await anon.close()
        owner = HttpConnection(base_url, o["token"])
        borrower = HttpConnection(base_url, b["token"])
        book = await owner.json("POST", "/v1/books", {"isbn": ISBN, "title": f"三体 {i}"}, 201)
        return Pair(owner, borrower, book["id"])

    sem = asyncio.Semaphore(8)

    async def limited(i: int) -> Pair:
        async with sem:
            return await one(i)

    return list(await asyncio.gather(*(limited(i) for i in range(count))))


async def _drive(
    pairs: list[Pair], warmup: float, duration: float, server_pid: int
) -> tuple[Window, float]:
    now = time.perf_counter()
    window = Window(start=now + warmup, end=now + warmup + duration)
    tasks = [asyncio.create_task(_client(p, window)) for p in pairs]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    cpu0 = cpu_seconds(server_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    cpu = cpu_seconds(server_pid) - cpu0
    await asyncio.gather(*tasks)
    return window, cpu


async def _raw_inserts(
    url: str, clients: int, warmup: float, duration: float
) -> tuple[float, list[float]]:
    """Single-row autocommit INSERTs from ``clients`` connections; returns (tx/s, latencies)."""
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(clients)]
    payload = os.urandom(300)
    now = time.perf_counter()
    start, end = now + warmup, now + warmup + duration
    latencies: list[float] = []
    count = 0

    async def loop(conn: psycopg.AsyncConnection[Any]) -> None:
        nonlocal count
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            await conn.execute(
                "INSERT INTO bench_raw_insert (originator_id, payload) VALUES (%s, %s)",
                (uuid.uuid4(), payload),
            )
            t1 = time.perf_counter()
            if start <= t1 <= end:
                count += 1
                latencies.append(t1 - t0)

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return count / duration, latencies


def run(ctx: Any) -> None:
    levels = (1, 16, 64)
    duration = ctx.size(20.0, 2.0)
    warmup = ctx.size(3.0, 1.0)
    run_id = uuid.uuid4().hex[:6]
    with throwaway_database(ctx.svc.server_url, "commands") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bench_raw_insert (id bigserial PRIMARY KEY, "
                "originator_id uuid NOT NULL, payload bytea NOT NULL)"
            )
        # The database ceiling is measured before the server starts: the server's own pool,
        # runners and relay hold ~40 connections, and 64 more would pass the default
        # max_connections (100) of a stock PostgreSQL.
        baselines = {
            clients: asyncio.run(_raw_inserts(url, clients, min(warmup, 1.0), duration))
            for clients in levels
        }
        server = ServerProcess(
            url,
            ctx.svc.nats_url,
            ctx.work_dir / "server-commands",
            ctx.work_dir / "server-commands.log",
        )
        with server:
            log(
                f"commands: server pid {server.pid} on {server.url}; setting up {max(levels)} pairs"
            )

            async def main() -> None:
                pairs = await _setup_pairs(server.url, max(levels), run_id)
                for clients in levels:
                    window, cpu = await _drive(pairs[:clients], warmup, duration, server.pid)
                    base_tps, base_lat = baselines[clients]
                    _emit(ctx, clients, duration, window, cpu, base_tps, base_lat)
                for pair in pairs:
                    await pair.owner.close()
                    await pair.borrower.close()

            asyncio.run(main())


def _emit(
    ctx: Any,
    clients: int,
    duration: float,
    window: Window,
    server_cpu: float,
    base_tps: float,
    base_lat: list[float],
) -> None:
    every = [x for xs in window.latencies.values() for x in xs]
    lat = summary_ms(every)
    base = summary_ms(base_lat)
    tps = window.completed / duration
    params = {
        "clients": clients,
        "duration_s": duration,
        "commands": window.completed,
        "accepted_202": window.accepted,
        "errors": window.errors,
        "latency_ms": lat,
        "per_command_p50_ms": {k: summary_ms(v)["p50"] for k, v in window.latencies.items()},
        "per_command_p99_ms": {k: summary_ms(v)["p99"] for k, v in window.latencies.items()},
        "server_cpu_ms_per_command": round(server_cpu * 1000 / window.completed, 3)
        if window.completed
        else None,
        "server_cpu_cores": round(server_cpu / duration, 2),
        "baseline": "raw psycopg single-row INSERT autocommit transactions, same concurrency",
        "baseline_latency_ms": base,
    }
    if window.error_samples:
        params["error_samples"] = window.error_samples
    top = clients == 64
    log(
        f"commands c={clients}: {tps:.0f}/s p50 {lat['p50']} ms p99 {lat['p99']} ms "
        f"(raw insert {base_tps:.0f}/s); errors {window.errors}"
    )
    ctx.emit(
        f"commands.c{clients}.throughput",
        tps,
        "commands/s",
        baseline=base_tps,
        target=Target(">=", 2000) if top else None,
        params=params,
    )
    ctx.emit(
        f"commands.c{clients}.p50",
        lat["p50"],
        "ms",
        baseline=base["p50"],
        params={"clients": clients, "baseline": "raw INSERT transaction p50"},
    )
    ctx.emit(
        f"commands.c{clients}.p99",
        lat["p99"],
        "ms",
        baseline=base["p99"],
        target=Target("<=", 50) if top else None,
        params={"clients": clients, "baseline": "raw INSERT transaction p99"},
    )
