"""``commands``: the loan life cycle over real HTTP at 1, 16 and 64 concurrent clients, beside
peers measured in the same run with the same client.

**Liudong.** Each client is one owner/borrower pair with one book, looping the loan life
cycle ``request → approve → return → confirm-return`` (four commands, each a POST that
records events and waits for the shelf read model: read-your-writes, as a client gets it;
the request carries a note, so it also opens the pair's conversation and posts the note). A
client has one request in flight at a time, so N clients are N concurrent requests. Latency
is measured by the client from writing the request to reading the whole response;
throughput counts the commands completed inside the measuring window (after a warm-up), and
the latencies are those of the commands completed inside it.

**Peers** (``bench.peers``), each a separate server process on the same database, measured
one after the other at the same concurrency with the same client (``HttpConnection``,
``POST`` with a small JSON body, one request in flight per connection):

- ``es_save``: a Litestar app doing a plain eventsourcing 9.5 ``Application.save()`` of a
  new aggregate per request: **the baseline** of Liudong's figures (its targets are ratios
  to it);
- ``litestar_insert``: a Litestar + uvicorn async app doing one ``INSERT`` via a psycopg
  pool;
- ``express_insert``: Express + ``pg``, one ``INSERT`` (when ``node`` and ``npm`` are on
  PATH);
- ``raw_insert``: no HTTP at all, N psycopg async connections doing single-row autocommit
  ``INSERT``s (the database's ceiling for one durable row per request).

**What the server costs** (``bench.dbstats``), for Liudong and each HTTP peer in each
window: CPU seconds of the server's process tree (``/proc``, uvicorn workers included; the
split by process is in ``params``), transactions (``pg_stat_database`` of the bench's own
database) and, when ``pg_stat_statements`` is loaded, its count of statements; each per
command. Then Liudong is started a second time behind ``bench.dbstats.CountingProxy``, which
counts statements (Query and Execute messages) and transactions on the wire: while idle (per
second), per command of each kind (one client, each command followed by a pause in which its
asynchronous work settles), and at the top concurrency. Timings are never taken through the
proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.common import (
    HttpConnection,
    ServerProcess,
    Target,
    cpu_split,
    json_decode,
    log,
    summary_ms,
    throwaway_database,
    tree_cpu_seconds,
)
from bench.dbstats import CountingProxy, DbCounters
from bench.peers import PeerProcess, PeerUnavailable, express_peer, uvicorn_peer

ISBN = "9787536692930"
_STEP_FROM_STATUS = {"requested": 1, "approved": 2, "returning": 3}
KINDS = ("request", "approve", "return", "confirm-return")
BASELINE = "es_save"


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

    async def close(self) -> None:
        await self.owner.close()
        await self.borrower.close()


@dataclass
class Window:
    start: float
    end: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    completed: int = 0
    accepted: int = 0  # 202: recorded, read model not caught up within the timeout
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def record(self, kind: str, status: int, data: bytes, started: float, finished: float) -> bool:
        """Count one answer; returns whether it was a success."""
        inside = self.start <= finished <= self.end
        if status in (200, 201, 202):
            if inside:
                self.completed += 1
                self.accepted += status == 202
                self.latencies.setdefault(kind, []).append(finished - started)
            return True
        if inside:
            self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{kind}: {status} {data[:200]!r}")
        return False


async def _send(pair: Pair) -> tuple[str, int, bytes, float, float]:
    kind, conn, path, body = pair.next_request()
    started = time.perf_counter()
    try:
        status, data = await conn.request("POST", path, body)
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        status, data = 599, repr(exc).encode()
        await conn.close()
    return kind, status, data, started, time.perf_counter()


async def _advance(pair: Pair, status: int, data: bytes) -> None:
    if status in (200, 201, 202):
        if pair.step == 0:
            pair.loan_id = json_decode(data)["id"]
        pair.step = (pair.step + 1) % 4
    else:
        await pair.resync()


async def _client(pair: Pair, window: Window, pace: float | None = None) -> None:
    """Run ``pair``'s life cycle until ``window.end``: back to back, or one command every
    ``pace`` seconds (open loop: a slow answer does not delay the next slot)."""
    next_at = time.perf_counter()
    while True:
        if pace is not None:
            next_at += pace
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if time.perf_counter() >= window.end:
            return
        kind, status, data, started, finished = await _send(pair)
        window.record(kind, status, data, started, finished)
        await _advance(pair, status, data)


async def _peer_client(conn: HttpConnection, path: str, window: Window) -> None:
    """A peer's client: ``POST path`` with a small JSON body, back to back."""
    while True:
        started = time.perf_counter()
        if started >= window.end:
            return
        try:
            status, data = await conn.request("POST", path, {"note": "bench"})
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            status, data = 599, repr(exc).encode()
            await conn.close()
        window.record("request", status, data, started, time.perf_counter())


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


