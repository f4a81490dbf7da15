"""E2E over real HTTP: loan requests (``POST /v1/books/{id}/loans``), ``/v1/loans/{id}`` and
its transitions, ``/v1/me/loans``: every transition, every refusal, who sees what."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.test_api_auth import (
    Actor,
    assert_problem,
    loan_action,
    position_of,
    publish,
    request_loan,
)

# fixtures `actors` and `anon` live in tests/e2e/conftest.py


Actors = Callable[..., Actor]


def loan_ids(http: httpx.Client, **params: Any) -> list[str]:
    response = http.get("/v1/me/loans", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def state(owner: Actor, borrower: Actor, book_id: str, loan_id: str) -> tuple[Any, ...]:
    """What a refused request must leave unchanged."""
    book = owner.http.get(f"/v1/books/{book_id}").json()
    loan = owner.http.get(f"/v1/loans/{loan_id}").json()
    return (
        book["status"],
        book["borrower"],
        book["updated_at"],
        loan["status"],
        loan["updated_at"],
        loan_ids(owner.http),
        loan_ids(borrower.http),
    )


# -- the happy path --------------------------------------------------------------------------------


def test_request_approve_return_confirm(actors: Actors, anon: httpx.Client) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner, title="活着")
    contact = {"wechat_id": "wx_reader", "phone": "13800000000"}

    response = borrower.http.post(
        f"/v1/books/{book['id']}/loans", json={"note": "想读很久了", "contact": contact}
    )
    assert response.status_code == 201, response.text
    p_requested = position_of(response)
    loan = response.json()
    uuid.UUID(loan["id"])
    assert loan["status"] == "requested" and loan["note"] == "想读很久了"
    assert loan["book"] == {
        "id": book["id"],
        "title": "活着",
        "isbn": book["isbn"],
        "cover_url": "",
    }
    assert loan["borrower"] == {"id": borrower.id, "nickname": borrower.name, "avatar_url": ""}
    assert loan["lender"] == {"id": owner.id, "nickname": owner.name, "avatar_url": ""}
    assert loan["contact"] is None  # the borrower's own contact is for the lender's eyes
    assert loan["requested_at"] and loan["approved_at"] is None
    # read-your-writes, for both parties
    assert loan_ids(borrower.http, role="borrower", status="requested") == [loan["id"]]
    assert loan_ids(owner.http, role="lender", status="requested") == [loan["id"]]
    lender_view = owner.http.get(f"/v1/loans/{loan['id']}").json()
    assert lender_view["contact"] == contact
    assert (
        owner.http.get("/v1/me/loans", params={"role": "lender"}).json()["items"][0]["contact"]
        == contact
    )
    assert borrower.http.get("/v1/me/loans").json()["items"][0]["contact"] is None
    # a request does not lend the book
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "available"

    approved = loan_action(owner, loan["id"], "approve")
    assert approved.status_code == 200, approved.text
    p_approved = position_of(approved)
    assert p_approved > p_requested
    assert approved.json()["status"] == "approved" and approved.json()["approved_at"]
    assert approved.json()["contact"] == contact
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "on_loan"
    assert loan_ids(owner.http, role="lender", status="approved") == [loan["id"]]
    assert loan_ids(owner.http, role="lender", status="requested") == []
    assert loan_ids(borrower.http, role="borrower", status="approved") == [loan["id"]]
    assert loan_ids(owner.http, role="borrower") == []
    assert loan_ids(borrower.http, role="lender") == []
    assert borrower.http.get(f"/v1/loans/{loan['id']}").json()["contact"] is None

    returning = loan_action(borrower, loan["id"], "return")
    assert returning.status_code == 200, returning.text
    assert position_of(returning) > p_approved
    assert returning.json()["status"] == "returning" and returning.json()["return_started_at"]
    assert returning.json()["contact"] is None
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "on_loan"
    assert loan_ids(owner.http, status="returning") == [loan["id"]]

    returned = loan_action(owner, loan["id"], "confirm-return")
    assert returned.status_code == 200, returned.text
    position_of(returned)
    body = returned.json()
    assert body["status"] == "returned" and body["returned_at"]
    assert (
        body["requested_at"]
        <= body["approved_at"]
        <= body["return_started_at"]
        <= body["returned_at"]
    )
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "available"
    assert loan_ids(borrower.http, status="returned") == [loan["id"]]

    # the book can be lent again, to someone else
    second = actors()
    again = request_loan(second, book["id"])
    assert loan_action(owner, again["id"], "approve").json()["status"] == "approved"
    assert owner.http.get(f"/v1/books/{book['id']}").json()["borrower"]["id"] == second.id
    # newest first, both roles
    assert loan_ids(owner.http) == [again["id"], loan["id"]]


def test_decline_with_a_reason(actors: Actors, anon: httpx.Client) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    response = loan_action(owner, loan["id"], "decline", json={"reason": "这本书暂时不借"})
    assert response.status_code == 200, response.text
    position_of(response)
    assert response.json()["status"] == "declined" and response.json()["declined_at"]
    assert borrower.http.get(f"/v1/loans/{loan['id']}").json()["decline_reason"] == "这本书暂时不借"
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "available"
    assert loan_ids(borrower.http, status="declined") == [loan["id"]]
    # declining without a body
    other = request_loan(actors(), book["id"])
    assert loan_action(owner, other["id"], "decline").json()["status"] == "declined"


def test_cancel_by_the_borrower(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    response = loan_action(borrower, loan["id"], "cancel")
    assert response.status_code == 200, response.text
    position_of(response)
    assert response.json()["status"] == "cancelled" and response.json()["cancelled_at"]
    assert loan_ids(owner.http, role="lender", status="cancelled") == [loan["id"]]
    assert loan_ids(owner.http, role="lender", status="requested") == []


def test_a_request_body_is_optional(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    response = borrower.http.post(f"/v1/books/{book['id']}/loans")
    assert response.status_code == 201, response.text
    loan = response.json()
    assert (
        loan["note"] == "" and owner.http.get(f"/v1/loans/{loan['id']}").json()["contact"] is None
    )


def test_several_requests_for_one_book_and_only_one_is_lent(actors: Actors) -> None:
    owner, first, second, third = actors(), actors(), actors(), actors()
    book = publish(owner)
    loan1 = request_loan(first, book["id"])
    loan2 = request_loan(second, book["id"])
    assert loan_action(owner, loan1["id"], "approve").status_code == 200
    # approving one request declined the other: the book went to someone else
    declined = second.http.get(f"/v1/loans/{loan2['id']}").json()
    assert (declined["status"], declined["decline_reason"]) == ("declined", "lent_to_another")
    before = state(owner, second, book["id"], loan2["id"])
    assert_problem(loan_action(owner, loan2["id"], "approve"), 409, "invalid_loan_transition")
    assert state(owner, second, book["id"], loan2["id"]) == before
    assert owner.http.get(f"/v1/books/{book['id']}").json()["borrower"]["id"] == first.id
    # a request made while the book is out waits: approved once the book is back
    loan3 = request_loan(third, book["id"])
    assert loan_action(first, loan1["id"], "return").status_code == 200
    assert_problem(loan_action(owner, loan3["id"], "approve"), 409, "book_on_loan")
    assert loan_action(owner, loan1["id"], "confirm-return").status_code == 200
    assert loan_action(owner, loan3["id"], "approve").json()["status"] == "approved"


def test_request_on_a_lent_book_is_accepted(actors: Actors) -> None:
    """A request while the book is out waits for the lender; only approval needs the book."""
    owner, first, second = actors(), actors(), actors()
    book = publish(owner)
    loan1 = request_loan(first, book["id"])
    assert loan_action(owner, loan1["id"], "approve").status_code == 200
    loan2 = request_loan(second, book["id"])
    assert loan2["status"] == "requested"


# -- refusals --------------------------------------------------------------------------------------


def test_borrowing_your_own_book_is_422(actors: Actors) -> None:
    owner = actors()
    book = publish(owner)
    assert_problem(
        owner.http.post(f"/v1/books/{book['id']}/loans", json={"note": "me"}),
        422,
        "cannot_borrow_own_book",
    )
    assert loan_ids(owner.http) == []
    assert owner.http.get(f"/v1/books/{book['id']}").json()["status"] == "available"


def test_requesting_a_withdrawn_book_is_409(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    assert owner.http.delete(f"/v1/books/{book['id']}").status_code == 200
    assert_problem(
        borrower.http.post(f"/v1/books/{book['id']}/loans", json={}), 409, "book_withdrawn"
    )
    assert loan_ids(borrower.http) == [] and loan_ids(owner.http) == []


def test_a_request_for_a_since_withdrawn_book_is_declined(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    assert owner.http.delete(f"/v1/books/{book['id']}").status_code == 200
    declined = borrower.http.get(f"/v1/loans/{loan['id']}").json()
    assert (declined["status"], declined["decline_reason"]) == ("declined", "book_withdrawn")
    before = state(owner, borrower, book["id"], loan["id"])
    assert_problem(loan_action(owner, loan["id"], "approve"), 409, "invalid_loan_transition")
    assert_problem(loan_action(borrower, loan["id"], "cancel"), 409, "invalid_loan_transition")
    assert state(owner, borrower, book["id"], loan["id"]) == before
    # relisted, it may be asked for again
    assert owner.http.post(f"/v1/books/{book['id']}/relist").status_code == 200
    assert request_loan(borrower, book["id"])["status"] == "requested"


# every wrong-state transition, from every state
STEPS_TO = {
    "requested": [],
    "approved": [("owner", "approve")],
    "returning": [("owner", "approve"), ("borrower", "return")],
    "returned": [("owner", "approve"), ("borrower", "return"), ("owner", "confirm-return")],
    "declined": [("owner", "decline")],
    "cancelled": [("borrower", "cancel")],
}
ACTIONS = {  # action → (who may, the states it is allowed from)
    "approve": ("owner", {"requested"}),
    "decline": ("owner", {"requested"}),
    "cancel": ("borrower", {"requested"}),
    "return": ("borrower", {"approved"}),
    "confirm-return": ("owner", {"returning"}),
}


WRONG_PARTY = {  # the loan's state → (who, action, code) refused with a 403
    "requested": [
        ("borrower", "approve", "not_the_lender"),
        ("borrower", "decline", "not_the_lender"),
        ("owner", "cancel", "not_the_borrower"),
        ("stranger", "approve", "not_the_lender"),
        ("stranger", "decline", "not_the_lender"),
        ("stranger", "cancel", "not_the_borrower"),
    ],
    "approved": [
        ("owner", "return", "not_the_borrower"),
        ("stranger", "return", "not_the_borrower"),
    ],
    "returning": [
        ("borrower", "confirm-return", "not_the_lender"),
        ("stranger", "confirm-return", "not_the_lender"),
    ],
}


@pytest.mark.parametrize("status", list(WRONG_PARTY))
def test_the_wrong_party_is_403_and_nothing_changes(actors: Actors, status: str) -> None:
    people = {"owner": actors(), "borrower": actors(), "stranger": actors()}
    owner, borrower = people["owner"], people["borrower"]
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    for actor, step in STEPS_TO[status]:
        assert loan_action(people[actor], loan["id"], step).status_code == 200
    before = state(owner, borrower, book["id"], loan["id"])
    for who, action, code in WRONG_PARTY[status]:
        assert_problem(loan_action(people[who], loan["id"], action), 403, code)
        assert state(owner, borrower, book["id"], loan["id"]) == before
    assert loan_ids(people["stranger"].http) == []


def test_a_stranger_cannot_see_a_loan(actors: Actors) -> None:
    owner, borrower, stranger = actors(), actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"], contact={"phone": "13912345678"})
    response = stranger.http.get(f"/v1/loans/{loan['id']}")
    assert_problem(response, 403, "not_a_party")
    assert "13912345678" not in response.text
    assert owner.http.get(f"/v1/loans/{loan['id']}").status_code == 200
    assert borrower.http.get(f"/v1/loans/{loan['id']}").status_code == 200


@pytest.mark.parametrize("status", list(STEPS_TO))
def test_a_transition_from_the_wrong_state_is_409_and_nothing_changes(
    actors: Actors, status: str
) -> None:
    """Every action not allowed from ``status``, by the party that could do it otherwise."""
    people = {"owner": actors(), "borrower": actors()}
    owner, borrower = people["owner"], people["borrower"]
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    for actor, step in STEPS_TO[status]:
        assert loan_action(people[actor], loan["id"], step).status_code == 200
    assert owner.http.get(f"/v1/loans/{loan['id']}").json()["status"] == status
    before = state(owner, borrower, book["id"], loan["id"])
    wrong = [(who, action) for action, (who, allowed) in ACTIONS.items() if status not in allowed]
    assert len(wrong) == (
        2 if status == "requested" else 4 if status in ("approved", "returning") else 5
    )
    for who, action in wrong:
        response = loan_action(people[who], loan["id"], action)
        assert_problem(response, 409, "invalid_loan_transition")
        assert status in response.json()["detail"]
        assert state(owner, borrower, book["id"], loan["id"]) == before


def test_unknown_and_foreign_loan_ids_are_404(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    missing = str(uuid.uuid4())
    assert_problem(owner.http.get(f"/v1/loans/{missing}"), 404, "loan_not_found")
    for action in ACTIONS:
        assert_problem(loan_action(owner, missing, action), 404, "loan_not_found")
        # a book id is not a loan id
        assert_problem(loan_action(owner, book["id"], action), 404, "loan_not_found")
    assert_problem(owner.http.get(f"/v1/loans/{book['id']}"), 404, "loan_not_found")
    # a loan id is not a book id
    loan = request_loan(borrower, book["id"])
    assert_problem(owner.http.get(f"/v1/books/{loan['id']}"), 404, "book_not_found")
    assert_problem(
        borrower.http.post(f"/v1/books/{loan['id']}/loans", json={}), 404, "book_not_found"
    )
    assert owner.http.get(f"/v1/books/{book['id']}").json()["status"] == "available"


def test_me_loans_filters_and_refusals(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    lent = publish(owner)
    theirs = publish(borrower)
    mine = request_loan(borrower, lent["id"])
    back = request_loan(owner, theirs["id"])
    assert loan_ids(owner.http) == [back["id"], mine["id"]]
    assert loan_ids(owner.http, role="lender") == [mine["id"]]
    assert loan_ids(owner.http, role="borrower") == [back["id"]]
    assert loan_ids(owner.http, status="approved") == []
    first = owner.http.get("/v1/me/loans", params={"limit": 1}).json()
    rest = owner.http.get(
        "/v1/me/loans", params={"limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [back["id"], mine["id"]]
    assert rest["next_cursor"] is None
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"role": "owner"}, "validation_failed"),
        ({"status": "lost"}, "validation_failed"),
        ({"limit": 0}, "validation_failed"),
        ({"limit": 101}, "validation_failed"),
        ({"cursor": "zzz"}, "invalid_cursor"),
    ]
    for params, code in refusals:
        assert_problem(owner.http.get("/v1/me/loans", params=params), 422, code)


# -- Idempotency-Key -------------------------------------------------------------------------------


def test_a_loan_request_with_an_idempotency_key_acts_once(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    other_book = publish(owner)
    key = {"Idempotency-Key": f"loan-{uuid.uuid4().hex}"}
    body = {"note": "请借我", "contact": {"wechat_id": "wx1"}}
    first = borrower.http.post(f"/v1/books/{book['id']}/loans", json=body, headers=key)
    assert first.status_code == 201, first.text
    second = borrower.http.post(f"/v1/books/{book['id']}/loans", json=body, headers=key)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert loan_ids(borrower.http) == [first.json()["id"]]
    assert loan_ids(owner.http, role="lender") == [first.json()["id"]]
    # the same key for another request: another body, or another book
    changed = {**body, "note": "改了"}
    assert_problem(
        borrower.http.post(f"/v1/books/{book['id']}/loans", json=changed, headers=key),
        422,
        "idempotency_key_reused",
    )
    assert_problem(
        borrower.http.post(f"/v1/books/{other_book['id']}/loans", json=body, headers=key),
        422,
        "idempotency_key_reused",
    )
    assert loan_ids(borrower.http) == [first.json()["id"]]
    assert owner.http.get(f"/v1/loans/{first.json()['id']}").json()["note"] == "请借我"


# -- contact details end with the loan ---------------------------------------------------------


def _inbox_contact(owner: Actor, loan_id: str) -> Any:
    response = owner.http.get("/v1/inbox")
    assert response.status_code == 200, response.text
    (item,) = [
        i
        for i in response.json()["items"]
        if i["kind"] == "loan.requested" and i["data"]["loan_id"] == loan_id
    ]
    return item["data"]["contact"]


@pytest.mark.parametrize("ending", ["decline", "cancel", "returned"])
def test_the_lender_stops_seeing_the_contact_once_the_loan_has_ended(
    actors: Actors, ending: str
) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    contact = {"wechat_id": "wx_until_the_end", "phone": "13700001111"}
    loan = request_loan(borrower, book["id"], note="周末取", contact=contact)
    assert owner.http.get(f"/v1/loans/{loan['id']}").json()["contact"] == contact
    then = owner.http.get(f"/v1/loans/{loan['id']}", params={"as_of": "1"})
    assert then.json()["contact"] == contact  # open: shown, as it was too
    assert _inbox_contact(owner, loan["id"]) == contact
    if ending == "decline":
        steps = [(owner, "decline")]
    elif ending == "cancel":
        steps = [(borrower, "cancel")]
    else:
        steps = [(owner, "approve"), (borrower, "return"), (owner, "confirm-return")]
    for actor, action in steps:
        response = loan_action(actor, loan["id"], action)
        assert response.status_code == 200, response.text
        if action in ("approve", "return"):  # still open: still shown
            assert response.json()["contact"] == (contact if actor is owner else None)
            assert owner.http.get(f"/v1/loans/{loan['id']}").json()["contact"] == contact
    ended = response.json()
    assert ended["status"] in ("declined", "cancelled", "returned")
    assert ended["contact"] is None
    assert owner.http.get(f"/v1/loans/{loan['id']}").json()["contact"] is None
    mine = owner.http.get("/v1/me/loans", params={"role": "lender"}).json()["items"]
    assert [i["contact"] for i in mine if i["id"] == loan["id"]] == [None]
    # nor as it was (time travel), nor in the lender's inbox item of the request
    as_of = owner.http.get(f"/v1/loans/{loan['id']}", params={"as_of": "1"})
    assert as_of.status_code == 200, as_of.text
    assert as_of.json()["contact"] is None
    wait_until(lambda: _inbox_contact(owner, loan["id"]) is None)  # the inbox may lag
