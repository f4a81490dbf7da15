"""E2E over real HTTP: bad input is refused with a clear problem, never a 500, and changes
nothing: unknown fields, wrong types, oversize strings, malformed JSON, bodies over 64 KiB,
NUL characters, unknown and non-UUID ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import OPERATOR, LiveServer
from tests.e2e.test_api_auth import Actor, assert_problem, checked_client, isbn13

JSON = {"content-type": "application/json"}


@dataclass
class World:
    owner: Actor
    borrower: Actor
    anon: httpx.Client
    book: dict[str, Any]
    loan: dict[str, Any]

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a refused request must leave as it was."""
        o, b = self.owner.http, self.borrower.http
        return (
            o.get("/v1/me").json(),
            b.get("/v1/me").json(),
            o.get(f"/v1/books/{self.book['id']}").json(),
            o.get(f"/v1/loans/{self.loan['id']}").json(),
            o.get("/v1/me/books").json(),
            b.get("/v1/me/books").json(),
            o.get("/v1/me/loans").json(),
            b.get("/v1/me/loans").json(),
            self.anon.get("/v1/books", params={"owner_id": self.owner.id}).json(),
        )


def _actor(live_server: LiveServer) -> Actor:
    name = f"bad{uuid.uuid4().hex[:10]}"
    http = checked_client(live_server)
    body = http.post("/v1/auth/login", json={"code": f"dev:{name}"}).json()
    http.headers["Authorization"] = f"Bearer {body['token']}"
    return Actor(name, body["token"], body["reader"]["id"], body["reader"]["nickname"], http)


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> Iterator[World]:
    """An owner with a book, a borrower with a request for it. Shared by the refusal cases
    of this module: each one checks that it changed nothing, against a snapshot taken just
    before it (so one failure does not cascade)."""
    owner, borrower = _actor(live_server), _actor(live_server)
    book = owner.http.post(
        "/v1/books", json={"isbn": isbn13(), "title": "坏输入", "author": "测试", "tags": ["x"]}
    ).json()
    loan = borrower.http.post(
        f"/v1/books/{book['id']}/loans", json={"note": "n", "contact": {"phone": "1"}}
    ).json()
    with checked_client(live_server) as anon:
        yield World(owner, borrower, anon, book, loan)
    owner.http.close()
    borrower.http.close()


# (who, method, path, valid body) of every endpoint that takes a JSON body
BODY_ENDPOINTS = {
    "publish": ("owner", "POST", "/v1/books", {"isbn": "9787536692930", "title": "t"}),
    "revise": ("owner", "PATCH", "/v1/books/{book}", {"title": "t"}),
    "profile": ("owner", "PATCH", "/v1/me", {"nickname": "n"}),
    "request": ("borrower", "POST", "/v1/books/{book}/loans", {"note": "n"}),
    "decline": ("owner", "POST", "/v1/loans/{loan}/decline", {"reason": "r"}),
}

