"""E2E over real HTTP: ``/v1/auth`` and ``/v1/me``, and 401 on every protected endpoint.

The top of this module also holds the helpers the other ``test_api_*`` modules import:
``checked_client`` wraps every response in checks that hold for the whole API (never a 5xx,
never an openId, problem+json for every error), ``actors`` makes fresh logged-in readers.
"""

from __future__ import annotations

import contextlib
import random
import re
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from api.adapters.sessions import hash_token
from api.adapters.wechat import DevLoginProvider
from tests.e2e.conftest import LiveServer

# -- helpers shared by the test_api_* modules ------------------------------------------------------

PROBLEM_JSON = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
# DevLoginProvider.open_id_for: "dev-" + 28 hex digits
DEV_OPEN_ID = re.compile(r"dev-[0-9a-f]{28}")
SECRET_KEYS = {"openid", "open_id", "unionid", "union_id", "session_key"}
POSITION_HEADER = "Liudong-Position"


def json_keys(value: Any) -> Iterator[str]:
    """Every object key anywhere in a decoded JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from json_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_keys(item)


def check_response(response: httpx.Response) -> None:
    """Checks every response of every test makes: no 5xx, no openId, problem+json errors."""
    response.read()
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code < 500, f"{where} → {response.status_code}: {response.text[:500]}"
    text = response.content.decode("utf-8", errors="replace")
    assert not DEV_OPEN_ID.search(text), f"{where} leaked an openId: {text[:500]}"
    content_type = response.headers.get("content-type", "")
    body: Any = None
    if "json" in content_type and response.content:
        body = response.json()
        leaked = {k for k in json_keys(body) if k.lower().replace("-", "_") in SECRET_KEYS}
        assert not leaked, f"{where} has keys {leaked}: {text[:500]}"
    if response.status_code >= 400:
        assert content_type.startswith(PROBLEM_JSON), f"{where}: {content_type} {text[:300]}"
        assert isinstance(body, dict) and body.keys() >= PROBLEM_KEYS, f"{where}: {text[:300]}"
        assert body["status"] == response.status_code
        assert body["type"].endswith("/" + body["code"]), body
        assert re.fullmatch(r"[a-z][a-z0-9_]*", body["code"]), body
        assert isinstance(body["title"], str) and body["title"]
        assert isinstance(body["detail"], str) and body["detail"]


# Building an SSL context costs ~70 ms per httpx.Client; the server is plain HTTP anyway.
_SSL = ssl.create_default_context()


def checked_client(live_server: LiveServer, token: str | None = None) -> httpx.Client:
    """Like ``live_server.client(token)``, with ``check_response`` on every response."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=live_server.url,
        headers=headers,
        timeout=30,
        verify=_SSL,
        event_hooks={"response": [check_response]},
    )


def assert_problem(
    response: httpx.Response, status: int, code: str | tuple[str, ...]
) -> dict[str, Any]:
    """``response`` is a problem of ``status`` with ``code`` (one of ``code`` if a tuple)."""
    codes = (code,) if isinstance(code, str) else code
    assert response.status_code == status, (
        f"expected {status} {codes}: {response.status_code} {response.text}"
    )
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] in codes, body
    assert body["type"] == f"https://liudong.dev/problems/{body['code']}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def position_of(response: httpx.Response) -> int:
    """The library log position of a command response (read-your-writes header)."""
    value = response.headers[POSITION_HEADER]
    source, _, position = value.partition(":")
    assert source == "library" and position.isdigit(), value
    return int(position)


@dataclass
class Actor:
    """A logged-in reader with its own checked HTTP client."""

    name: str
    token: str
    id: str
    nickname: str
    http: httpx.Client


@contextlib.contextmanager
def actor_factory(live_server: LiveServer) -> Iterator[Callable[..., Actor]]:
    """A factory of fresh readers: ``make()`` logs a new dev reader in; their clients are
    closed on exit. Each test module wraps it in its own ``actors`` fixture."""
    made: list[Actor] = []

    def make(name: str | None = None) -> Actor:
        name = name or f"t{uuid.uuid4().hex[:12]}"
        http = checked_client(live_server)
        response = http.post("/v1/auth/login", json={"code": f"dev:{name}"})
        assert response.status_code == 200, response.text
        token, reader = response.json()["token"], response.json()["reader"]
        http.headers["Authorization"] = f"Bearer {token}"
        actor = Actor(name, token, reader["id"], reader["nickname"], http)
        made.append(actor)
        return actor

    try:
        yield make
    finally:
        for actor in made:
            actor.http.close()


