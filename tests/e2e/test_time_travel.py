"""E2E over real HTTP: time travel, ``GET /v1/books/{id}?as_of=…`` and
``GET /v1/loans/{id}?as_of=…`` (``api.http.time_travel``): a version or an aware ISO 8601 time,
the state as it was, the same visibility rules as now, 404/422 refusals."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import (
    Actor,
    actor_factory,
    assert_problem,
    checked_client,
    loan_action,
    publish,
    request_loan,
)

Actors = Callable[..., Actor]


@pytest.fixture(scope="module")
def actors(live_server: LiveServer) -> Iterator[Actors]:
    with actor_factory(live_server) as make:
        yield make


@pytest.fixture(scope="module")
def anon(live_server: LiveServer) -> Iterator[httpx.Client]:
    with checked_client(live_server) as client:
        yield client


def instant() -> datetime:
    """Now (UTC), with a little room on both sides so it lies strictly between events."""
    time.sleep(0.02)
    now = datetime.now(UTC)
    time.sleep(0.02)
    return now


@dataclass
class Story:
    owner: Actor
    borrower: Actor
    stranger: Actor
    book_id: str
    loan_id: str
    original_title: str
    before_publish: datetime
    after_publish: datetime  # book v1, before the revision
    after_request: datetime  # loan v1 (requested), book v2 (revised)
    after_approve: datetime  # loan v2 (approved), book v3 (on loan)
    after_confirm: datetime  # loan v4 (returned), book v4 (available)


@pytest.fixture(scope="module")
def story(actors: Actors) -> Story:
    """publish → revise → request (with contact) → approve → return → confirm return."""
    owner, borrower, stranger = actors(), actors(), actors()
    title = f"时间旅行 {uuid.uuid4().hex[:6]}"
    before_publish = instant()
    book = publish(owner, title=title, tags=["旧"])
    after_publish = instant()
    revised = owner.http.patch(f"/v1/books/{book['id']}", json={"title": title + " 修订版"})
    assert revised.status_code == 200, revised.text
    loan = request_loan(
        borrower, book["id"], note="想读", contact={"wechat_id": "wx-tt", "phone": "13800000001"}
    )
    after_request = instant()
    assert loan_action(owner, loan["id"], "approve").status_code == 200
    after_approve = instant()
    assert loan_action(borrower, loan["id"], "return").status_code == 200
    assert loan_action(owner, loan["id"], "confirm-return").status_code == 200
    after_confirm = instant()
    return Story(
        owner,
        borrower,
        stranger,
        book["id"],
        loan["id"],
        title,
        before_publish,
        after_publish,
        after_request,
        after_approve,
        after_confirm,
    )


def book_as_of(http: httpx.Client, book_id: str, as_of: Any) -> httpx.Response:
    return http.get(f"/v1/books/{book_id}", params={"as_of": str(as_of)})


def loan_as_of(http: httpx.Client, loan_id: str, as_of: Any) -> httpx.Response:
    return http.get(f"/v1/loans/{loan_id}", params={"as_of": str(as_of)})


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- books --------------------------------------------------------------------------------------


def test_book_as_of_version_1_is_the_original(story: Story, anon: httpx.Client) -> None:
    now = ok(anon.get(f"/v1/books/{story.book_id}"))
    then = ok(book_as_of(anon, story.book_id, 1))

    assert then["title"] == story.original_title
    assert then["tags"] == ["旧"]
    assert then["status"] == "available"
    assert then["as_of"]["version"] == 1
    assert at(then["as_of"]["at"]) == at(then["published_at"]) == at(then["updated_at"])
    assert story.before_publish < at(then["as_of"]["at"]) < story.after_publish
    # the current shape plus as_of
    assert set(then) == set(now) | {"as_of"}
    assert "as_of" not in now
    assert now["title"] == story.original_title + " 修订版"
    assert (
        then["owner"]
        == now["owner"]
        == {
            "id": story.owner.id,
            "nickname": story.owner.nickname,
            "avatar_url": "",
        }
    )


def test_book_versions_follow_its_events(story: Story) -> None:
    # Published, DetailsRevised, RequestReceived, Lent, Returned
    seen = [ok(book_as_of(story.owner.http, story.book_id, v)) for v in (1, 2, 3, 4, 5)]

    assert [b["as_of"]["version"] for b in seen] == [1, 2, 3, 4, 5]
    assert [b["status"] for b in seen] == [
        "available",
        "available",
        "available",
        "on_loan",
        "available",
    ]
    assert [b["title"] for b in seen] == [story.original_title] + [
        story.original_title + " 修订版"
    ] * 4
    assert seen[3]["borrower"]["id"] == story.borrower.id
    assert seen[3]["loan_id"] == story.loan_id
    assert seen[4]["borrower"] is None and seen[4]["loan_id"] is None
    times = [at(b["as_of"]["at"]) for b in seen]
    assert times == sorted(times)


def test_book_as_of_a_time_while_lent_is_on_loan(story: Story, anon: httpx.Client) -> None:
    when = story.after_approve.isoformat()
    for_owner = ok(book_as_of(story.owner.http, story.book_id, when))
    for_borrower = ok(book_as_of(story.borrower.http, story.book_id, when))
    for_anyone = ok(book_as_of(anon, story.book_id, when))

    assert for_owner["status"] == for_borrower["status"] == for_anyone["status"] == "on_loan"
    assert for_owner["as_of"]["version"] == 4
    assert at(for_owner["as_of"]["at"]) <= story.after_approve
    # the borrower and the loan: the owner's eyes only, as now
    assert for_owner["borrower"] == {
        "id": story.borrower.id,
        "nickname": story.borrower.nickname,
        "avatar_url": "",
    }
    assert for_owner["loan_id"] == story.loan_id
    for other in (for_borrower, for_anyone):
        assert other["borrower"] is None and other["loan_id"] is None
    # now it is back
    assert ok(anon.get(f"/v1/books/{story.book_id}"))["status"] == "available"


def test_book_as_of_other_times(story: Story, anon: httpx.Client) -> None:
    assert (
        ok(book_as_of(anon, story.book_id, story.after_publish.isoformat()))["as_of"]["version"]
        == 1
    )
    request_time = ok(book_as_of(anon, story.book_id, story.after_request.isoformat()))
    assert request_time["as_of"]["version"] == 3  # the book noted the request
    assert request_time["status"] == "available"
    # another offset, the same instant; and the "Z" spelling
    beijing = story.after_approve.astimezone(timezone_plus8())
    assert ok(book_as_of(anon, story.book_id, beijing.isoformat()))["as_of"]["version"] == 4
    zulu = story.after_confirm.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert ok(book_as_of(anon, story.book_id, zulu))["as_of"]["version"] == 5
    # a version past the current one is the current state
    latest = ok(book_as_of(anon, story.book_id, 999))
    assert latest["as_of"]["version"] == 5
    assert latest["status"] == "available"


def timezone_plus8() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=8))


def test_book_before_it_existed_is_not_yet_existing(story: Story, anon: httpx.Client) -> None:
    response = book_as_of(anon, story.book_id, story.before_publish.isoformat())

    body = assert_problem(response, 404, "not_yet_existing")
    assert story.book_id in body["detail"]


def test_book_as_of_unknown_ids(story: Story, anon: httpx.Client) -> None:
    assert_problem(book_as_of(anon, str(uuid.uuid4()), 1), 404, "book_not_found")
    # a loan's id is not a book's
    assert_problem(book_as_of(anon, story.loan_id, 1), 404, "book_not_found")
    assert_problem(
        book_as_of(anon, str(uuid.uuid4()), story.after_confirm.isoformat()), 404, "book_not_found"
    )


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "-1",
        "+2",
        "1.5",
        "abc",
        "",
        "2025-05-04T08:30:00",  # no timezone
        "2025-05-04",  # a date, no timezone
        "2025-13-45T00:00:00Z",
        "一",
        "１",  # a full-width digit
    ],
)
def test_invalid_as_of_is_422(story: Story, anon: httpx.Client, value: str) -> None:
    assert_problem(book_as_of(anon, story.book_id, value), 422, "invalid_as_of")
    assert_problem(loan_as_of(story.owner.http, story.loan_id, value), 422, "invalid_as_of")


def test_too_long_as_of_is_refused(story: Story, anon: httpx.Client) -> None:
    response = book_as_of(anon, story.book_id, "1" * 200)
    assert response.status_code == 422, response.text


def test_without_as_of_nothing_changes(story: Story, anon: httpx.Client) -> None:
    book = ok(anon.get(f"/v1/books/{story.book_id}"))
    loan = ok(story.owner.http.get(f"/v1/loans/{story.loan_id}"))

    assert "as_of" not in book and "as_of" not in loan
    assert loan["status"] == "returned"


# -- loans --------------------------------------------------------------------------------------


def test_loan_as_of_times(story: Story) -> None:
    requested = ok(loan_as_of(story.borrower.http, story.loan_id, story.after_request.isoformat()))
    approved = ok(loan_as_of(story.borrower.http, story.loan_id, story.after_approve.isoformat()))
    now = ok(story.borrower.http.get(f"/v1/loans/{story.loan_id}"))

    assert requested["status"] == "requested"
    assert requested["as_of"]["version"] == 1
    assert requested["approved_at"] is None and requested["returned_at"] is None
    assert approved["status"] == "approved"
    assert approved["as_of"]["version"] == 2
    assert approved["approved_at"] == now["approved_at"]
    assert approved["return_started_at"] is None
    assert set(approved) == set(now) | {"as_of"}
    assert approved["requested_at"] == now["requested_at"]
    assert approved["borrower"] == now["borrower"] and approved["lender"] == now["lender"]
    # the book as it was then: revised before the request
    assert approved["book"] == now["book"]
    assert approved["book"]["title"] == story.original_title + " 修订版"


def test_loan_as_of_versions(story: Story) -> None:
    statuses = [
        ok(loan_as_of(story.owner.http, story.loan_id, v))["status"] for v in (1, 2, 3, 4, 5)
    ]
    assert statuses == ["requested", "approved", "returning", "returned", "returned"]
    last = ok(loan_as_of(story.owner.http, story.loan_id, 4))
    now = ok(story.owner.http.get(f"/v1/loans/{story.loan_id}"))
    assert {k: v for k, v in last.items() if k != "as_of"} == now


def test_loan_contact_never_shown_once_the_loan_has_ended(story: Story) -> None:
    # the story's loan was returned: its contact is not shown even as it was when open
    lender_view = ok(loan_as_of(story.owner.http, story.loan_id, 1))
    borrower_view = ok(loan_as_of(story.borrower.http, story.loan_id, 1))

    assert lender_view["status"] == "requested"
    assert lender_view["contact"] is None
    assert "13800000001" not in str(lender_view)
    assert borrower_view["contact"] is None
    assert "13800000001" not in str(borrower_view)
    assert lender_view["note"] == borrower_view["note"] == "想读"


def test_loan_only_for_its_parties(story: Story, anon: httpx.Client) -> None:
    assert_problem(loan_as_of(story.stranger.http, story.loan_id, 1), 403, "not_a_party")
    # the stranger learns nothing about when it existed either
    assert_problem(
        loan_as_of(story.stranger.http, story.loan_id, story.before_publish.isoformat()),
        403,
        "not_a_party",
    )
    assert_problem(loan_as_of(anon, story.loan_id, 1), 401, "missing_token")


def test_loan_before_it_existed_and_unknown(story: Story) -> None:
    assert_problem(
        loan_as_of(story.borrower.http, story.loan_id, story.after_publish.isoformat()),
        404,
        "not_yet_existing",
    )
    assert_problem(loan_as_of(story.owner.http, str(uuid.uuid4()), 1), 404, "loan_not_found")
    # a book's id is not a loan's
    assert_problem(loan_as_of(story.owner.http, story.book_id, 1), 404, "loan_not_found")


def test_declined_loan_as_of(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    declined = loan_action(owner, loan["id"], "decline", json={"reason": "在读"})
    assert declined.status_code == 200, declined.text

    then = ok(loan_as_of(borrower.http, loan["id"], 2))
    before = ok(loan_as_of(borrower.http, loan["id"], 1))

    assert then["status"] == "declined" and then["decline_reason"] == "在读"
    assert then["declined_at"] == declined.json()["declined_at"]
    assert before["decline_reason"] is None and before["declined_at"] is None
