"""Limits with honest answers: logins over the per-address or per-code limit get 429
problem+json ``rate_limited`` with ``Retry-After`` (the seconds until the moving window lets
one more through); a refused attempt is not counted."""

from __future__ import annotations

from uuid import uuid4

import pytest

from api.adapters.ratelimit import RateLimited, RateLimits
from tests.e2e.conftest import LiveServer


def test_logins_over_the_limits_get_429_rate_limited_with_retry_after(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        live_server.container,
        "rate_limits",
        RateLimits({"login_address": "4/minute", "login_code": "2/minute"}),
    )
    with live_server.client() as http:
        code = f"dev:rl{uuid4().hex[:8]}"
        assert [http.post("/v1/auth/login", json={"code": code}).status_code for _ in range(2)] == [
            200,
            200,
        ]
        refused = http.post("/v1/auth/login", json={"code": code})  # the same code again
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "rate_limited"
        assert 0 < int(refused.headers["retry-after"]) <= 60
        other = http.post("/v1/auth/login", json={"code": f"dev:rl{uuid4().hex[:8]}"})
        assert other.status_code == 200  # 4th from this address (the refused one counted)
        over = http.post("/v1/auth/login", json={"code": f"dev:rl{uuid4().hex[:8]}"})
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"


def test_a_rule_counts_per_identifier_and_an_empty_rule_is_off() -> None:
    limits = RateLimits({"a": "2/minute", "off": ""})
    limits.hit("a", "x")
    limits.hit("a", "x")
    limits.hit("a", "y")
    with pytest.raises(RateLimited) as caught:
        limits.hit("a", "x")
    assert 1 <= caught.value.retry_after <= 60
    for _ in range(100):
        limits.hit("off", "x")
        limits.hit("unknown", "x")


def test_loan_requests_and_chat_sends_over_the_limit_per_reader_get_429(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.test_api_auth import isbn13

    owner, owner_reader = live_server.login()
    borrower, _ = live_server.login()
    with live_server.client(owner) as http:
        books = [
            http.post("/v1/books", json={"isbn": isbn13(), "title": f"书{i}"}).json()
            for i in range(2)
        ]
    monkeypatch.setattr(
        live_server.container,
        "rate_limits",
        RateLimits({"loan_requests": "1/minute", "chat_sends": "1/minute"}),
    )
    with live_server.client(borrower) as http:
        assert http.post(f"/v1/books/{books[0]['id']}/loans").status_code in (201, 202)
        key = {"Idempotency-Key": f"k-{uuid4().hex}"}
        over = http.post(f"/v1/books/{books[1]['id']}/loans", headers=key)
        assert over.status_code == 429 and over.json()["code"] == "rate_limited"
        assert int(over.headers["retry-after"]) >= 1
        # a refusal is not remembered under its Idempotency-Key: later, the retry acts
        conversation = http.post("/v1/conversations", json={"peer_id": owner_reader["id"]})
        assert conversation.status_code in (200, 201), conversation.text
        messages = f"/v1/conversations/{conversation.json()['id']}/messages"
        sent = http.post(messages, json={"text": "一", "client_msg_id": "a"})
        assert sent.status_code in (201, 202), sent.text
        again = http.post(messages, json={"text": "二", "client_msg_id": "b"})
        assert again.status_code == 429 and again.json()["code"] == "rate_limited"