# fixtures `actors` and `anon` live in tests/e2e/conftest.py


def isbn13(body: str | None = None) -> str:
    """A valid ISBN-13: ``978`` + 9 digits (random unless given) + check digit."""
    digits = "978" + (body if body is not None else "".join(random.choices("0123456789", k=9)))
    assert len(digits) == 12
    check = (10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10) % 10
    return digits + str(check)


def isbn10_of(isbn: str) -> str:
    core = isbn[3:12]
    check = (11 - sum((10 - i) * int(d) for i, d in enumerate(core)) % 11) % 11
    return core + ("X" if check == 10 else str(check))


def publish(actor: Actor, **fields: Any) -> dict[str, Any]:
    body = {"isbn": isbn13(), "title": f"书 {uuid.uuid4().hex[:8]}", **fields}
    response = actor.http.post("/v1/books", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def request_loan(actor: Actor, book_id: str, **body: Any) -> dict[str, Any]:
    response = actor.http.post(f"/v1/books/{book_id}/loans", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def loan_action(actor: Actor, loan_id: str, action: str, **kwargs: Any) -> httpx.Response:
    return actor.http.post(f"/v1/loans/{loan_id}/{action}", **kwargs)


# -- login -----------------------------------------------------------------------------------------


def test_login_returns_an_opaque_token_and_the_reader_never_an_open_id(
    live_server: LiveServer, anon: httpx.Client
) -> None:
    name = f"login{uuid.uuid4().hex[:8]}"
    response = anon.post("/v1/auth/login", json={"code": f"dev:{name}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token", "expires_at", "reader"}
    assert set(body["reader"]) == {"id", "nickname", "avatar_url"}
    assert body["reader"]["nickname"] == name
    uuid.UUID(body["reader"]["id"])
    assert re.fullmatch(r"ld_[A-Za-z0-9_\-]{43}", body["token"])
    assert datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")) > datetime.now(UTC)
    open_id = DevLoginProvider.open_id_for(name)
    assert open_id not in response.text
    assert open_id not in body["token"]

    # the same WeChat user again: the same reader, a new token; both work
    again = anon.post("/v1/auth/login", json={"code": f"dev:{name}"})
    assert again.status_code == 200
    assert again.json()["reader"]["id"] == body["reader"]["id"]
    assert again.json()["token"] != body["token"]
    for token in (body["token"], again.json()["token"]):
        with checked_client(live_server, token) as http:
            me = http.get("/v1/me")
            assert me.status_code == 200
            assert me.json()["id"] == body["reader"]["id"]
            assert open_id not in me.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"code": ""}, 422, "validation_failed"),
        ({"code": "x" * 129}, 422, "validation_failed"),
        ({}, 422, "validation_failed"),
        ({"code": 42}, 422, "validation_failed"),
        ({"code": "dev:a", "openid": "x"}, 422, "validation_failed"),
        ({"code": "dev:"}, 401, "invalid_code"),
        ({"code": "dev:not a name"}, 401, "invalid_code"),
        ({"code": "dev:" + "a" * 65}, 401, "invalid_code"),
    ],
)
def test_login_refusals(anon: httpx.Client, body: dict[str, Any], status: int, code: str) -> None:
    response = anon.post("/v1/auth/login", json=body)
    assert_problem(response, status, code)
    assert "token" not in response.json()


def test_login_with_a_wechat_code_when_wechat_is_not_configured_is_refused(
    anon: httpx.Client,
) -> None:
    response = anon.post("/v1/auth/login", json={"code": "0a1b2c3d4e5f"})
    assert 400 <= response.status_code < 500
    assert "token" not in response.json()


