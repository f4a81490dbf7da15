"""Idempotency survives a crash: the command commits, then storing its response fails (the
fault a crash between the two leaves: the key "in progress" without a response). A retry
with the same ``Idempotency-Key`` gets the original status and body, built from what was
recorded (the aggregate of the key's derived id), and later retries the stored answer;
never a 409, never a second book or loan."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg
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


def test_a_publish_whose_process_died_before_the_commit_runs_on_retry(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The first request took the key, then its process died before the command committed
    (here: the command fails and the key is not released, as after a kill -9; then the
    database session that took the key ends, as the dead process's connections do). A retry
    runs the command at once: 201, one book; not 409 ``idempotency_in_progress`` for 60 s."""
    from api.http.controllers import books

    token, reader = live_server.login()
    key = f"k-{uuid4().hex}"
    body = {"isbn": isbn13(), "title": "未提交"}

    def died(*_: Any) -> Any:
        raise RuntimeError("fault injection: the process died before the commit")

    with live_server.client(token) as http:
        with monkeypatch.context() as patch:
            patch.setattr(books, "execute", died)
            patch.setattr(idempotency, "_forget", lambda *_: None)  # nobody left to forget
            first = http.post("/v1/books", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 500
        # while the session that took the key lives, the first request may still be running
        again = http.post("/v1/books", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 409 and again.json()["code"] == "idempotency_in_progress"
        with psycopg.connect(database_url, autocommit=True) as admin:
            owner = admin.execute(
                "SELECT owner_pid FROM idempotency_keys WHERE reader_id = %s AND key = %s",
                (reader["id"], key),
            ).fetchone()
            assert owner is not None and owner[0] is not None
            admin.execute("SELECT pg_terminate_backend(%s)", (owner[0],))
        retry = http.post("/v1/books", json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 201, retry.text
        replay = http.post("/v1/books", json=body, headers={"Idempotency-Key": key})
        assert (replay.status_code, replay.json()["id"]) == (201, retry.json()["id"])
        mine = [b for b in http.get("/v1/me/books").json()["items"] if b["isbn"] == body["isbn"]]
        assert [b["id"] for b in mine] == [retry.json()["id"]]
