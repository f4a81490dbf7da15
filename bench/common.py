"""What every scenario shares: figures as JSON lines, percentiles, the services, throwaway
databases, a ``liudong serve`` subprocess and a small HTTP/1.1 client for load generation.

A figure is one JSON object per line on stdout::

    {"name": "commands.c64.throughput", "value": 812.4, "unit": "commands/s",
     "baseline": 5210.0, "ratio": 0.156, "target": {"op": ">=", "value": 2000},
     "met": false, "params": {...}}

``baseline`` is the same quantity for the reference named in ``params["baseline"]``,
``ratio`` is ``value / baseline``; ``target`` applies to ``value`` unless it says
``"on": "ratio"``; ``met`` says whether the target was met. A scenario whose product pieces
do not exist yet prints ``"value": null, "skipped": "<reason>"``; one that crashed prints
``"value": null, "error": "<message>"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal: ``value`` (or ``ratio`` when ``on="ratio"``) ``op`` ``bound``."""

    op: str  # ">=" | "<="
    bound: float
    on: str = "value"

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else value
        if subject is None:
            return None
        return subject >= self.bound if self.op == ">=" else subject <= self.bound

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "value": self.bound}
        if self.on != "value":
            out["on"] = self.on
        return out

    def text(self, unit: str) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"ratio {sign} {self.bound:g}"
        return f"{sign} {self.bound:,g} {unit}"


def _round(value: float | None) -> float | None:
    if value is None or isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    magnitude = abs(value)
    if magnitude >= 1000:
        return round(value, 1)
    if magnitude >= 1:
        return round(value, 3)
    return float(f"{value:.4g}")


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: Target | None = None
    params: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": _round(self.baseline),
            "ratio": _round(self.ratio),
            "target": self.target.as_json() if self.target else None,
            "params": self.params,
        }
        if self.target is not None:
            out["met"] = self.met
        if self.skipped is not None:
            out["skipped"] = self.skipped
        if self.error is not None:
            out["error"] = self.error
        return out


class Skip(Exception):
    """Raised by a scenario whose product pieces do not exist (yet); the message says why."""


class Reporter:
    """Prints figures as JSON lines (flushed at once) and keeps them for the Markdown table."""

    def __init__(self, out: TextIO = sys.stdout, also: TextIO | None = None) -> None:
        self.out = out
        self.also = also
        self.figures: list[Figure] = []

    def emit(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        line = json.dumps(figure.as_json(), ensure_ascii=False, default=str)
        for stream in (self.out, self.also):
            if stream is not None:
                stream.write(line + "\n")
                stream.flush()
        return figure


def log(message: str) -> None:
    """Progress on stderr (stdout carries only JSON lines)."""
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"[bench {stamp}] {message}\n")
    sys.stderr.flush()