# -- one measuring window -------------------------------------------------------------------------


@dataclass
class Usage:
    """What a server used in a window: CPU seconds by process, transactions, statements."""

    cpu: dict[int, float]
    db: dict[str, Any]

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())


async def _window(
    clients: Callable[[Window], list[Awaitable[None]]],
    warmup: float,
    duration: float,
    pid: int,
    counters: DbCounters,
) -> tuple[Window, Usage]:
    """Run ``clients(window)`` through a warm-up and a measuring window; read the server's
    CPU (``pid``'s process tree) and the database's counters at the window's two ends."""
    now = time.perf_counter()
    window = Window(start=now + warmup, end=now + warmup + duration)
    tasks = [asyncio.ensure_future(c) for c in clients(window)]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    cpu0, db0 = tree_cpu_seconds(pid), counters.snapshot()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    cpu1, db1 = tree_cpu_seconds(pid), counters.snapshot()
    await asyncio.gather(*tasks)
    return window, Usage(cpu_split(cpu0, cpu1), db1.since(db0))


@dataclass
class Level:
    """One server at one concurrency."""

    clients: int
    duration: float
    window: Window
    usage: Usage | None = None

    @property
    def throughput(self) -> float:
        return self.window.completed / self.duration

    @property
    def latency(self) -> dict[str, Any]:
        return summary_ms([x for xs in self.window.latencies.values() for x in xs])

    def per_command(self, quantity: float | None, scale: float = 1.0) -> float | None:
        if quantity is None or not self.window.completed:
            return None
        return quantity * scale / self.window.completed

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "throughput": round(self.throughput, 1),
            "latency_ms": self.latency,
            "completed": self.window.completed,
            "errors": self.window.errors,
        }
        if self.window.accepted:
            out["accepted_202"] = self.window.accepted
        if self.window.error_samples:
            out["error_samples"] = self.window.error_samples
        if self.usage is not None:
            db = self.usage.db
            out |= {
                "cpu_ms_per_command": _r(self.per_command(self.usage.cpu_total, 1000)),
                "cpu_cores": round(self.usage.cpu_total / self.duration, 2),
                "transactions_per_command": _r(self.per_command(db["commits"] + db["rollbacks"])),
                "rollbacks": db["rollbacks"],
                "pg_stat_statements_per_command": _r(self.per_command(db["statements"])),
            }
            if len(self.usage.cpu) > 1:
                out["cpu_cores_by_process"] = {
                    str(pid): round(cpu / self.duration, 3)
                    for pid, cpu in sorted(self.usage.cpu.items())
                }
        return out


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- baselines ---------------------------------------------------------------------------------


