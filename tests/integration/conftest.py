"""Fixtures shared by the integration tests (the session-wide ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.bootstrap.db import eventsourcing_env
from domain.chat import Chat


@pytest.fixture(scope="module")
def chat(database_url: str) -> Iterator[Chat]:
    """The Chat application on the session's database (one per test module)."""
    app = Chat(env=eventsourcing_env(database_url))
    yield app
    app.close()
