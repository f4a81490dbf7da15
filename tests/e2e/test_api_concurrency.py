"""E2E over real HTTP: a book is lent to at most one borrower, even when its owner approves
every request for it at the same instant from 16 connections; the winning approval declines
the other requests (``lent_to_another``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import (
    Actor,
    assert_problem,
    checked_client,
    publish,
    request_loan,
)

# fixtures `actors` and `anon` live in tests/e2e/conftest.py


N = 16


def test_sixteen_concurrent_approvals_lend_the_book_once(
    live_server: LiveServer, actors: Callable[..., Actor], anon: httpx.Client
) -> None:
    owner = actors()
    book = publish(owner, title="抢手书")
    readers = [actors() for _ in range(N)]
    loans = [request_loan(reader, book["id"], note=f"#{i}") for i, reader in enumerate(readers)]
    assert len({loan["id"] for loan in loans}) == N

    barrier = threading.Barrier(N)
    responses: list[httpx.Response | BaseException | None] = [None] * N

    def approve(i: int) -> None:
        try:
            with checked_client(live_server, owner.token) as http:
                http.get("/healthz")  # connect before the start line
                barrier.wait(timeout=30)
                responses[i] = http.post(f"/v1/loans/{loans[i]['id']}/approve")
        except BaseException as exc:  # noqa: BLE001 — reported below
            responses[i] = exc

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    failures = [r for r in responses if not isinstance(r, httpx.Response)]
    assert not failures, failures

    done = [r for r in responses if isinstance(r, httpx.Response)]
    winners = [i for i, r in enumerate(done) if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text[:120]) for r in done]
    for i, response in enumerate(done):
        if i != winners[0]:
            # lost the race: the book is lent, or this request was declined by the winner
            assert_problem(
                response, 409, ("book_on_loan", "concurrent_update", "invalid_loan_transition")
            )
    winner = winners[0]
    assert done[winner].json()["status"] == "approved"
    assert done[winner].json()["borrower"]["id"] == readers[winner].id

    # the book is on loan to exactly that borrower, and the read side agrees everywhere
    detail = owner.http.get(f"/v1/books/{book['id']}").json()
    assert detail["status"] == "on_loan"
    assert detail["borrower"]["id"] == readers[winner].id
    assert detail["loan_id"] == loans[winner]["id"]
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "on_loan"
    approved = owner.http.get(
        "/v1/me/loans", params={"role": "lender", "status": "approved", "limit": 100}
    ).json()
    assert [loan["id"] for loan in approved["items"]] == [loans[winner]["id"]]
    declined = owner.http.get(
        "/v1/me/loans", params={"role": "lender", "status": "declined", "limit": 100}
    ).json()
    assert sorted(loan["id"] for loan in declined["items"]) == sorted(
        loan["id"] for i, loan in enumerate(loans) if i != winner
    )
    # every loser was declined by the winning approval, from its borrower's side too
    for i, reader in enumerate(readers):
        loan = reader.http.get(f"/v1/loans/{loans[i]['id']}").json()
        if i == winner:
            assert loan["status"] == "approved"
        else:
            assert (loan["status"], loan["decline_reason"]) == ("declined", "lent_to_another")
    history = owner.http.get(f"/v1/books/{book['id']}/history").json()
    assert [e["type"] for e in history] == ["Published", *["RequestReceived"] * N, "Lent"]

    # a retry of a losing approval is still refused: that request was declined
    loser = next(i for i in range(N) if i != winner)
    assert_problem(
        owner.http.post(f"/v1/loans/{loans[loser]['id']}/approve"), 409, "invalid_loan_transition"
    )
