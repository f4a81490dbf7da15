"""Idempotency survives a crash: the command commits, then storing its response fails (the
fault a crash between the two leaves: the key "in progress" without a response). A retry
with the same ``Idempotency-Key`` gets the original status and body, built from what was
recorded (the aggregate of the key's derived id), and later retries the stored answer;
never a 409, never a second book or loan."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from api.http import idempotency
from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import isbn13


def _crash_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: Any) -> None:
        raise RuntimeError("fault injection: the process died before storing the response")

    monkeypatch.setattr(idempotency, "_store", crash)


def test_a_publish_retried_after_a_crash_gets_its_original_answer(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = live_server.login()
    key = {"Idempotency-Key": f"k-{uuid4().hex}"}
    body = {"isbn": isbn13(), "title": "崩溃之后"}
    with live_server.client(token) as http:
        with monkeypatch.context() as patch:
            _crash_after_commit(patch)
            first = http.post("/v1/books", json=body, headers=key)
        assert first.status_code == 500  # the crash: no answer reached the client
        retry = http.post("/v1/books", json=body, headers=key)
        assert retry.status_code == 201, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        again = http.post("/v1/books", json=body, headers=key)
        assert (again.status_code, again.json()) == (201, retry.json())
        mine = [b for b in http.get("/v1/me/books").json()["items"] if b["isbn"] == body["isbn"]]
        assert [b["id"] for b in mine] == [retry.json()["id"]]  # one book, not two


def test_a_loan_request_retried_after_a_crash_gets_its_original_answer(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, _ = live_server.login()
    borrower, _ = live_server.login()
    with live_server.client(owner) as http:
        book = http.post("/v1/books", json={"isbn": isbn13(), "title": "借"}).json()
    key = {"Idempotency-Key": f"k-{uuid4().hex}"}
    body = {"note": "可以借吗", "contact": {"phone": "13800000000"}}
    with live_server.client(borrower) as http:
        with monkeypatch.context() as patch:
            _crash_after_commit(patch)
            first = http.post(f"/v1/books/{book['id']}/loans", json=body, headers=key)
        assert first.status_code == 500
        retry = http.post(f"/v1/books/{book['id']}/loans", json=body, headers=key)
        assert retry.status_code == 201, retry.text
        loan = retry.json()
        again = http.post(f"/v1/books/{book['id']}/loans", json=body, headers=key)
        assert (again.status_code, again.json()["id"]) == (201, loan["id"])
