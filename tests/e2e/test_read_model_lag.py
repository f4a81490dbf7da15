"""When a read model lags past the consistency timeout, a command answers 202 with the one
``Accepted`` body of the OpenAPI document (and ``Liudong-Position``), and a login answers
503 ``read_model_lag`` with ``Retry-After``: forced here by making every wait time out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest

from api.bootstrap.container import ReadModelLag
from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import Actor, assert_problem, publish


@pytest.fixture
def lagging(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def wait_for(projection: str, source: str, recorded: Any) -> None:
        raise ReadModelLag(f"{projection} lags (test)")

    async def wait_for_async(projection: str, source: str, recorded: Any) -> None:
        raise ReadModelLag(f"{projection} lags (test)")

    monkeypatch.setattr(live_server.container, "wait_for", wait_for)
    # the async handlers (loans, loan requests) await the board on the event loop
    monkeypatch.setattr(live_server.container, "wait_for_async", wait_for_async)
    yield


def accepted(live_server: LiveServer, response: Any, log: str) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    schema = live_server.app.openapi_schema.to_schema()["components"]["schemas"]["Accepted"]
    assert set(schema["required"]) <= set(body) <= set(schema["properties"]), body
    assert body["status"] == "accepted" and isinstance(body["position"], int)
    UUID(body["id"])
    assert response.headers["Liudong-Position"] == f"{log}:{body['position']}"
    return body


def test_commands_answer_202_accepted_while_the_read_models_lag(
    live_server: LiveServer, actors: Callable[..., Actor], request: pytest.FixtureRequest
) -> None:
    owner, peer = actors(), actors()
    book = publish(owner)
    opened = peer.http.post("/v1/conversations", json={"peer_id": owner.id}).json()
    cid = opened["id"]
    sent = peer.http.post(
        f"/v1/conversations/{cid}/messages", json={"text": "hi", "client_msg_id": "lag-0"}
    ).json()
    request.getfixturevalue("lagging")

    revised = owner.http.patch(f"/v1/books/{book['id']}", json={"title": "慢"})
    assert accepted(live_server, revised, "library")["id"] == book["id"]
    message = peer.http.post(
        f"/v1/conversations/{cid}/messages", json={"text": "慢", "client_msg_id": "lag-1"}
    )
    body = accepted(live_server, message, "chat")
    assert body["id"] == cid and body["seq"] == 2
    UUID(body["message_id"])
    hidden = owner.http.post(f"/v1/conversations/{cid}/messages/{sent['id']}/hide")
    assert accepted(live_server, hidden, "chat")["id"] == cid


def test_a_login_while_the_shelf_lags_is_503_with_retry_after(
    live_server: LiveServer, lagging: None
) -> None:
    with live_server.client() as anon:  # not checked_client: this 5xx is the point
        response = anon.post("/v1/auth/login", json={"code": "dev:lagging-reader"})
    assert_problem(response, 503, "read_model_lag")
    assert response.headers["Retry-After"] == "1"


def test_loan_commands_answer_202_accepted_while_the_shelf_lags(
    live_server: LiveServer, actors: Callable[..., Actor], request: pytest.FixtureRequest
) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    request.getfixturevalue("lagging")

    requested = borrower.http.post(f"/v1/books/{book['id']}/loans", json={"note": "慢"})
    loan_id = accepted(live_server, requested, "library")["id"]
    key = {"Idempotency-Key": "lagging-approve"}
    approved = owner.http.post(f"/v1/loans/{loan_id}/approve", headers=key)
    first = accepted(live_server, approved, "library")
    assert first["id"] == loan_id
    # the 202 is what the key remembers: a retry gets it again, and nothing runs twice
    again = owner.http.post(f"/v1/loans/{loan_id}/approve", headers=key)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first
