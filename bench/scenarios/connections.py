"""``connections``: 10,000 idle authenticated sockets on one process; memory per connection.

One ``liudong serve`` process; 10,000 readers (``bench.realtime_setup.bulk_readers``), each
opening one ``/v1/ws`` socket with its token in the ``Authorization`` header (as
``wx.connectSocket`` sends it), counted as open once its ``hello`` arrived. The client
(``bench.wsclient``) answers the gateway's pings, so the sockets stay idle but alive.

Figure: (server RSS with every socket open and idle − RSS before) / sockets, in KB of
1,000 bytes (the target's unit; ``params.kib_per_socket`` has it in KiB). "Before" is taken
after 100 sockets were opened and closed, so one-off costs (imports, first allocations) are
not charged to the connections. The kernel's own socket buffers are outside the process and
not counted (``params.kernel_tcp_mem_mb`` shows them).
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

from bench.common import ServerProcess, Target, cpu_seconds, log, rss_bytes, throwaway_database
from bench.realtime_setup import bulk_readers, require_realtime, wait_projection
from bench.wsclient import connect_many


def _tcp_mem_mb() -> float | None:
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                pages = int(fields[fields.index("mem") + 1])
                return round(pages * 4096 / 1e6, 1)
    except (OSError, ValueError):
        return None
    return None


def run(ctx: Any) -> None:
    require_realtime()
    count = ctx.size(10_000, 300)
    with throwaway_database(ctx.svc.server_url, "conns") as url:
        log(f"connections: bulk-loading {count:,} readers with sessions")
        readers = bulk_readers(url, count + 100, prefix="c")
        server = ServerProcess(
            url, ctx.svc.nats_url, ctx.work_dir / "server-conns", ctx.work_dir / "server-conns.log"
        )
        with server:
            wait_projection(url, "shelf", "library")
            asyncio.run(_measure(ctx, server, readers, count))


async def _measure(ctx: Any, server: ServerProcess, readers: list[Any], count: int) -> None:
    tokens = [t for _, t in readers]
    warm = await connect_many(server.url, tokens[:100], concurrency=50)
    for client in warm:
        client.close()
    await asyncio.sleep(ctx.size(3, 1))
    rss0 = rss_bytes(server.pid)
    tcp0 = _tcp_mem_mb()
    started = time.perf_counter()
    clients = await connect_many(server.url, tokens[100 : 100 + count], concurrency=100)
    connect_s = time.perf_counter() - started
    log(f"connections: {len(clients):,} sockets open in {connect_s:.1f} s")
    await asyncio.sleep(ctx.size(10, 1))
    cpu0 = cpu_seconds(server.pid)
    idle_window = ctx.size(20.0, 2.0)
    await asyncio.sleep(idle_window)
    idle_cpu = (cpu_seconds(server.pid) - cpu0) / idle_window
    rss1 = rss_bytes(server.pid)
    alive = sum(1 for c in clients if c.close_code is None and not c.closed.done())
    per_conn = (rss1 - rss0) / count
    log(
        f"connections: RSS {rss0 / 1e6:.0f} → {rss1 / 1e6:.0f} MB: {per_conn / 1000:.1f} KB "
        f"per socket; {alive:,} alive; idle CPU {idle_cpu:.2f} cores"
    )
    ctx.emit(
        "connections.memory_per_socket",
        per_conn / 1000,
        "KB",
        target=Target("<=", 16),
        params={
            "sockets": count,
            "kib_per_socket": round(per_conn / 1024, 2),
            "alive_at_end": alive,
            "rss_before_mb": round(rss0 / 1e6, 1),
            "rss_after_mb": round(rss1 / 1e6, 1),
            "connect_seconds": round(connect_s, 1),
            "connects_per_s": round(count / connect_s, 1),
            "idle_server_cpu_cores": round(idle_cpu, 3),
            "kernel_tcp_mem_mb": {"before": tcp0, "after": _tcp_mem_mb()},
            "auth": "Authorization: Bearer header; readers bulk-loaded, tokens from "
            "SessionStore.issue",
        },
    )
    for client in clients:
        client.abort()
    gc.collect()
