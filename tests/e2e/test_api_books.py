"""E2E over real HTTP: ``/v1/books`` (publish, search, detail, revise, withdraw, relist,
history), ``/v1/isbn``, ``/v1/me/books``, Idempotency-Key and read-your-writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api.adapters.catalog import CatalogEntry
from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import (
    Actor,
    assert_problem,
    isbn10_of,
    isbn13,
    loan_action,
    position_of,
    publish,
    request_loan,
)

# fixtures `actors` and `anon` live in tests/e2e/conftest.py


Actors = Callable[..., Actor]


def uid() -> str:
    return uuid.uuid4().hex[:10]


def search(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """All items of a search, walking every cursor page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {k: v for k, v in params.items() if v is not None}
        if cursor:
            query["cursor"] = cursor
        response = http.get("/v1/books", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


# -- publish ---------------------------------------------------------------------------------------


def test_publish_returns_the_book_and_reads_see_it_at_once(
    actors: Actors, anon: httpx.Client
) -> None:
    owner = actors()
    isbn = isbn13()
    body = {
        "isbn": isbn[:3] + "-" + isbn[3:4] + "-" + isbn[4:8] + "-" + isbn[8:12] + "-" + isbn[12],
        "title": "三体Ⅲ：死神永生",
        "author": "刘慈欣",
        "publisher": "重庆出版社",
        "tags": ["科幻", "小说"],
        "cover_url": "https://img.example/3.jpg",
        "summary": "宇宙很大，生活更大。",
    }
    response = owner.http.post("/v1/books", json=body)
    assert response.status_code == 201, response.text
    position_of(response)
    book = response.json()
    uuid.UUID(book["id"])
    assert book["isbn"] == isbn  # canonical ISBN-13, no hyphens
    for key in ("title", "author", "publisher", "tags", "cover_url", "summary"):
        assert book[key] == body[key]
    assert book["status"] == "available"
    assert book["owner"] == {"id": owner.id, "nickname": owner.name, "avatar_url": ""}
    assert book["borrower"] is None and book["loan_id"] is None
    assert book["published_at"] and book["updated_at"]

    # read-your-writes: every read right after the command sees the book
    assert anon.get(f"/v1/books/{book['id']}").json() == book
    assert book["id"] in ids(anon.get("/v1/books", params={"q": "死神"}).json()["items"])
    assert ids(owner.http.get("/v1/me/books").json()["items"]) == [book["id"]]
    assert ids(search(anon, owner_id=owner.id)) == [book["id"]]


def test_publish_with_an_isbn10(actors: Actors) -> None:
    owner = actors()
    isbn = isbn13()
    response = owner.http.post("/v1/books", json={"isbn": isbn10_of(isbn), "title": "ten"})
    assert response.status_code == 201, response.text
    assert response.json()["isbn"] == isbn


@pytest.mark.parametrize(
    "raw",
    ["9787536692931", "978753669293", "12345", "97875366929300", "abcdefghij", "979-0-00000-000-0"],
)
def test_publish_invalid_isbn_is_422_and_creates_nothing(actors: Actors, raw: str) -> None:
    owner = actors()
    response = owner.http.post("/v1/books", json={"isbn": raw, "title": "bad"})
    assert_problem(response, 422, ("invalid_isbn", "validation_failed"))
    assert owner.http.get("/v1/me/books").json()["items"] == []


def test_publish_unknown_isbn_without_title_is_title_required(actors: Actors) -> None:
    owner = actors()
    for body in (
        {"isbn": isbn13()},
        {"isbn": isbn13(), "title": ""},
        {"isbn": isbn13(), "author": "某人"},
    ):
        assert_problem(owner.http.post("/v1/books", json=body), 422, "title_required")
    assert owner.http.get("/v1/me/books").json()["items"] == []


# -- the catalog -----------------------------------------------------------------------------------


def test_isbn_lookup_availability_and_publish_from_the_catalog(
    live_server: LiveServer, actors: Actors, anon: httpx.Client
) -> None:
    isbn = isbn13()
    live_server.container.catalog.upsert_many(
        [
            CatalogEntry(
                isbn=isbn,
                title="球状闪电",
                source="test",
                author="刘慈欣",
                publisher="四川科学技术出版社",
                published_year=2005,
                language="zh",
                tags=("科幻", "刘慈欣"),
                cover_url="https://img.example/ball.jpg",
                summary="一个关于球状闪电的故事。",
            )
        ]
    )
    response = anon.get(f"/v1/isbn/{isbn}")
    assert response.status_code == 200, response.text
    entry = response.json()
    assert entry["isbn"] == isbn and entry["isbn10"] == isbn10_of(isbn)
    assert entry["title"] == "球状闪电" and entry["author"] == "刘慈欣"
    assert entry["tags"] == ["科幻", "刘慈欣"] and entry["published_year"] == 2005
    assert entry["availability"] == {"free": 0, "total": 0}
    # the ISBN-10 and a hyphenated form find the same entry
    assert anon.get(f"/v1/isbn/{isbn10_of(isbn)}").json()["isbn"] == isbn
    assert anon.get(f"/v1/isbn/{isbn[:3]}-{isbn[3:]}").json()["isbn"] == isbn

    owner, other, borrower = actors(), actors(), actors()
    # only the ISBN: title, author, … come from the catalog
    first = owner.http.post("/v1/books", json={"isbn": isbn})
    assert first.status_code == 201, first.text
    book = first.json()
    assert book["title"] == "球状闪电" and book["author"] == "刘慈欣"
    assert book["publisher"] == "四川科学技术出版社" and book["tags"] == ["科幻", "刘慈欣"]
    assert (
        book["cover_url"] == "https://img.example/ball.jpg"
        and book["summary"] == "一个关于球状闪电的故事。"
    )
    # client fields win over the catalog; missing ones still come from it
    second = other.http.post(
        "/v1/books", json={"isbn": isbn, "title": "球状闪电（典藏版）", "tags": []}
    ).json()
    assert (
        second["title"] == "球状闪电（典藏版）"
        and second["tags"] == []
        and second["author"] == "刘慈欣"
    )
    assert anon.get(f"/v1/isbn/{isbn}").json()["availability"] == {"free": 2, "total": 2}

    loan = request_loan(borrower, book["id"])
    assert loan_action(owner, loan["id"], "approve").status_code == 200
    assert anon.get(f"/v1/isbn/{isbn}").json()["availability"] == {"free": 1, "total": 2}
    assert other.http.delete(f"/v1/books/{second['id']}").status_code == 200
    assert anon.get(f"/v1/isbn/{isbn}").json()["availability"] == {"free": 0, "total": 1}


def test_catalog_values_beyond_the_api_limits_do_not_block_a_publish(
    live_server: LiveServer, actors: Actors
) -> None:
    """An imported catalog may hold a longer title or tags a client could not send."""
    isbn = isbn13()
    long_tag = "标" * 40
    live_server.container.catalog.upsert_many(
        [
            CatalogEntry(
                isbn=isbn,
                title="长" * 400,
                source="test",
                tags=(long_tag, "ok", *[f"t{i}" for i in range(30)]),
            )
        ]
    )
    owner = actors()
    response = owner.http.post("/v1/books", json={"isbn": isbn})
    assert response.status_code == 201, response.text
    book = response.json()
    assert book["title"] == "长" * 300
    assert long_tag not in book["tags"] and book["tags"][0] == "ok" and len(book["tags"]) == 20


def test_isbn_lookup_refusals(anon: httpx.Client) -> None:
    assert_problem(anon.get(f"/v1/isbn/{isbn13()}"), 404, "isbn_not_found")
    for raw in ("9787536692931", "123", "abcdefghijklm", "x" * 40):
        assert_problem(anon.get(f"/v1/isbn/{raw}"), 422, "invalid_isbn")


# -- search ----------------------------------------------------------------------------------------


def test_search_by_title_author_isbn_tag_owner_and_availability(
    actors: Actors, anon: httpx.Client
) -> None:
    owner, borrower = actors(), actors()
    mark = uid()
    author = f"刘慈欣{mark}"
    tag = f"t{mark}"
    isbn = isbn13()
    trilogy = publish(owner, isbn=isbn, title="三体Ⅲ：死神永生", author=author, tags=["科幻", tag])
    ball = publish(owner, title="球状闪电", author=author, tags=[tag])
    other = publish(owner, title=f"Other {mark}", author="Someone Else", tags=["misc"])
    gone = publish(owner, title=f"Gone {mark}", author=author, tags=[tag])
    assert owner.http.delete(f"/v1/books/{gone['id']}").json()["status"] == "withdrawn"

    # a Chinese substring of the title
    assert trilogy["id"] in ids(search(anon, q="死神", owner_id=owner.id))
    assert ids(search(anon, q="死神", owner_id=owner.id)) == [trilogy["id"]]
    assert trilogy["id"] in ids(
        anon.get("/v1/books", params={"q": "死神永生", "limit": 100}).json()["items"]
    )
    # author, newest first, withdrawn books excluded
    assert ids(search(anon, q=author)) == [ball["id"], trilogy["id"]]
    assert ids(search(anon, q=author.upper())) == [ball["id"], trilogy["id"]]  # case-insensitive
    # ISBN: a substring in q, or the isbn filter in any form
    assert ids(search(anon, q=isbn[3:11], owner_id=owner.id)) == [trilogy["id"]]
    assert ids(search(anon, isbn=isbn)) == [trilogy["id"]]
    assert ids(search(anon, isbn=isbn10_of(isbn))) == [trilogy["id"]]
    assert_problem(anon.get("/v1/books", params={"isbn": "123"}), 422, "invalid_isbn")
    # tag
    assert ids(search(anon, tag=tag)) == [ball["id"], trilogy["id"]]
    assert ids(search(anon, tag=tag, q="闪电")) == [ball["id"]]
    # owner, including a book not matching the tag
    assert ids(search(anon, owner_id=owner.id)) == [other["id"], ball["id"], trilogy["id"]]
    assert search(anon, owner_id=str(uuid.uuid4())) == []
    # LIKE metacharacters are literal
    assert search(anon, q="%", owner_id=owner.id) == []
    assert search(anon, q="_", owner_id=owner.id) == []

    # availability
    loan = request_loan(borrower, ball["id"])
    assert loan_action(owner, loan["id"], "approve").status_code == 200
    assert ids(search(anon, owner_id=owner.id, available="true")) == [other["id"], trilogy["id"]]
    unavailable = search(anon, owner_id=owner.id, available="false")
    assert ball["id"] in ids(unavailable)
    assert other["id"] not in ids(unavailable) and trilogy["id"] not in ids(unavailable)
    assert all(b["status"] != "available" for b in unavailable)
    # the public sees the status, never the borrower
    (hit,) = [b for b in unavailable if b["id"] == ball["id"]]
    assert hit["status"] == "on_loan"
    assert hit["borrower"] is None and hit["loan_id"] is None


def test_cursor_pages_walk_every_result_once(actors: Actors, anon: httpx.Client) -> None:
    owner = actors()
    published = [publish(owner, title=f"第{i}卷")["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"owner_id": owner.id, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = anon.get("/v1/books", params=params).json()
        assert len(page["items"]) <= 3
        seen += ids(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(published))  # newest first, no duplicate, none missing
    # an exact multiple of the page size ends without an empty page
    page = anon.get("/v1/books", params={"owner_id": owner.id, "limit": 7}).json()
    assert page["next_cursor"] is None and len(page["items"]) == 7
    # /v1/me/books pages the same way
    first = owner.http.get("/v1/me/books", params={"limit": 4}).json()
    rest = owner.http.get(
        "/v1/me/books", params={"limit": 4, "cursor": first["next_cursor"]}
    ).json()
    assert ids(first["items"]) + ids(rest["items"]) == list(reversed(published))
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, "validation_failed"),
        ({"limit": 101}, "validation_failed"),
        ({"limit": -5}, "validation_failed"),
        ({"limit": "ten"}, "validation_failed"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": "czp4eXo"}, "invalid_cursor"),  # "s:xyz"
        ({"cursor": "死神"}, "invalid_cursor"),
        ({"cursor": "c" * 201}, "validation_failed"),
        ({"available": "maybe"}, "validation_failed"),
        ({"owner_id": "not-a-uuid"}, "validation_failed"),
        ({"q": "x" * 101}, "validation_failed"),
        ({"tag": "x" * 33}, "validation_failed"),
    ],
)
def test_search_refusals(anon: httpx.Client, params: dict[str, Any], code: str) -> None:
    assert_problem(anon.get("/v1/books", params=params), 422, code)


def test_me_books_limit_and_cursor_refusals(actors: Actors) -> None:
    owner = actors()
    assert_problem(owner.http.get("/v1/me/books", params={"limit": 0}), 422, "validation_failed")
    assert_problem(owner.http.get("/v1/me/books", params={"limit": 1000}), 422, "validation_failed")
    assert_problem(owner.http.get("/v1/me/books", params={"cursor": "@@@"}), 422, "invalid_cursor")


# -- detail, revise, withdraw, relist --------------------------------------------------------------


def test_detail_and_unknown_ids(actors: Actors, anon: httpx.Client) -> None:
    owner = actors()
    book = publish(owner)
    assert anon.get(f"/v1/books/{book['id']}").json()["id"] == book["id"]
    assert anon.get(f"/v1/books/{book['id'].upper()}").json()["id"] == book["id"]
    assert_problem(anon.get(f"/v1/books/{uuid.uuid4()}"), 404, "book_not_found")
    # a reader id is not a book id
    assert_problem(anon.get(f"/v1/books/{owner.id}"), 404, "book_not_found")


def test_revise_by_the_owner(actors: Actors, anon: httpx.Client) -> None:
    owner = actors()
    book = publish(owner, title="旧书名", tags=["a"])
    response = owner.http.patch(
        f"/v1/books/{book['id']}", json={"title": "新书名", "tags": ["b", "c"], "summary": "新简介"}
    )
    assert response.status_code == 200, response.text
    position_of(response)
    revised = response.json()
    assert (
        revised["title"] == "新书名"
        and revised["tags"] == ["b", "c"]
        and revised["summary"] == "新简介"
    )
    assert revised["author"] == book["author"] and revised["isbn"] == book["isbn"]
    assert anon.get(f"/v1/books/{book['id']}").json() == revised
    assert ids(search(anon, q="新书名", owner_id=owner.id)) == [book["id"]]
    assert search(anon, q="旧书名", owner_id=owner.id) == []
    # an empty patch changes nothing
    assert owner.http.patch(f"/v1/books/{book['id']}", json={}).json() == revised


def test_only_the_owner_revises_withdraws_relists_or_reads_history(
    actors: Actors, anon: httpx.Client
) -> None:
    owner, stranger = actors(), actors()
    book = publish(owner)
    before = anon.get(f"/v1/books/{book['id']}").json()
    assert_problem(
        stranger.http.patch(f"/v1/books/{book['id']}", json={"title": "mine now"}),
        403,
        "not_the_owner",
    )
    assert_problem(stranger.http.delete(f"/v1/books/{book['id']}"), 403, "not_the_owner")
    assert_problem(stranger.http.get(f"/v1/books/{book['id']}/history"), 403, "not_the_owner")
    assert anon.get(f"/v1/books/{book['id']}").json() == before
    assert owner.http.delete(f"/v1/books/{book['id']}").status_code == 200
    withdrawn = anon.get(f"/v1/books/{book['id']}").json()
    assert_problem(stranger.http.post(f"/v1/books/{book['id']}/relist"), 403, "not_the_owner")
    assert anon.get(f"/v1/books/{book['id']}").json() == withdrawn
    assert stranger.http.get("/v1/me/books").json()["items"] == []


def test_withdraw_and_relist(actors: Actors, anon: httpx.Client) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    response = owner.http.delete(f"/v1/books/{book['id']}")
    assert response.status_code == 200, response.text
    position_of(response)
    assert response.json()["status"] == "withdrawn"
    assert anon.get(f"/v1/books/{book['id']}").json()["status"] == "withdrawn"
    # gone from the public shelf, still on the owner's own list
    assert search(anon, owner_id=owner.id) == []
    assert ids(search(anon, owner_id=owner.id, available="true")) == []
    assert [(b["id"], b["status"]) for b in owner.http.get("/v1/me/books").json()["items"]] == [
        (book["id"], "withdrawn")
    ]
    # withdrawing again changes nothing
    assert owner.http.delete(f"/v1/books/{book['id']}").json()["status"] == "withdrawn"
    # a withdrawn book cannot be requested
    assert_problem(
        borrower.http.post(f"/v1/books/{book['id']}/loans", json={}), 409, "book_withdrawn"
    )
    assert borrower.http.get("/v1/me/loans").json()["items"] == []
    # relist
    relisted = owner.http.post(f"/v1/books/{book['id']}/relist")
    assert relisted.status_code == 200 and relisted.json()["status"] == "available"
    assert ids(search(anon, owner_id=owner.id)) == [book["id"]]
    assert_problem(owner.http.post(f"/v1/books/{book['id']}/relist"), 409, "book_not_withdrawn")
    request_loan(borrower, book["id"])


def test_withdraw_while_on_loan_is_409(actors: Actors, anon: httpx.Client) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    assert loan_action(owner, loan["id"], "approve").status_code == 200
    assert_problem(owner.http.delete(f"/v1/books/{book['id']}"), 409, "book_on_loan")
    detail = owner.http.get(f"/v1/books/{book['id']}").json()
    assert detail["status"] == "on_loan" and detail["borrower"]["id"] == borrower.id


def test_unknown_book_ids(actors: Actors) -> None:
    owner = actors()
    missing = uuid.uuid4()
    assert_problem(
        owner.http.patch(f"/v1/books/{missing}", json={"title": "x"}), 404, "book_not_found"
    )
    assert_problem(owner.http.delete(f"/v1/books/{missing}"), 404, "book_not_found")
    assert_problem(owner.http.post(f"/v1/books/{missing}/relist"), 404, "book_not_found")
    assert_problem(owner.http.get(f"/v1/books/{missing}/history"), 404, "book_not_found")
    assert_problem(owner.http.post(f"/v1/books/{missing}/loans", json={}), 404, "book_not_found")
    assert owner.http.get("/v1/me/loans").json()["items"] == []


# -- owner's views: borrower, history --------------------------------------------------------------


def test_borrower_is_shown_to_the_owner_only(actors: Actors, anon: httpx.Client) -> None:
    owner, borrower, stranger = actors(), actors(), actors()
    book = publish(owner)
    loan = request_loan(borrower, book["id"])
    response = loan_action(owner, loan["id"], "approve")
    assert response.status_code == 200
    position_of(response)

    expected = {"id": borrower.id, "nickname": borrower.name, "avatar_url": ""}
    mine = owner.http.get(f"/v1/books/{book['id']}").json()
    assert (
        mine["status"] == "on_loan"
        and mine["borrower"] == expected
        and mine["loan_id"] == loan["id"]
    )
    assert owner.http.get("/v1/me/books").json()["items"][0]["borrower"] == expected
    assert search(owner.http, owner_id=owner.id)[0]["borrower"] == expected
    for http in (anon, stranger.http, borrower.http):
        seen = http.get(f"/v1/books/{book['id']}").json()
        assert seen["status"] == "on_loan"
        assert seen["borrower"] is None and seen["loan_id"] is None
        assert borrower.id not in str(search(http, owner_id=owner.id))

    # back on the shelf: the borrower is gone from the owner's view too
    assert loan_action(borrower, loan["id"], "return").status_code == 200
    assert (
        owner.http.get(f"/v1/books/{book['id']}").json()["borrower"] == expected
    )  # returning: still lent
    assert loan_action(owner, loan["id"], "confirm-return").status_code == 200
    after = owner.http.get(f"/v1/books/{book['id']}").json()
    assert after["status"] == "available" and after["borrower"] is None and after["loan_id"] is None


def test_history_oldest_first_with_event_types(actors: Actors) -> None:
    owner, borrower = actors(), actors()
    book = publish(owner, title="初版")
    assert owner.http.patch(f"/v1/books/{book['id']}", json={"title": "再版"}).status_code == 200
    loan = request_loan(borrower, book["id"])
    assert loan_action(owner, loan["id"], "approve").status_code == 200
    assert loan_action(borrower, loan["id"], "return").status_code == 200
    assert loan_action(owner, loan["id"], "confirm-return").status_code == 200
    assert owner.http.delete(f"/v1/books/{book['id']}").status_code == 200
    assert owner.http.post(f"/v1/books/{book['id']}/relist").status_code == 200

    response = owner.http.get(f"/v1/books/{book['id']}/history")
    assert response.status_code == 200, response.text
    history = response.json()
    assert [e["type"] for e in history] == [
        "Published",
        "DetailsRevised",
        "RequestReceived",
        "Lent",
        "Returned",
        "Withdrawn",
        "Relisted",
    ]
    assert [e["version"] for e in history] == list(range(1, 8))
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    assert history[0]["data"]["title"] == "初版" and history[0]["data"]["owner_id"] == owner.id
    assert history[1]["data"]["changes"] == {"title": "再版"}
    for received_then_lent in history[2:4]:
        assert received_then_lent["data"] == {"borrower_id": borrower.id, "loan_id": loan["id"]}
    assert_problem(borrower.http.get(f"/v1/books/{book['id']}/history"), 403, "not_the_owner")


# -- Idempotency-Key -------------------------------------------------------------------------------


def test_publish_with_an_idempotency_key_acts_once(actors: Actors) -> None:
    owner, other = actors(), actors()
    body = {"isbn": isbn13(), "title": "幂等"}
    key = {"Idempotency-Key": f"k-{uid()}"}
    first = owner.http.post("/v1/books", json=body, headers=key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    second = owner.http.post("/v1/books", json=body, headers=key)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert [b["id"] for b in owner.http.get("/v1/me/books").json()["items"]] == [first.json()["id"]]

    # the same key with another body is refused and acts not
    changed = owner.http.post("/v1/books", json={**body, "title": "别的"}, headers=key)
    assert_problem(changed, 422, "idempotency_key_reused")
    assert len(owner.http.get("/v1/me/books").json()["items"]) == 1
    assert owner.http.get(f"/v1/books/{first.json()['id']}").json()["title"] == "幂等"

    # a key is the reader's own: another reader's same key is another request
    theirs = other.http.post("/v1/books", json=body, headers=key)
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != first.json()["id"]

    # without a key, every POST publishes
    owner.http.post("/v1/books", json=body)
    owner.http.post("/v1/books", json=body)
    assert len(owner.http.get("/v1/me/books").json()["items"]) == 3


def test_an_idempotent_refusal_is_replayed_too(actors: Actors) -> None:
    owner = actors()
    key = {"Idempotency-Key": f"k-{uid()}"}
    body = {"isbn": isbn13()}
    assert_problem(owner.http.post("/v1/books", json=body, headers=key), 422, "title_required")
    replay = owner.http.post("/v1/books", json=body, headers=key)
    assert_problem(replay, 422, "title_required")
    assert replay.headers["idempotent-replayed"] == "true"
    assert owner.http.get("/v1/me/books").json()["items"] == []


def test_idempotency_key_limits(actors: Actors) -> None:
    owner = actors()
    response = owner.http.post(
        "/v1/books", json={"isbn": isbn13(), "title": "k"}, headers={"Idempotency-Key": "k" * 256}
    )
    assert_problem(response, 422, "validation_failed")
    assert owner.http.get("/v1/me/books").json()["items"] == []