S = "x"
# endpoint → bodies that must be a 422 validation_failed
INVALID_BODIES: dict[str, list[Any]] = {
    "publish": [
        {"isbn": "9787536692930", "title": "t", "bogus": 1},
        {"isbn": "9787536692930", "title": "t", "owner_id": str(uuid.uuid4())},
        {"isbn": "9787536692930", "title": "t", "status": "on_loan"},
        {"isbn": 9787536692930, "title": "t"},
        {"isbn": None, "title": "t"},
        {"title": "t"},
        {"isbn": "9787536692930", "title": 3},
        {"isbn": "9787536692930", "title": ["t"]},
        {"isbn": "9787536692930", "title": "t", "tags": "科幻"},
        {"isbn": "9787536692930", "title": "t", "tags": [1]},
        {"isbn": "9787536692930", "title": S * 301},
        {"isbn": "9787536692930", "title": "t", "author": S * 301},
        {"isbn": "9787536692930", "title": "t", "publisher": S * 301},
        {"isbn": "9787536692930", "title": "t", "tags": [f"t{i}" for i in range(21)]},
        {"isbn": "9787536692930", "title": "t", "tags": ["t" * 33]},
        {"isbn": "9787536692930", "title": "t", "tags": [""]},
        {"isbn": "9787536692930", "title": "t", "summary": S * 5001},
        {"isbn": "9787536692930", "title": "t", "cover_url": S * 1025},
        {"isbn": "9" * 33, "title": "t"},
        {"isbn": "", "title": "t"},
        {"isbn": "9787536692930", "title": "a\u0000b"},
        {"isbn": "9787536692930", "title": "t", "author": "\u0000"},
        {"isbn": "9787536692930", "title": "t", "tags": ["ok", "x\u0000"]},
        {"isbn": "9787536692930", "title": "t", "summary": "s\u0000"},
        [],
        "9787536692930",
        None,
        42,
    ],
    "revise": [
        {"title": "t", "bogus": 1},
        {"owner_id": str(uuid.uuid4())},
        {"status": "available"},
        {"isbn": "9787536692930"},
        {"title": ""},
        {"title": S * 301},
        {"author": S * 301},
        {"tags": [f"t{i}" for i in range(21)]},
        {"tags": ["t" * 33]},
        {"summary": S * 5001},
        {"title": 1},
        {"title": "a\u0000"},
        {"tags": ["\u0000"]},
        [],
        None,
    ],
    "profile": [
        {"nickname": "n", "bogus": 1},
        {"id": str(uuid.uuid4())},
        {"nickname": ""},
        {"nickname": S * 65},
        {"avatar_url": S * 1025},
        {"nickname": 1},
        {"nickname": "\u0000"},
        {"avatar_url": "https://x/\u0000"},
        [],
        None,
    ],
    "request": [
        {"note": "n", "bogus": 1},
        {"borrower_id": str(uuid.uuid4())},
        {"note": S * 501},
        {"note": 1},
        {"contact": "13800000000"},
        {"contact": {"email": "a@b.c"}},
        {"contact": {"phone": S * 33}},
        {"contact": {"wechat_id": S * 65}},
        {"contact": {"phone": 13800000000}},
        {"note": "a\u0000b"},
        {"contact": {"phone": "138\u0000"}},
        {"contact": {"wechat_id": "\u0000"}},
        [],
        "note",
    ],
    "decline": [
        {"reason": "r", "bogus": 1},
        {"reason": S * 501},
        {"reason": 1},
        {"reason": "\u0000"},
        [],
        "no",
    ],
}

MALFORMED = [
    b"{",
    b'{"title": "t"',
    b'{"title": }',
    b"{not json}",
    b"{'title': 't'}",
    b'{"title": "t",}',
    b'{"title": "\xff\xfe"}',
    b"\xff",
    b'{"title": "\\ud800"}',
    b'{"title": "\\ud800x"}',
    b"[" * 20000 + b"]" * 20000,
    b'{"a":' * 10000 + b"1" + b"}" * 10000,
    b"nul\x00",
]


def _path(world: World, template: str) -> str:
    return template.format(book=world.book["id"], loan=world.loan["id"])


def _actor_of(world: World, who: str) -> Actor:
    return world.owner if who == "owner" else world.borrower


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
def test_invalid_bodies_are_422_and_change_nothing(world: World, endpoint: str) -> None:
    who, method, template, _ = BODY_ENDPOINTS[endpoint]
    http = _actor_of(world, who).http
    before = world.snapshot()
    for body in INVALID_BODIES[endpoint]:
        response = http.request(method, _path(world, template), json=body)
        assert response.status_code == 422, (body, response.text)
        problem = assert_problem(response, 422, "validation_failed")
        assert problem.get("errors") or problem["detail"]
    assert world.snapshot() == before


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
def test_malformed_json_is_400_and_changes_nothing(world: World, endpoint: str) -> None:
    who, method, template, _ = BODY_ENDPOINTS[endpoint]
    http = _actor_of(world, who).http
    before = world.snapshot()
    for raw in MALFORMED:
        response = http.request(method, _path(world, template), content=raw, headers=JSON)
        assert response.status_code == 400, (raw[:40], response.text)
        assert_problem(response, 400, "malformed_json")
    assert world.snapshot() == before


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
def test_a_body_over_64_kib_is_413_and_changes_nothing(world: World, endpoint: str) -> None:
    who, method, template, valid = BODY_ENDPOINTS[endpoint]
    key = next(iter(valid))
    before = world.snapshot()
    big = {**valid, key: "x" * (65 * 1024)}
    response = _actor_of(world, who).http.request(method, _path(world, template), json=big)
    assert_problem(response, 413, "payload_too_large")
    # not JSON at all, and announced as such
    raw = b"x" * (70 * 1024)
    response = _actor_of(world, who).http.request(
        method, _path(world, template), content=raw, headers=JSON
    )
    assert_problem(response, 413, "payload_too_large")
    assert world.snapshot() == before


