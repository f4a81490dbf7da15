"""Idempotency survives a crash: the command commits, then storing its response fails (the
fault a crash between the two leaves: the key "in progress" without a response). A retry
with the same ``Idempotency-Key`` gets the original status and body, built from what was
recorded (the aggregate of the key's derived id for a creating command; the key's commit
mark, written with the events, for every command), and later retries the stored answer;
never a 409, never a second book, loan, approval or message."""

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


def stored_status(live_server: LiveServer, key: str) -> Any:
    """The status stored under ``key`` (``None`` while no response is stored)."""
    with live_server.container.pool.connection() as conn:
        row = conn.execute("SELECT status FROM idempotency_keys WHERE key = %s", (key,)).fetchone()
    assert row is not None
    return row["status"]


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


def test_an_approval_retried_after_a_crash_gets_its_original_answer(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that creates nothing: the retry finds the key's commit mark (written with
    the events) and answers from it, instead of running again into a 409."""
    owner, _ = live_server.login()
    borrower, _ = live_server.login()
    with live_server.client(owner) as http:
        book = http.post("/v1/books", json={"isbn": isbn13(), "title": "批准"}).json()
    with live_server.client(borrower) as http:
        loan = http.post(f"/v1/books/{book['id']}/loans").json()
    key = {"Idempotency-Key": f"k-{uuid4().hex}"}
    with live_server.client(owner) as http:
        with monkeypatch.context() as patch:
            _crash_after_commit(patch)
            first = http.post(f"/v1/loans/{loan['id']}/approve", headers=key)
        assert first.status_code == 500  # the crash: no answer reached the client
        history = http.get(f"/v1/books/{book['id']}/history").json()
        assert [e["type"] for e in history][-1] == "Lent"  # yet the approval committed

        retry = http.post(f"/v1/loans/{loan['id']}/approve", headers=key)

        assert retry.status_code == 200, retry.text  # not 409 idempotency_in_progress
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.headers["Liudong-Position"].startswith("library:")
        body = retry.json()
        assert (body["id"], body["status"]) == (loan["id"], "approved")
        assert stored_status(live_server, key["Idempotency-Key"]) == 200  # the retry stored it
        again = http.post(f"/v1/loans/{loan['id']}/approve", headers=key)
        assert (again.status_code, again.json()) == (200, body)
        history = http.get(f"/v1/books/{book['id']}/history").json()
        assert [e["type"] for e in history].count("Lent") == 1  # ran once
        # without the key, approving again is what it always was: a 409
        assert http.post(f"/v1/loans/{loan['id']}/approve").status_code == 409


def test_a_failure_after_the_commit_does_not_forget_the_key(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the events committed (here: building the response) is a 500, but the
    key stays: the retry answers from the commit instead of running the command again."""
    owner, _ = live_server.login()
    key = {"Idempotency-Key": f"k-{uuid4().hex}"}
    with live_server.client(owner) as http:
        book = http.post("/v1/books", json={"isbn": isbn13(), "title": "撤下"}).json()
        with monkeypatch.context() as patch:
            from api.http.controllers import books

            def broken(*_: Any) -> Any:
                raise RuntimeError("fault injection: the response could not be built")

            patch.setattr(books, "book_out", broken)
            first = http.delete(f"/v1/books/{book['id']}", headers=key)
        assert first.status_code == 500

        retry = http.delete(f"/v1/books/{book['id']}", headers=key)

        assert retry.status_code == 200, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert (retry.json()["id"], retry.json()["status"]) == (book["id"], "withdrawn")
        history = http.get(f"/v1/books/{book['id']}/history").json()
        assert [e["type"] for e in history] == ["Published", "Withdrawn"]


