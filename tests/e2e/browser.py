"""Helpers of the browser tests: a real ``liudong serve`` subprocess, Debian's Chromium under
Playwright (never a downloaded browser), and screenshots kept as artefacts.

Chromium is ``/usr/bin/chromium`` (``LIUDONG_CHROMIUM`` to use another); ``.ci/run``
installs Debian's ``chromium`` when it is missing. Without it (or without the ``playwright``
package) the browser tests are skipped, saying why. Screenshots go to
``LIUDONG_ARTEFACTS`` (default ``tmp/artefacts`` in the checkout, ignored by git); the path
is printed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.nodes import ROOT, Node
from tests.e2e.test_multinode import _start, _wait_ready

WORDLIST = "代购|review|ad\n"
"""The content check's word list of the served app: a text with 代购 is accepted and flagged
for review (the console's moderation list)."""

CHROMIUM = os.environ.get("LIUDONG_CHROMIUM", "/usr/bin/chromium")
ARTEFACTS = Path(os.environ.get("LIUDONG_ARTEFACTS", ROOT / "tmp" / "artefacts"))


def chromium_or_skip() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def serve(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """One real ``liudong serve`` for the module's browser tests."""
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("browser")
    wordlist = tmp / "wordlist.txt"
    wordlist.write_text(WORDLIST, encoding="utf-8")
    saved = {k: os.environ.get(k) for k in ("LIUDONG_MODERATION", "LIUDONG_MODERATION_WORDLIST")}
    os.environ.update(LIUDONG_MODERATION="local", LIUDONG_MODERATION_WORDLIST=str(wordlist))
    try:  # _start passes this process's environment on
        node = _start("serve", database_url, nats_url, tmp)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        _wait_ready(node)
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's) driven by Playwright."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--lang=zh-CN"],
        )
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Screenshots of one test under ``ARTEFACTS/<test>/``, numbered in order."""

    def __init__(self, name: str) -> None:
        self.dir = ARTEFACTS / name
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.taken: list[Path] = []
        print(f"\nscreenshots: {self.dir}")

    def __call__(self, page: Any, label: str, *, full_page: bool = True) -> Path:
        path = self.dir / f"{len(self.taken) + 1:02d}-{label}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy (its value) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


__all__ = ["ARTEFACTS", "Shots", "browser", "chromium_or_skip", "serve", "shots", "wait_for"]