def test_a_body_just_under_64_kib_is_judged_on_its_content(world: World) -> None:
    before = world.snapshot()
    body = {"isbn": "9787536692930", "title": "t", "summary": "x" * (60 * 1024)}
    assert_problem(world.owner.http.post("/v1/books", json=body), 422, "validation_failed")
    assert world.snapshot() == before


NON_UUID = [
    "abc",
    "123",
    "00000000-0000-0000-0000",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    "%00",
    "..",
    "死神",
]
PATH_TEMPLATES = [
    ("GET", "/v1/books/{id}"),
    ("PATCH", "/v1/books/{id}"),
    ("DELETE", "/v1/books/{id}"),
    ("POST", "/v1/books/{id}/relist"),
    ("GET", "/v1/books/{id}/history"),
    ("POST", "/v1/books/{id}/loans"),
    ("GET", "/v1/loans/{id}"),
    ("POST", "/v1/loans/{id}/approve"),
    ("POST", "/v1/loans/{id}/decline"),
    ("POST", "/v1/loans/{id}/cancel"),
    ("POST", "/v1/loans/{id}/return"),
    ("POST", "/v1/loans/{id}/confirm-return"),
]


@pytest.mark.parametrize(
    ("method", "template"), PATH_TEMPLATES, ids=[f"{m} {t}" for m, t in PATH_TEMPLATES]
)
def test_non_uuid_ids_in_paths_are_404_or_422(world: World, method: str, template: str) -> None:
    before = world.snapshot()
    for bad in NON_UUID:
        body = {"title": "t"} if method == "PATCH" else None
        response = world.owner.http.request(method, template.format(id=bad), json=body)
        assert response.status_code in (404, 422), (bad, response.status_code, response.text)
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("method", "template"), PATH_TEMPLATES, ids=[f"{m} {t}" for m, t in PATH_TEMPLATES]
)
def test_unknown_ids_are_404(world: World, method: str, template: str) -> None:
    before = world.snapshot()
    body = {"title": "t"} if method == "PATCH" else None
    response = world.owner.http.request(method, template.format(id=uuid.uuid4()), json=body)
    assert_problem(
        response,
        404,
        "loan_not_found"
        if "/loans/" in template and "/books/" not in template
        else "book_not_found",
    )
    assert world.snapshot() == before


@pytest.mark.parametrize(
    "params",
    [
        {"q": "a\u0000b"},
        {"tag": "\u0000"},
        {"cursor": "\u0000"},
        {"isbn": "978\u00007536692930"},
        {"owner_id": "\u0000"},
        {"available": "\u0000"},
        {"limit": "\u0000"},
    ],
)
def test_nul_in_a_query_is_422(world: World, params: dict[str, str]) -> None:
    response = world.anon.get("/v1/books", params=params)
    assert response.status_code == 422, response.text
    assert_problem(
        world.owner.http.get("/v1/me/loans", params={"status": "\u0000"}), 422, "validation_failed"
    )


def test_other_query_oddities_are_not_500(world: World) -> None:
    for query in (
        "q=%ff%fe",
        "tag=%ff",
        "q=" + "%25" * 100,
        "q=%5C",
        "limit=1e3",
        "limit=99999999999999999999999",
        "available=1",
    ):
        response = world.anon.get(f"/v1/books?{query}")
        assert response.status_code in (200, 422), (query, response.text)
    for isbn in ("%ff", "%00", "%20", "-", "9" * 200):
        assert_problem(world.anon.get(f"/v1/isbn/{isbn}"), 422, "invalid_isbn")


def test_the_read_side_survives_every_bad_input(live_server: LiveServer, world: World) -> None:
    """After all of the above, commands are still read-your-writes (the shelf projection did
    not stop on a poison event) and the readiness check is green."""
    owner = _actor(live_server)
    try:
        response = owner.http.post("/v1/books", json={"isbn": isbn13(), "title": "still alive"})
        assert response.status_code == 201, response.text
        assert owner.http.get("/v1/me/books").json()["items"][0]["title"] == "still alive"
        with live_server.client() as plain:  # /readyz may be a 503 for reasons of its own
            ready = plain.get("/readyz", headers=OPERATOR).json()
        shelf = ready.get("checks", {}).get("projections", {}).get("shelf", {})
        assert shelf.get("ok", True), ready
    finally:
        owner.http.close()