def test_a_chat_message_retried_after_a_crash_gets_its_original_answer(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the commit mark, a retry would find the message by its ``client_msg_id`` and
    answer 200 ("already sent"); the first answer was a 201, and the retry gets it."""
    ann, _ = live_server.login()
    _, ben = live_server.login()
    key = {"Idempotency-Key": f"k-{uuid4().hex}"}
    with live_server.client(ann) as http:
        conversation = http.post("/v1/conversations", json={"peer_id": ben["id"]}).json()
        path = f"/v1/conversations/{conversation['id']}/messages"
        body = {"text": "崩溃前发出", "client_msg_id": f"c-{uuid4().hex}"}
        with monkeypatch.context() as patch:
            _crash_after_commit(patch)
            first = http.post(path, json=body, headers=key)
        assert first.status_code == 500

        retry = http.post(path, json=body, headers=key)

        assert retry.status_code == 201, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.headers["Liudong-Position"].startswith("chat:")
        assert stored_status(live_server, key["Idempotency-Key"]) == 201
        message = retry.json()
        assert (message["text"], message["client_msg_id"]) == (body["text"], body["client_msg_id"])
        again = http.post(path, json=body, headers=key)
        assert (again.status_code, again.json()) == (201, message)
        history = http.get(path).json()["items"]
        assert [m["id"] for m in history if m["client_msg_id"] == body["client_msg_id"]] == [
            message["id"]
        ]


def test_a_read_receipt_retried_after_a_crash_gets_its_original_answer(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, _ = live_server.login()
    ben, ben_reader = live_server.login()
    with live_server.client(ann) as http:
        conversation = http.post("/v1/conversations", json={"peer_id": ben_reader["id"]}).json()
        sent = http.post(
            f"/v1/conversations/{conversation['id']}/messages",
            json={"text": "读了吗", "client_msg_id": "1"},
        ).json()
    key = {"Idempotency-Key": f"k-{uuid4().hex}"}
    with live_server.client(ben) as http:
        path = f"/v1/conversations/{conversation['id']}/read"
        with monkeypatch.context() as patch:
            _crash_after_commit(patch)
            first = http.post(path, json={"up_to": sent["seq"]}, headers=key)
        assert first.status_code == 500

        retry = http.post(path, json={"up_to": sent["seq"]}, headers=key)

        assert retry.status_code == 200, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert (retry.json()["read_up_to"], retry.json()["unread"]) == (sent["seq"], 0)


def test_a_revise_and_a_withdraw_with_a_key_are_replayed(live_server: LiveServer) -> None:
    """PATCH and DELETE of a book take the key too: the retry gets the stored answer."""
    owner, _ = live_server.login()
    with live_server.client(owner) as http:
        book = http.post("/v1/books", json={"isbn": isbn13(), "title": "改"}).json()
        key = {"Idempotency-Key": f"k-{uuid4().hex}"}
        first = http.patch(f"/v1/books/{book['id']}", json={"title": "改过"}, headers=key)
        assert first.status_code == 200, first.text
        again = http.patch(f"/v1/books/{book['id']}", json={"title": "改过"}, headers=key)
        assert (again.status_code, again.json()) == (200, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
        other = http.patch(f"/v1/books/{book['id']}", json={"title": "别的"}, headers=key)
        assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
        key = {"Idempotency-Key": f"k-{uuid4().hex}"}
        gone = http.delete(f"/v1/books/{book['id']}", headers=key)
        assert (gone.status_code, gone.json()["status"]) == (200, "withdrawn")
        again = http.delete(f"/v1/books/{book['id']}", headers=key)
        assert (again.status_code, again.json()) == (200, gone.json())
        assert again.headers["Idempotent-Replayed"] == "true"


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
            # with a timeout it returns once the backend has exited (PostgreSQL 14+), not at SIGTERM
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (owner[0],))
        retry = http.post("/v1/books", json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 201, retry.text
        replay = http.post("/v1/books", json=body, headers={"Idempotency-Key": key})
        assert (replay.status_code, replay.json()["id"]) == (201, retry.json()["id"])
        mine = [b for b in http.get("/v1/me/books").json()["items"] if b["isbn"] == body["isbn"]]
        assert [b["id"] for b in mine] == [retry.json()["id"]]
