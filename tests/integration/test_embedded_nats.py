"""``EmbeddedNats`` shared by several users of one data folder (real nats-server processes,
in a folder of their own): the last user stops the server, whoever started it; a server
that died is started again on the recorded port; a user killed without stopping is pruned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from api.bootstrap.embedded import EmbeddedNats, _pid_alive, _port_open
from tests.conftest import wait_until


def _state(folder: Path) -> dict[str, object]:
    import json

    return dict(json.loads((folder / "nats" / "server.json").read_text()))


def test_the_last_user_stops_the_server_whoever_started_it(tmp_path: Path) -> None:
    first, second = EmbeddedNats(tmp_path), EmbeddedNats(tmp_path)
    url = first.start()
    assert second.start() == url  # found, not started twice
    pid = int(str(_state(tmp_path)["pid"]))
    assert len(_state(tmp_path)["users"]) == 2  # type: ignore[arg-type]

    first.stop()  # the one that started it leaves: the server stays for the other
    assert _pid_alive(pid) and second.running_url() == url
    second.stop()  # the last one leaves: stopped, though it did not start it
    wait_until(lambda: not _pid_alive(pid), timeout=10)
    assert second.running_url() is None and "pid" not in _state(tmp_path)

    again = EmbeddedNats(tmp_path)
    assert again.start() == url  # the recorded port is kept
    again.stop()


def test_a_dead_server_is_started_again_on_its_port(tmp_path: Path) -> None:
    node = EmbeddedNats(tmp_path)
    url = node.start()
    state = _state(tmp_path)
    os.kill(int(str(state["pid"])), signal.SIGKILL)
    wait_until(lambda: not _port_open(int(str(state["port"]))), timeout=10)
    assert node.running_url() is None
    assert node.ensure_running() == url  # same port
    assert _state(tmp_path)["pid"] != state["pid"] and node.running_url() == url
    assert node.ensure_running() == url and _state(tmp_path)["pid"] != state["pid"]  # no-op
    node.stop()


def test_a_user_killed_without_stopping_is_pruned(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; "
        "from api.bootstrap.embedded import EmbeddedNats; "
        f"EmbeddedNats(Path({str(tmp_path)!r})).start(); print('up', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"up"
        mine = EmbeddedNats(tmp_path)
        url = mine.start()
        pid = int(str(_state(tmp_path)["pid"]))
        other.kill()  # kill -9: it never says goodbye
        other.wait(10)
        mine.stop()  # the only live user left: it stops the server
        wait_until(lambda: not _pid_alive(pid), timeout=10)
        assert mine.running_url() is None and url
    finally:
        if other.poll() is None:
            other.kill()
