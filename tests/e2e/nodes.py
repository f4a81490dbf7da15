"""Several real ``liudong serve`` processes sharing one PostgreSQL database and one NATS, for
the e2e tests that need more than one node (``test_multinode``, ``test_sessions_end``,
``test_single_device``, …): start one, wait until it is ready (NATS included), start a pair,
and a pair of HTTP clients, one per node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.conftest import OPERATOR, OPERATOR_TOKEN, free_port
from tests.e2e.processes import NO_LIMITS

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_node(
    name: str,
    database_url: str,
    nats_url: str,
    tmp: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Node:
    """``liudong serve`` on a free port (rate limits off, the operator token set, output in
    ``tmp/<name>.log``); ``env`` adds or overrides variables, ``args`` adds options."""
    port = free_port()
    log = tmp / f"{name}.log"
    variables = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "LIUDONG_ENV": "test",
        "LIUDONG_DATA_DIR": str(tmp / name),
        "LIUDONG_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "PYTHONUNBUFFERED": "1",
        **NO_LIMITS,
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Node(name, f"http://127.0.0.1:{port}", process, log)


def wait_ready(node: Node, timeout: float = 90.0) -> None:
    """Until ``/readyz`` is 200 with NATS connected. Raises ``RuntimeError`` (with the end of
    the node's log) when it exits or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name} exited:\n{node.log.read_text()[-3000:]}")
        try:
            r = httpx.get(node.url + "/readyz", timeout=2, headers=OPERATOR)
            if r.status_code == 200 and r.json()["checks"].get("nats", {}).get("ok"):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.name} not ready:\n{node.log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def node_pair(
    database_url: str,
    nats_url: str,
    tmp: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[tuple[Node, Node]]:
    """Nodes ``node-a`` and ``node-b``, both ready; stopped on exit."""
    a = start_node("node-a", database_url, nats_url, tmp, env, args)
    b = start_node("node-b", database_url, nats_url, tmp, env, args)
    try:
        wait_ready(a)
        wait_ready(b)
        yield a, b
    finally:
        for node in (a, b):
            node.stop()


@asynccontextmanager
async def pair_clients(
    nodes: tuple[Node, Node],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """One HTTP client per node (30 s timeout)."""
    a, b = nodes
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as http_b,
    ):
        yield http_a, http_b
