"""The mini-program SDK's own tests (``node --test`` in clients/miniprogram) run from pytest, so
the project's one test command (and CI) runs them: unit tests against a scripted ``wx``, and
the live tests against a real ``liudong serve`` that they start as a child process, on this
session's fresh database and NATS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_sdk_node_tests_pass(sdk_dir: Path, database_url: str, nats_url: str) -> None:
    env = {
        **os.environ,
        "LIUDONG_TEST_DATABASE_URL": database_url,
        "LIUDONG_TEST_NATS_URL": nats_url,
        "LIUDONG_PYTHON": sys.executable,
    }
    files = sorted(str(p.relative_to(sdk_dir)) for p in (sdk_dir / "test").glob("*.test.js"))
    assert files, "no SDK tests found"
    done = subprocess.run(
        ["node", "--test", "--test-concurrency=1", "--test-reporter=spec", *files],
        cwd=sdk_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(done.stdout)  # shown with -s, and on failure
    print(done.stderr, file=sys.stderr)
    tail = f"{done.stdout[-20000:]}\n{done.stderr[-5000:]}"
    assert done.returncode == 0, f"node --test failed:\n{tail}"