async def _raw_inserts(url: str, clients: int, warmup: float, duration: float) -> Level:
    """Single-row autocommit INSERTs from ``clients`` connections (no HTTP)."""
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(clients)]
    payload = os.urandom(300)
    now = time.perf_counter()
    window = Window(start=now + warmup, end=now + warmup + duration)

    async def loop(conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= window.end:
                return
            await conn.execute(
                "INSERT INTO bench_raw_insert (originator_id, payload) VALUES (%s, %s)",
                (uuid.uuid4(), payload),
            )
            window.record("insert", 200, b"", t0, time.perf_counter())

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return Level(clients, duration, window)


async def _peer_levels(
    peer: PeerProcess,
    path: str,
    levels: tuple[int, ...],
    warmup: float,
    duration: float,
    counters: DbCounters,
) -> dict[int, Level]:
    out = {}
    conns = [HttpConnection(peer.url) for _ in range(max(levels))]
    try:
        for clients in levels:
            window, usage = await _window(
                lambda w, n=clients: [_peer_client(c, path, w) for c in conns[:n]],
                warmup,
                duration,
                peer.pid,
                counters,
            )
            out[clients] = Level(clients, duration, window, usage)
            log(
                f"commands c={clients}: {peer.name} {out[clients].throughput:.0f}/s "
                f"p99 {out[clients].latency['p99']} ms"
            )
    finally:
        for conn in conns:
            await conn.close()
    return out


def _peers(
    ctx: Any, url: str, levels: tuple[int, ...], warmup: float, duration: float
) -> tuple[dict[str, dict[int, Level]], dict[str, str]]:
    """Each HTTP peer measured at every level, one after the other; returns the levels by
    peer and why a peer was skipped."""
    bench_dir = ctx.work_dir.parent
    peers: list[tuple[str, str, Callable[[], PeerProcess]]] = [
        (BASELINE, "/save", lambda: uvicorn_peer("es_save", url, ctx.work_dir / "es_save.log")),
        (
            "litestar_insert",
            "/insert",
            lambda: uvicorn_peer("litestar_insert", url, ctx.work_dir / "litestar_insert.log"),
        ),
        (
            "express_insert",
            "/insert",
            lambda: express_peer(url, bench_dir, ctx.work_dir / "express_insert.log"),
        ),
    ]
    results: dict[str, dict[int, Level]] = {}
    skipped: dict[str, str] = {}
    for name, path, make in peers:
        try:
            with make() as peer, DbCounters(ctx.svc.server_url, url) as counters:
                log(f"commands: peer {name} (pid {peer.pid})")
                results[name] = asyncio.run(
                    _peer_levels(peer, path, levels, warmup, duration, counters)
                )
        except PeerUnavailable as exc:
            log(f"commands: peer {name} skipped: {exc}")
            skipped[name] = str(exc)
    return results, skipped


# -- Liudong -----------------------------------------------------------------------------------


async def _liudong_levels(
    server: ServerProcess,
    levels: tuple[int, ...],
    warmup: float,
    duration: float,
    counters: DbCounters,
    run_id: str,
) -> dict[int, Level]:
    pairs = await _setup_pairs(server.url, max(levels), run_id)
    out = {}
    try:
        for clients in levels:
            window, usage = await _window(
                lambda w, n=clients: [_client(p, w) for p in pairs[:n]],
                warmup,
                duration,
                server.pid,
                counters,
            )
            level = out[clients] = Level(clients, duration, window, usage)
            log(
                f"commands c={clients}: liudong {level.throughput:.0f}/s p50 "
                f"{level.latency['p50']} ms p99 {level.latency['p99']} ms; "
                f"{level.summary()['cpu_ms_per_command']} ms CPU/command; errors "
                f"{window.errors}"
            )
    finally:
        for pair in pairs:
            await pair.close()
    return out


@dataclass
class Counted:
    """Liudong through the counting proxy."""

    idle_s: float
    idle_statements: int
    idle_transactions: int
    idle_cpu_s: float
    by_kind: dict[str, dict[str, float]]
    load: dict[str, Any] | None = None


async def _counted(
    server: ServerProcess,
    proxy: CountingProxy,
    *,
    idle: float,
    per_kind: int,
    load_clients: int,
    load_duration: float,
    run_id: str,
) -> Counted:
    pairs = await _setup_pairs(server.url, max(per_kind, load_clients), run_id)
    try:
        await asyncio.sleep(2.0)  # the setup's pages, relay and runners settle
        s0, t0, c0 = (
            proxy.statements,
            proxy.transactions,
            sum(tree_cpu_seconds(server.pid).values()),
        )
        await asyncio.sleep(idle)
        idle_stats = (
            proxy.statements - s0,
            proxy.transactions - t0,
            sum(tree_cpu_seconds(server.pid).values()) - c0,
        )
        sums: dict[str, list[int]] = {kind: [0, 0, 0, 0] for kind in KINDS}
        for _ in KINDS:
            for pair in pairs[:per_kind]:
                s0, t0 = proxy.statements, proxy.transactions
                kind, status, data, _, _ = await _send(pair)
                await asyncio.sleep(0.3)  # its asynchronous work (pages, relay) settles
                counts = sums[kind]
                counts[0] += proxy.statements - s0
                counts[1] += proxy.transactions - t0
                counts[2] += 1
                counts[3] += status in (200, 201)
                await _advance(pair, status, data)
        by_kind = {
            kind: {
                "statements": round(st / n, 1),
                "transactions": round(tx / n, 1),
                "commands": n,
                "ok": ok,
            }
            for kind, (st, tx, n, ok) in sums.items()
            if n
        }
        load = None
        if load_clients:
            now = time.perf_counter()
            window = Window(start=now + 1.0, end=now + 1.0 + load_duration)
            tasks = [asyncio.create_task(_client(p, window)) for p in pairs[:load_clients]]
            await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
            s0, t0 = proxy.statements, proxy.transactions
            await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
            s1, t1 = proxy.statements, proxy.transactions
            await asyncio.gather(*tasks)
            n = max(1, window.completed)
            load = {
                "clients": load_clients,
                "commands": window.completed,
                "statements_per_command": round((s1 - s0) / n, 2),
                "transactions_per_command": round((t1 - t0) / n, 2),
            }
        return Counted(idle, *idle_stats, by_kind, load)
    finally:
        for pair in pairs:
            await pair.close()


@contextlib.contextmanager
def _server(url: str, ctx: Any, name: str) -> Iterator[ServerProcess]:
    with ServerProcess(
        url, ctx.svc.nats_url, ctx.work_dir / f"server-{name}", ctx.work_dir / f"server-{name}.log"
    ) as server:
        yield server


def run(ctx: Any) -> None:
    levels: tuple[int, ...] = ctx.size((1, 16, 64), (16,))
    duration = ctx.size(20.0, 1.5)
    warmup = ctx.size(3.0, 0.5)
    with throwaway_database(ctx.svc.server_url, "commands") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for table in ("bench_raw_insert", "bench_peer_insert"):
                conn.execute(
                    f"CREATE TABLE {table} (id bigserial PRIMARY KEY, "
                    "originator_id uuid NOT NULL, payload bytea NOT NULL)"
                )
        # The raw ceiling first, before any server holds its pool: 64 more connections
        # beside a server's would pass a stock max_connections (100).
        raw = {
            clients: asyncio.run(_raw_inserts(url, clients, min(warmup, 1.0), duration))
            for clients in levels
        }
        peers, skipped = _peers(ctx, url, levels, warmup, duration)
        with (
            _server(url, ctx, "commands") as server,
            DbCounters(ctx.svc.server_url, url) as counters,
        ):
            log(f"commands: liudong serve pid {server.pid} (--workers {server.workers})")
            liudong = asyncio.run(
                _liudong_levels(server, levels, warmup, duration, counters, uuid.uuid4().hex[:6])
            )
            statements_source = (
                "pg_stat_statements"
                if counters.statements_unavailable is None
                else counters.statements_unavailable
            )
        with CountingProxy(url) as proxy, _server(proxy.url, ctx, "commands-counted") as server:
            log("commands: liudong serve again, behind the counting proxy")
            counted = asyncio.run(
                _counted(
                    server,
                    proxy,
                    idle=ctx.size(5.0, 2.0),
                    per_kind=ctx.size(4, 1),
                    load_clients=max(levels),
                    load_duration=ctx.size(10.0, 1.5),
                    run_id=uuid.uuid4().hex[:6],
                )
            )
    _emit(ctx, levels, liudong, peers, skipped, raw, counted, statements_source)


def _emit(  # noqa: PLR0913
    ctx: Any,
    levels: tuple[int, ...],
    liudong: dict[int, Level],
    peers: dict[str, dict[int, Level]],
    skipped: dict[str, str],
    raw: dict[int, Level],
    counted: Counted,
    statements_source: str,
) -> None:
    top = max(levels)
    workers = int(os.environ.get("LIUDONG_BENCH_WORKERS") or 1)
    for clients in levels:
        ours = liudong[clients]
        base = peers.get(BASELINE, {}).get(clients)
        lat, base_lat = ours.latency, base.latency if base else {}
        others = {name: by_level[clients].summary() for name, by_level in peers.items()}
        others["raw_insert"] = raw[clients].summary()
        params = {
            "clients": clients,
            "duration_s": ours.duration,
            "workers": workers,
            **ours.summary(),
            "per_command_p50_ms": {
                k: summary_ms(v)["p50"] for k, v in ours.window.latencies.items()
            },
            "per_command_p99_ms": {
                k: summary_ms(v)["p99"] for k, v in ours.window.latencies.items()
            },
            "baseline": "es_save: a Litestar app doing a plain eventsourcing 9.5 "
            "Application.save() of a new aggregate per request, same client and concurrency",
            "peers": others,
        }
        if skipped:
            params["peers_skipped"] = skipped
        is_top = clients == top
        ctx.emit(
            f"commands.c{clients}.throughput",
            ours.throughput,
            "commands/s",
            baseline=base.throughput if base else None,
            target=Target(">=", 1.0, on="ratio") if is_top else None,
            params=params,
        )
        ctx.emit(
            f"commands.c{clients}.p50",
            lat["p50"],
            "ms",
            baseline=base_lat.get("p50"),
            params={"clients": clients, "baseline": "es_save p50"},
        )
        ctx.emit(
            f"commands.c{clients}.p99",
            lat["p99"],
            "ms",
            baseline=base_lat.get("p99"),
            target=Target("<=", 100) if is_top else None,
            params={"clients": clients, "baseline": "es_save p99"},
        )
        for name, by_level in (*peers.items(), ("raw_insert", raw)):
            level = by_level[clients]
            ctx.emit(
                f"commands.c{clients}.peer.{name}",
                level.throughput,
                "requests/s",
                params={"clients": clients, **level.summary()},
            )
    ours, base = liudong[top], peers.get(BASELINE, {}).get(top)
    mine = ours.summary()
    load = counted.load or {}
    theirs = base.summary() if base else {}
    ctx.emit(
        f"commands.c{top}.cpu_per_command",
        mine["cpu_ms_per_command"],
        "ms",
        baseline=theirs.get("cpu_ms_per_command"),
        target=Target("<=", 2.0),
        params={
            "clients": top,
            "how": "CPU seconds of the server's process tree (/proc) in the window / commands",
            "cpu_cores": mine["cpu_cores"],
            "cpu_cores_by_process": mine.get("cpu_cores_by_process"),
            "baseline": "es_save, CPU per request",
        },
    )
    ctx.emit(
        f"commands.c{top}.transactions_per_command",
        mine["transactions_per_command"],
        "transactions",
        baseline=theirs.get("transactions_per_command"),
        target=Target("<=", 2.0),
        params={
            "clients": top,
            "how": "xact_commit + xact_rollback of the bench database (pg_stat_database) in "
            "the window / commands",
            "rollbacks": mine["rollbacks"],
            "on_the_wire": load.get("transactions_per_command"),
            "baseline": "es_save, transactions per request",
        },
    )
    ctx.emit(
        f"commands.c{top}.statements_per_command",
        load.get("statements_per_command"),
        "statements",
        params={
            "clients": top,
            "how": "counted on the wire (bench.dbstats.CountingProxy: Query and Execute "
            f"messages), a second server run at {top} clients for "
            f"{load.get('commands')} commands",
            "transactions_per_command_on_the_wire": load.get("transactions_per_command"),
            "pg_stat_statements_per_command": mine["pg_stat_statements_per_command"],
            "pg_stat_statements": statements_source,
            "peers_pg_stat_statements_per_request": {
                name: by_level[top].summary()["pg_stat_statements_per_command"]
                for name, by_level in peers.items()
            },
            "by_command_one_client": counted.by_kind,
            "by_command_how": "one client, each command followed by 0.3 s for its asynchronous "
            "work, counted on the wire",
        },
    )
    ctx.emit(
        "commands.idle.statements_per_s",
        counted.idle_statements / counted.idle_s,
        "statements/s",
        target=Target("<=", 0),
        params={
            "idle_s": counted.idle_s,
            "transactions_per_s": round(counted.idle_transactions / counted.idle_s, 2),
            "cpu_ms_per_s": round(counted.idle_cpu_s * 1000 / counted.idle_s, 2),
            "how": "a server with 2 s of nothing to do after its set-up, counted on the wire "
            "(bench.dbstats.CountingProxy)",
        },
    )
