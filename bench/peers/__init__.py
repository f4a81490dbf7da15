"""Peers: small reference servers measured in the same run, with the same client, as Liudong.

- ``litestar_insert``: Litestar + uvicorn, async, one ``INSERT`` per request (psycopg pool);
- ``es_save``: Litestar + uvicorn, a plain eventsourcing ``Application.save()`` of a new
  aggregate per request (the reference of the ``commands`` targets);
- ``express/``: Express 5 + ``pg``, one ``INSERT`` per request (Node; run when ``node`` and
  ``npm`` are on PATH);
- ``ws/``: a Node ``ws`` broadcast server (the ``fanout`` scenario's second baseline).

The Node peers' ``package.json`` and ``package-lock.json`` are committed here; their
``node_modules`` are installed at run time (``npm ci``) under the bench folder
(``<bench-dir>/peers/<name>``, kept between runs while the lockfile is unchanged), never in
the repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from bench.common import REPO_ROOT, free_port, log

HERE = Path(__file__).resolve().parent


class PeerUnavailable(RuntimeError):
    """A peer cannot run here (no ``node``, ``npm ci`` failed…); the message says why."""


class PeerProcess:
    """A peer server as a subprocess on ``127.0.0.1:<port>``; ready when ``GET ready_path``
    answers 200 (or, without a path, when it prints ``ready``)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        cwd: Path = REPO_ROOT,
        ready_path: str | None = "/ready",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.cmd = [part.replace("{port}", str(self.port)) for part in cmd]
        self.env = {**os.environ, **env, "PORT": str(self.port)}
        self.cwd = cwd
        self.log_path = log_path
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> PeerProcess:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file if self.ready_path else subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        if self.ready_path is None:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()  # "ready"
            if b"ready" not in line:
                self.stop()
                raise PeerUnavailable(f"{self.name} did not start; see {self.log_path}")
            return self
        while True:
            if self.process.poll() is not None:
                raise PeerUnavailable(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PeerUnavailable(f"{self.name} not ready after {timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> PeerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def uvicorn_peer(module: str, database_url: str, log_path: Path) -> PeerProcess:
    """A Python peer (``bench.peers.<module>:app``) under uvicorn as ``liudong serve`` runs
    it: one process, uvicorn's default event loop and HTTP parser, no access log."""
    return PeerProcess(
        module,
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"bench.peers.{module}:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"},
        log_path,
    )


def node_available() -> str | None:
    """None when ``node`` and ``npm`` are on PATH, else why not."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not on PATH" if missing else None


def npm_installed(name: str, bench_dir: Path) -> Path:
    """``bench/peers/<name>`` copied to ``<bench_dir>/peers/<name>`` with its
    ``node_modules`` from ``npm ci`` (skipped while the lockfile is unchanged). Raises
    ``PeerUnavailable``."""
    why = node_available()
    if why:
        raise PeerUnavailable(why)
    source = HERE / name
    target = bench_dir / "peers" / name
    target.mkdir(parents=True, exist_ok=True)
    for file in ("package.json", "package-lock.json", "server.js"):
        shutil.copyfile(source / file, target / file)
    stamp = hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()
    stamp_file = target / "node_modules" / ".liudong-lock-sha256"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return target
    log(f"peers: npm ci in {target}")
    try:
        done = subprocess.run(
            ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"npm ci for {name}: {exc}") from exc
    if done.returncode != 0:
        raise PeerUnavailable(f"npm ci for {name} failed: {done.stderr.strip()[-300:]}")
    stamp_file.write_text(stamp)
    return target


def pg_env(database_url: str) -> dict[str, str]:
    """libpq's environment variables (``PGHOST``…) for ``database_url`` (node-postgres
    reads them)."""
    kw = conninfo_to_dict(database_url)
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "dbname": "PGDATABASE",
    }
    return {env: str(kw[key]) for key, env in names.items() if kw.get(key) is not None}


def express_peer(database_url: str, bench_dir: Path, log_path: Path) -> PeerProcess:
    """The Express + pg one-INSERT peer. Raises ``PeerUnavailable``."""
    folder = npm_installed("express", bench_dir)
    return PeerProcess(
        "express_insert",
        ["node", str(folder / "server.js")],
        {**pg_env(database_url), "PEER_POOL_SIZE": "16"},
        log_path,
        cwd=folder,
    )


def ws_peer(bench_dir: Path, log_path: Path) -> PeerProcess:
    """The Node ``ws`` broadcast peer. Raises ``PeerUnavailable``."""
    folder = npm_installed("ws", bench_dir)
    return PeerProcess(
        "node_ws", ["node", str(folder / "server.js")], {}, log_path, cwd=folder, ready_path=None
    )
