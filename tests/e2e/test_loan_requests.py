"""E2E over real HTTP and WebSocket: loan requests that make sense (issue 10, part 3).

One open request per borrower per book (a second is 409 ``request_pending`` with the open
loan's id, even when sixteen arrive at the same instant); approving one request declines the
book's other open requests (``lent_to_another``) and withdrawing the book declines all of
them (``book_withdrawn``), and each declined borrower is told: an inbox item and a push on
their socket, as for a decline by the lender."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import LiveServer
from tests.e2e.realtime_helpers import Ws, auth, login
from tests.e2e.test_api_auth import (
    Actor,
    assert_problem,
    checked_client,
    isbn13,
    loan_action,
    publish,
    request_loan,
)

Actors = Callable[..., Actor]


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


def test_a_second_request_of_the_same_book_is_409_request_pending(actors: Actors) -> None:
    owner, borrower, other = actors(), actors(), actors()
    book = publish(owner, title="一本书只问一次")
    first = request_loan(borrower, book["id"], note="想借")

    again = borrower.http.post(f"/v1/books/{book['id']}/loans", json={"note": "再问一次"})

    body = assert_problem(again, 409, "request_pending")
    assert body["loan_id"] == first["id"]
    lent = owner.http.get("/v1/me/loans", params={"role": "lender", "status": "requested"})
    assert [loan["id"] for loan in lent.json()["items"]] == [first["id"]]  # no second request
    # another borrower is not affected; nor another book of the same owner
    request_loan(other, book["id"])
    request_loan(borrower, publish(owner)["id"])
    # once the request is closed, the borrower may ask again
    assert loan_action(borrower, first["id"], "cancel").status_code == 200
    second = request_loan(borrower, book["id"], note="还是想借")
    assert second["id"] != first["id"]


def test_the_borrower_holding_the_book_gets_request_pending_with_that_loan(
    actors: Actors,
) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    assert loan_action(owner, loan["id"], "approve").status_code == 200

    again = borrower.http.post(f"/v1/books/{book['id']}/loans")

    assert assert_problem(again, 409, "request_pending")["loan_id"] == loan["id"]


def test_sixteen_simultaneous_requests_of_one_borrower_record_one(
    live_server: LiveServer, actors: Actors
) -> None:
    n = 16
    owner, borrower = actors(), actors()
    book = publish(owner, title="抢着借")
    barrier = threading.Barrier(n)
    responses: list[httpx.Response | BaseException | None] = [None] * n

    def ask(i: int) -> None:
        try:
            with checked_client(live_server, borrower.token) as client:
                client.get("/healthz")  # connect before the start line
                barrier.wait(timeout=30)
                responses[i] = client.post(
                    f"/v1/books/{book['id']}/loans",
                    json={"note": f"#{i}"},
                    headers={"Idempotency-Key": f"k-{uuid4().hex}"},  # 16 different requests
                )
        except BaseException as exc:  # noqa: BLE001 — reported below
            responses[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = [r for r in responses if isinstance(r, httpx.Response)]
    assert len(done) == n, responses

    winners = [r for r in done if r.status_code == 201]
    assert len(winners) == 1, [(r.status_code, r.text[:120]) for r in done]
    loan_id = winners[0].json()["id"]
    for response in done:
        if response is not winners[0]:
            assert assert_problem(response, 409, "request_pending")["loan_id"] == loan_id
    lent = owner.http.get("/v1/me/loans", params={"role": "lender", "limit": 100}).json()
    assert [loan["id"] for loan in lent["items"]] == [loan_id]
    history = owner.http.get(f"/v1/books/{book['id']}/history").json()
    assert [e["type"] for e in history] == ["Published", "RequestReceived"]


async def _publish(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    r = await http.post(
        "/v1/books", json={"isbn": isbn13(), "title": "只有一本"}, headers=auth(token)
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _request(http: httpx.AsyncClient, token: str, book_id: str) -> dict[str, Any]:
    r = await http.post(f"/v1/books/{book_id}/loans", json={"note": "想读"}, headers=auth(token))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _told_declined(
    http: httpx.AsyncClient, ws: Ws, token: str, loan_id: str, reason: str
) -> None:
    """The borrower's socket gets the ``loan.declined`` push, and their inbox has the item."""
    event = await ws.recv_until(
        lambda f: f.get("type") == "event" and f.get("data", {}).get("loan_id") == loan_id
    )
    assert event["kind"] == "loan.declined"
    assert event["data"]["reason"] == reason
    assert event["data"]["status"] == "declined"
    inbox = (await http.get("/v1/inbox", params={"limit": 100}, headers=auth(token))).json()
    items = [i for i in inbox["items"] if i["data"].get("loan_id") == loan_id]
    assert [(i["kind"], i["seq"], i["data"]["reason"]) for i in items] == [
        ("loan.declined", event["seq"], reason)
    ]
    loan = (await http.get(f"/v1/loans/{loan_id}", headers=auth(token))).json()
    assert (loan["status"], loan["decline_reason"]) == ("declined", reason)


async def test_approving_one_request_declines_the_others_and_tells_their_borrowers(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    owner_token, _ = await login(http)
    chosen_token, chosen = await login(http)
    others = [await login(http) for _ in range(2)]
    book = await _publish(http, owner_token)
    chosen_loan = await _request(http, chosen_token, book["id"])
    loans = [await _request(http, token, book["id"]) for token, _ in others]
    sockets = [await Ws.open(live_server.url, token) for token, _ in others]
    try:
        for ws in sockets:
            await ws.recv_type("hello")

        r = await http.post(f"/v1/loans/{chosen_loan['id']}/approve", headers=auth(owner_token))

        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"
        assert r.json()["borrower"]["id"] == chosen["id"]
        for ws, (token, _), loan in zip(sockets, others, loans, strict=True):
            await _told_declined(http, ws, token, loan["id"], "lent_to_another")
    finally:
        for ws in sockets:
            await ws.close()
    # the lender sees one approved loan and two declined ones, none still requested
    mine = (
        await http.get(
            "/v1/me/loans", params={"role": "lender", "limit": 100}, headers=auth(owner_token)
        )
    ).json()
    assert sorted((loan["id"], loan["status"]) for loan in mine["items"]) == sorted(
        [(chosen_loan["id"], "approved"), *((loan["id"], "declined") for loan in loans)]
    )
    # a declined request cannot be approved any more
    r = await http.post(f"/v1/loans/{loans[0]['id']}/approve", headers=auth(owner_token))
    assert r.status_code == 409 and r.json()["code"] == "invalid_loan_transition"


async def test_withdrawing_a_book_declines_its_open_requests_and_tells_their_borrowers(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    owner_token, _ = await login(http)
    borrower_token, _ = await login(http)
    cancelled_token, _ = await login(http)
    book = await _publish(http, owner_token)
    loan = await _request(http, borrower_token, book["id"])
    cancelled = await _request(http, cancelled_token, book["id"])
    r = await http.post(f"/v1/loans/{cancelled['id']}/cancel", headers=auth(cancelled_token))
    assert r.status_code == 200, r.text
    ws = await Ws.open(live_server.url, borrower_token)
    try:
        await ws.recv_type("hello")

        r = await http.delete(f"/v1/books/{book['id']}", headers=auth(owner_token))

        assert r.status_code == 200, r.text
        assert r.json()["status"] == "withdrawn"
        await _told_declined(http, ws, borrower_token, loan["id"], "book_withdrawn")
    finally:
        await ws.close()
    r = await http.get(f"/v1/loans/{cancelled['id']}", headers=auth(cancelled_token))
    assert r.json()["status"] == "cancelled"  # a closed request is left as it was
