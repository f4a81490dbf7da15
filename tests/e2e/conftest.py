"""A real Liudong server on loopback (uvicorn in a thread of the test process) for e2e tests
over real HTTP and WebSocket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn

from api.bootstrap.settings import Settings
from api.http.app import create_app

OPERATOR_TOKEN = "test-operator-token"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}  # /readyz's details


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    app: Any

    @property
    def container(self) -> Any:
        return self.app.state.container

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def login(self, name: str | None = None) -> tuple[str, dict[str, Any]]:
        """Log in a fresh dev reader; returns (token, reader)."""
        name = name or f"r{uuid4().hex[:10]}"
        with self.client() as http:
            response = http.post("/v1/auth/login", json={"code": f"dev:{name}"})
        assert response.status_code == 200, response.text
        body = response.json()
        return body["token"], body["reader"]


@pytest.fixture(scope="session")
def live_server(
    database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = Settings(
        env="test",
        database_url=database_url,
        nats_url=nats_url,
        data_dir=tmp_path_factory.mktemp("liudong-data"),
        operator_token=OPERATOR_TOKEN,
        rate_login_address="",  # the whole suite logs in from 127.0.0.1 (test_rate_limits.py
        rate_login_code="",  # puts its own limits on this app)
        rate_loan_requests="",
        rate_chat_sends="",
        rate_room_sends="",
        ws_frame_rate="",
    )
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_per_message_deflate=False,
        ws="api.http.ws_protocol:GatewayWebSocketProtocol",  # as ``liudong serve`` runs it
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def actors(live_server: LiveServer) -> Iterator[Any]:
    """Makes logged-in readers (``Actor``s, see test_api_auth) whose responses are checked."""
    from tests.e2e.test_api_auth import actor_factory

    with actor_factory(live_server) as make:
        yield make


@pytest.fixture
def anon(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An anonymous client whose responses are checked."""
    from tests.e2e.test_api_auth import checked_client

    with checked_client(live_server) as client:
        yield client