# -- statistics ---------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) by linear interpolation between closest ranks
    (NumPy's default); ``None`` for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary_ms(samples_s: Sequence[float]) -> dict[str, float | int | None]:
    """``{"n", "p50", "p90", "p99", "max", "mean"}`` in milliseconds of samples in seconds."""
    ms = [s * 1000.0 for s in samples_s]
    return {
        "n": len(ms),
        "p50": _round(percentile(ms, 50)),
        "p90": _round(percentile(ms, 90)),
        "p99": _round(percentile(ms, 99)),
        "max": _round(max(ms)) if ms else None,
        "mean": _round(sum(ms) / len(ms)) if ms else None,
    }


# -- processes ----------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (``/proc/*/stat``'s parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds used so far by ``pid`` and each live descendant (uvicorn's workers)."""
    out = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[member] = cpu_seconds(member)
    return out


def cpu_split(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """CPU seconds each process used between two ``tree_cpu_seconds`` readings (a process
    that started meanwhile counts from zero)."""
    return {pid: after[pid] - before.get(pid, 0.0) for pid in after}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- services -----------------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(**{**conninfo_to_dict(url), "dbname": dbname})


@dataclass
class Services:
    """The PostgreSQL server (``server_url``: its maintenance database) and NATS in use."""

    server_url: str
    nats_url: str
    database_source: str  # "DATABASE_URL" | "embedded"
    nats_source: str  # "NATS_URL" | "embedded"


@contextlib.contextmanager
def services(bench_dir: Path) -> Iterator[Services]:
    """``DATABASE_URL``'s server and ``NATS_URL``, or embedded ones under ``bench_dir``."""
    from api.bootstrap.embedded import EmbeddedNats, start_postgres

    configured_db = os.environ.get("DATABASE_URL")
    if configured_db:
        server_url, db_source = configured_db, "DATABASE_URL"
    else:
        log(f"starting embedded PostgreSQL under {bench_dir / 'embedded'}")
        server_url = with_dbname(start_postgres(bench_dir / "embedded"), "postgres")
        db_source = "embedded"
    embedded_nats = None
    nats_url = os.environ.get("NATS_URL")
    nats_source = "NATS_URL"
    if not nats_url:
        embedded_nats = EmbeddedNats(bench_dir / "embedded")
        nats_url = embedded_nats.start()
        nats_source = "embedded"
    try:
        yield Services(server_url, nats_url, db_source, nats_source)
    finally:
        if embedded_nats is not None:
            embedded_nats.stop()


@contextlib.contextmanager
def throwaway_database(server_url: str, tag: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database ``liudong_bench_<tag>_<random>`` on ``server_url``'s server, migrated,
    dropped on exit. Yields its URL."""
    name = f"liudong_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_dbname(server_url, name)
    try:
        if migrate:
            from api.bootstrap.db import migrate as apply

            apply(url)
        yield url
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(server_url, autocommit=True) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_settings(url: str) -> dict[str, str]:
    names = (
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "max_connections",
        "wal_level",
        "commit_delay",
    )
    with psycopg.connect(url, autocommit=True) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


_UNLIMITED = "1000000000/second"


class ServerProcess:
    """``liudong serve`` as a subprocess (the load generator stays in this process), on
    ``database_url`` and ``nats_url``; its output goes to ``log_path``. ``workers``: its
    ``--workers`` (default ``$LIUDONG_BENCH_WORKERS``, else 1)."""

    def __init__(
        self,
        database_url: str,
        nats_url: str,
        data_dir: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        workers: int | None = None,
    ) -> None:
        self.workers = workers or int(os.environ.get("LIUDONG_BENCH_WORKERS") or 1)
        self.database_url = database_url
        self.nats_url = nats_url
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "LIUDONG_DATA_DIR": str(self.data_dir),
            "LIUDONG_ENV": "development",
            # thousands of readers log in from one address. (An empty value counts as unset,
            # i.e. the default limit, not as "off": Settings.from_env.)
            "LIUDONG_RATE_LOGIN_ADDRESS": _UNLIMITED,
            "LIUDONG_RATE_LOGIN_CODE": _UNLIMITED,
            "LIUDONG_RATE_LOAN_REQUESTS": _UNLIMITED,
            "LIUDONG_RATE_CHAT_SENDS": _UNLIMITED,
            "LIUDONG_WS_FRAME_RATE": _UNLIMITED,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        self.process = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"liudong serve exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"liudong serve not ready after {timeout} s; see {self.log_path}"
                )
            time.sleep(0.2)

    def openapi_paths(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/schema/openapi.json", timeout=10) as response:
            return dict(json.loads(response.read()).get("paths", {}))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a small HTTP/1.1 client ---------------------------------------------------------------

_json_encode = msgspec.json.Encoder().encode
json_decode = msgspec.json.Decoder().decode


class HttpError(RuntimeError):
    def __init__(self, status: int, body: bytes, what: str = "") -> None:
        super().__init__(f"{what} HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class HttpConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams.

    A load generator must cost less than the server it drives; this client does about a
    tenth of the work of httpx per request (no header objects, no URL parsing), so 64 of
    them in one process leave the CPU to the server."""

    IDLE_RECONNECT = 3.0  # uvicorn closes idle keep-alive connections after 5 s

    def __init__(self, base_url: str, token: str | None = None) -> None:
        rest = base_url.split("://", 1)[1]
        host, _, port = rest.partition(":")
        self.host, self.port = host, int(port.rstrip("/") or 80)
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def _connect(self) -> None:
        await self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, body: Any = None, headers: str = ""
    ) -> tuple[int, bytes]:
        """Send one request (``body`` JSON-encoded when not None); returns ``(status,
        body)``. Reconnects first when the connection idled long enough to be closed."""
        if self.writer is None or time.monotonic() - self.last_used > self.IDLE_RECONNECT:
            await self._connect()
        payload = b"" if body is None else _json_encode(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.auth}{headers}"
            f"Content-Length: {len(payload)}\r\n"
            + ("Content-Type: application/json\r\n" if body is not None else "")
            + "\r\n"
        )
        assert self.writer is not None and self.reader is not None
        self.writer.write(head.encode() + payload)
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = -1
        chunked = close = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif lname == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            data = b"".join(parts)
        elif length >= 0:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        self.last_used = time.monotonic()
        if close:
            await self.close()
        return status, data

    async def json(
        self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)
    ) -> Any:
        status, data = await self.request(method, path, body)
        expected = (expect,) if isinstance(expect, int) else expect
        if status not in expected:
            raise HttpError(status, data, f"{method} {path}")
        return json_decode(data) if data else None


async def login(base_url: str, name: str) -> tuple[str, str]:
    """Log a dev reader in over HTTP; returns ``(token, reader_id)``."""
    conn = HttpConnection(base_url)
    try:
        body = await conn.json("POST", "/v1/auth/login", {"code": f"dev:{name}"}, expect=200)
    finally:
        await conn.close()
    return body["token"], body["reader"]["id"]


async def gather_limited(n: int, factories: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run coroutine factories with at most ``n`` at a time; results in order."""
    sem = asyncio.Semaphore(n)

    async def one(factory: Callable[[], Any]) -> Any:
        async with sem:
            return await factory()

    return list(await asyncio.gather(*(one(f) for f in factories)))


# -- the machine ----------------------------------------------------------------------------


def machine_info(svc: Services | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    with contextlib.suppress(Exception):
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        changed = subprocess.run(  # read-only: which tracked files differ from the commit
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
        info["uncommitted_files"] = len(changed)
    if svc is not None:
        info["postgres_source"] = svc.database_source
        info["nats_source"] = svc.nats_source
        with contextlib.suppress(Exception):
            info["postgres"] = postgres_settings(svc.server_url)
    return info


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