def test_malformed_login_body(anon: httpx.Client) -> None:
    response = anon.post(
        "/v1/auth/login", content=b'{"code": "dev:x"', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed_json")


# -- logout ----------------------------------------------------------------------------------------


def test_logout_revokes_only_this_token(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    first = actors()
    token2, _ = live_server.login(first.name)
    response = first.http.post("/v1/auth/logout")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(first.http.get("/v1/me"), 401, "token_revoked")
    assert_problem(first.http.post("/v1/auth/logout"), 401, "token_revoked")
    with checked_client(live_server, token2) as other:
        assert other.get("/v1/me").status_code == 200
    # logging in again gives a working token for the same reader
    token3, reader = live_server.login(first.name)
    assert reader["id"] == first.id
    with checked_client(live_server, token3) as again:
        assert again.get("/v1/me").json()["id"] == first.id


def test_expired_token_is_refused(live_server: LiveServer, actors: Callable[..., Actor]) -> None:
    reader = actors()
    with live_server.container.pool.connection() as conn:
        conn.execute(
            "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
            (hash_token(reader.token),),
        )
    assert_problem(reader.http.get("/v1/me"), 401, "token_expired")


# -- 401 on every protected endpoint ---------------------------------------------------------------

SOME_ID = "7d1f4a6e-8f3c-4b0a-9c55-2f6f1f9c0d11"

PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/auth/logout", None),
    ("GET", "/v1/me", None),
    ("PATCH", "/v1/me", {"nickname": "x"}),
    ("GET", "/v1/me/books", None),
    ("GET", "/v1/me/loans", None),
    ("GET", "/v1/me/loans?role=lender&status=requested", None),
    ("POST", "/v1/books", {"isbn": "9787536692930", "title": "三体"}),
    ("PATCH", "/v1/books/{id}", {"title": "x"}),
    ("DELETE", "/v1/books/{id}", None),
    ("POST", "/v1/books/{id}/relist", None),
    ("GET", "/v1/books/{id}/history", None),
    ("POST", "/v1/books/{id}/loans", {"note": "hi"}),
    ("GET", "/v1/loans/{id}", None),
    ("POST", "/v1/loans/{id}/approve", None),
    ("POST", "/v1/loans/{id}/decline", {"reason": "no"}),
    ("POST", "/v1/loans/{id}/cancel", None),
    ("POST", "/v1/loans/{id}/return", None),
    ("POST", "/v1/loans/{id}/confirm-return", None),
]


@pytest.fixture(scope="module")
def shared_anon(live_server: LiveServer) -> Iterator[httpx.Client]:
    with checked_client(live_server) as client:
        yield client


@pytest.fixture(scope="module")
def revoked_token(live_server: LiveServer) -> str:
    token, _ = live_server.login()
    with checked_client(live_server, token) as http:
        assert http.post("/v1/auth/logout").status_code == 204
    return token


@pytest.fixture(scope="module")
def a_real_book_and_loan(live_server: LiveServer) -> dict[str, str]:
    """Real ids, so a 401 cannot be a 404 in disguise."""
    owner_token, _ = live_server.login()
    borrower_token, _ = live_server.login()
    with (
        checked_client(live_server, owner_token) as o,
        checked_client(live_server, borrower_token) as b,
    ):
        book = o.post("/v1/books", json={"isbn": isbn13(), "title": "401"}).json()
        loan = b.post(f"/v1/books/{book['id']}/loans", json={}).json()
    return {"book": book["id"], "loan": loan["id"]}


@pytest.mark.parametrize(
    "credential", ["none", "garbage", "wrong_scheme", "empty_bearer", "revoked"]
)
@pytest.mark.parametrize(
    ("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED]
)
def test_protected_endpoints_need_a_valid_token(
    shared_anon: httpx.Client,
    revoked_token: str,
    a_real_book_and_loan: dict[str, str],
    credential: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    headers = {
        "none": {},
        "garbage": {"Authorization": "Bearer garbage-token"},
        "wrong_scheme": {"Authorization": f"Basic {revoked_token}"},
        "empty_bearer": {"Authorization": "Bearer"},
        "revoked": {"Authorization": f"Bearer {revoked_token}"},
    }[credential]
    real_id = a_real_book_and_loan["loan" if "/loans/" in path else "book"]
    expected = {
        "none": ("missing_token",),
        "garbage": ("invalid_token", "malformed_token"),
        "wrong_scheme": ("missing_token",),
        "empty_bearer": ("missing_token",),
        "revoked": ("token_revoked",),
    }[credential]
    for target in {path.format(id=real_id), path.format(id=SOME_ID)}:
        response = shared_anon.request(method, target, json=body, headers=headers)
        assert_problem(response, 401, expected)
        assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_refused_unauthenticated_writes_change_nothing(
    live_server: LiveServer, a_real_book_and_loan: dict[str, str], anon: httpx.Client
) -> None:
    book_id, loan_id = a_real_book_and_loan["book"], a_real_book_and_loan["loan"]
    before = anon.get(f"/v1/books/{book_id}").json()
    anon.patch(f"/v1/books/{book_id}", json={"title": "hijacked"})
    anon.delete(f"/v1/books/{book_id}")
    anon.post(f"/v1/loans/{loan_id}/approve", headers={"Authorization": "Bearer garbage"})
    after = anon.get(f"/v1/books/{book_id}").json()
    assert after == before
    assert after["status"] == "available"


def test_anonymous_reads_are_allowed(
    anon: httpx.Client, a_real_book_and_loan: dict[str, str]
) -> None:
    book_id = a_real_book_and_loan["book"]
    assert anon.get("/v1/books").status_code == 200
    detail = anon.get(f"/v1/books/{book_id}")
    assert detail.status_code == 200
    assert detail.json()["borrower"] is None and detail.json()["loan_id"] is None
    assert_problem(anon.get(f"/v1/isbn/{isbn13()}"), 404, "isbn_not_found")


def test_garbage_token_on_an_anonymous_read_is_still_401(anon: httpx.Client) -> None:
    """A bad credential is never silently treated as anonymous."""
    assert_problem(
        anon.get("/v1/books", headers={"Authorization": "Bearer nope"}),
        401,
        ("invalid_token", "malformed_token"),
    )


# -- /v1/me ----------------------------------------------------------------------------------------


def test_me_get_and_patch(actors: Callable[..., Actor], anon: httpx.Client) -> None:
    reader = actors()
    me = reader.http.get("/v1/me")
    assert me.status_code == 200
    assert me.json() == {"id": reader.id, "nickname": reader.name, "avatar_url": ""}

    book = publish(reader)

    response = reader.http.patch("/v1/me", json={"nickname": "小明"})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": reader.id, "nickname": "小明", "avatar_url": ""}
    position_of(response)
    response = reader.http.patch("/v1/me", json={"avatar_url": "https://img.example/a.png"})
    assert response.json() == {
        "id": reader.id,
        "nickname": "小明",
        "avatar_url": "https://img.example/a.png",
    }
    assert reader.http.get("/v1/me").json()["avatar_url"] == "https://img.example/a.png"

    # an empty patch changes nothing
    response = reader.http.patch("/v1/me", json={})
    assert response.status_code == 200
    assert response.json()["nickname"] == "小明"

    # the profile shows wherever the reader is shown, right away
    owner = anon.get(f"/v1/books/{book['id']}").json()["owner"]
    assert owner == {"id": reader.id, "nickname": "小明", "avatar_url": "https://img.example/a.png"}


@pytest.mark.parametrize(
    "body",
    [
        {"nickname": ""},
        {"nickname": "n" * 65},
        {"nickname": 7},
        {"nickname": None, "avatar_url": "x" * 1025},
        {"nickname": "ok", "openid": "dev-x"},
        {"nickname": "a\u0000b"},
        [],
    ],
)
def test_me_patch_refusals_change_nothing(actors: Callable[..., Actor], body: Any) -> None:
    reader = actors()
    before = reader.http.get("/v1/me").json()
    assert_problem(reader.http.patch("/v1/me", json=body), 422, "validation_failed")
    assert reader.http.get("/v1/me").json() == before


def test_login_keeps_a_changed_nickname(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    reader = actors()
    assert reader.http.patch("/v1/me", json={"nickname": "改过的"}).status_code == 200
    _, again = live_server.login(reader.name)
    assert again == {"id": reader.id, "nickname": "改过的", "avatar_url": ""}
