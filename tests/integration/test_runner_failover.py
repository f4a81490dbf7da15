"""Several processes, one runner: real subprocesses run the same projection; exactly one is
``running`` (it holds the advisory lock), the others stand by; SIGKILL the active one and
another takes over, and the projection keeps advancing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg.rows import dict_row

from domain.library import Library
from projections import ops
from projections.board import tracked_position
from projections.registry import sources_from_apps
from projections.shelf import ShelfProjection
from tests.conftest import wait_until
from tests.integration.activity import story

ROOT = Path(__file__).resolve().parents[2]

# Builds a Library app and a ReadModelRunner for a shelf projection named argv[2] on the
# database argv[1]; prints every state transition of its runner on its own line.
SCRIPT = r"""
import sys, time
from api.bootstrap.db import eventsourcing_env
from domain.library import Library
from projections.runner import ReadModelRunner
from projections.source import Source
from projections.shelf import ShelfProjection

url, name = sys.argv[1], sys.argv[2]
projection = type("Shelf", (ShelfProjection,), {"name": name})()
library = Library(env=eventsourcing_env(url, pool_size=2))
runner = ReadModelRunner(projection, url, {"library": Source("library", library)},
                          idle_wait=0.2)
runner.start()
print("pid", flush=True)
last = None
while True:
    state = runner.status.state
    if state != last:
        print(state, flush=True)
        last = state
    time.sleep(0.01)
"""


class Worker:
    """One subprocess and the states it printed."""

    def __init__(self, database_url: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, database_url, name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.states: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.states.append(line.strip())

    @property
    def state(self) -> str | None:
        return self.states[-1] if self.states else None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def workers(database_url: str) -> Iterator[tuple[str, list[Worker]]]:
    name = f"failover_{uuid4().hex[:8]}"
    started = [Worker(database_url, name) for _ in range(3)]
    yield name, started
    for worker in started:
        worker.kill()


def _states(workers: list[Worker]) -> list[str | None]:
    return sorted((w.state for w in workers if w.alive), key=str)


def _caught_up(database_url: str, name: str, library: Library) -> bool:
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        head = ops.log_head(conn, sources_from_apps(library)["library"])
        return tracked_position(conn, name, "library") >= head


def test_one_runs_the_others_stand_by_and_one_takes_over(
    database_url: str, library: Library, workers: tuple[str, list[Worker]]
) -> None:
    name, procs = workers
    projection: Any = type("Shelf", (ShelfProjection,), {"name": name})()
    sources = sources_from_apps(library)

    wait_until(lambda: _states(procs) == ["running", "standby", "standby"], timeout=30)
    (active,) = [w for w in procs if w.state == "running"]
    (st,) = ops.status(database_url, [projection], sources)
    assert st.state == "running" and st.holder is not None
    story(library, "failover-1")
    wait_until(lambda: _caught_up(database_url, name, library), timeout=30)
    assert _states(procs) == ["running", "standby", "standby"]  # still exactly one
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = tracked_position(conn, name, "library")

    active.kill()

    survivors = [w for w in procs if w is not active]
    wait_until(
        lambda: sorted(str(w.state) for w in survivors) == ["running", "standby"], timeout=30
    )
    assert "running" in active.states and not active.alive
    last = story(library, "failover-2")
    wait_until(lambda: _caught_up(database_url, name, library), timeout=30)
    with psycopg.connect(database_url, autocommit=True) as conn:
        after = tracked_position(conn, name, "library")
    assert last.position is not None and after >= last.position > before
    (st,) = ops.status(database_url, [projection], sources)
    assert st.state == "running" and st.sources[0].lag_events == 0
    (new_active,) = [w for w in survivors if w.state == "running"]
    assert new_active.states[-2:] == ["standby", "running"]
