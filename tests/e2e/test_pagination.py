"""One pagination rule over real HTTP: every list takes ``cursor`` and returns
``next_cursor``; passing a ``next_cursor`` back always moves forward and ends on ``null``; a
query parameter an operation does not declare is a 422 ``unknown_parameter`` (a client still
sending the retired ``before=`` learns it at once instead of looping on the first page), and
one given twice, or ``null`` where a value is not text, is a 422 ``validation_failed``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from domain import chat_commands as cc
from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import Actor, assert_problem, checked_client, publish


def walk(http: httpx.Client, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page by page, following ``next_cursor`` until ``null``."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": limit, **params}
    for _ in range(1000):
        response = http.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        assert page["items"], "a page before the end is not empty"
        query = {**query, "cursor": page["next_cursor"]}
    raise AssertionError(f"{path}: next_cursor never ended")


def _conversation(a: Actor, b: Actor, messages: int) -> str:
    opened = a.http.post("/v1/conversations", json={"peer_id": b.id})
    assert opened.status_code in (200, 201), opened.text
    cid = str(opened.json()["id"])
    for i in range(messages):
        sent = a.http.post(
            f"/v1/conversations/{cid}/messages", json={"text": f"m{i}", "client_msg_id": f"p{i}"}
        )
        assert sent.status_code == 201, sent.text
    return cid


def test_message_history_pages_with_cursor(actors: Callable[..., Actor]) -> None:
    a, b = actors(), actors()
    cid = _conversation(a, b, 7)
    seqs = [m["seq"] for m in walk(b.http, f"/v1/conversations/{cid}/messages", 3)]
    assert seqs == [7, 6, 5, 4, 3, 2, 1]
    assert_problem(
        b.http.get(f"/v1/conversations/{cid}/messages", params={"cursor": "nope"}),
        422,
        "invalid_cursor",
    )


def test_the_retired_before_parameter_is_refused_not_ignored(actors: Callable[..., Actor]) -> None:
    a, b = actors(), actors()
    cid = _conversation(a, b, 2)
    response = b.http.get(f"/v1/conversations/{cid}/messages", params={"before": 2})
    body = assert_problem(response, 422, "unknown_parameter")
    assert "before" in body["detail"]
    assert body["errors"] == [{"key": "before", "source": "query", "message": "unknown parameter"}]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/books",
        "/v1/me/books",
        "/v1/me/loans",
        "/v1/conversations",
        "/v1/inbox",
        "/v1/rooms",
        "/v1/me",
        "/v1/books/{book_id}",
    ],
)
def test_unknown_query_parameters_are_422(actors: Callable[..., Actor], path: str) -> None:
    reader = actors()
    book = publish(reader)
    target = path.format(book_id=book["id"])
    assert reader.http.get(target).status_code == 200
    assert_problem(reader.http.get(target, params={"pgae": 2}), 422, "unknown_parameter")
    # a dependency's name is not a query parameter either (nor listed as one)
    body = assert_problem(
        reader.http.get(target, params={"viewer_id": reader.id}), 422, "unknown_parameter"
    )
    assert "viewer_id" not in body["detail"].split("takes:")[-1]


@pytest.mark.parametrize(
    "query",
    ["limit=2&limit=3", "owner_id=null", "available=null", "isbn=9787536692930&isbn=7536692935"],
)
def test_a_repeated_parameter_or_null_is_not_silently_read(anon: httpx.Client, query: str) -> None:
    body = assert_problem(anon.get(f"/v1/books?{query}"), 422, "validation_failed")
    assert body["errors"][0]["source"] == "query"
    assert anon.get("/v1/books", params={"q": "null"}).status_code == 200  # text: a value


def test_conversations_and_my_books_page_forward(actors: Callable[..., Actor]) -> None:
    me = actors()
    peers = [actors() for _ in range(5)]
    for peer in peers:
        _conversation(me, peer, 1)
    listed = walk(me.http, "/v1/conversations", 2)
    assert sorted(c["peer"]["id"] for c in listed) == sorted(p.id for p in peers)
    books = [publish(me) for _ in range(5)]
    mine = walk(me.http, "/v1/me/books", 2)
    assert [b["id"] for b in mine] == [b["id"] for b in reversed(books)]


def test_inbox_pages_with_cursor_or_resumes_with_after(actors: Callable[..., Actor]) -> None:
    a, b = actors(), actors()
    _conversation(a, b, 5)
    by_cursor = walk(b.http, "/v1/inbox", 2)
    assert [i["seq"] for i in by_cursor] == [1, 2, 3, 4, 5]
    last = b.http.get("/v1/inbox", params={"after": 3, "limit": 2}).json()
    assert [i["seq"] for i in last["items"]] == [4, 5]
    assert last["next_cursor"] is None and last["head"] == 5
    first = b.http.get("/v1/inbox", params={"limit": 2}).json()
    assert first["next_cursor"] is not None and first["head"] == 5
    assert_problem(
        b.http.get("/v1/inbox", params={"after": 1, "cursor": first["next_cursor"]}),
        422,
        "validation_failed",
    )


def test_rooms_and_room_history_page_forward(
    live_server: LiveServer, actors: Callable[..., Actor]
) -> None:
    chat = live_server.container.chat
    prefix = f"pg-{uuid4().hex[:6]}"
    names = [f"{prefix}-{i}" for i in range(5)]
    recorded = [chat.handle(cc.CreateRoom(name=name, title=name)) for name in names]
    reader = actors()
    sender = UUID(reader.id)
    for i in range(5):
        recorded.append(
            chat.handle(
                cc.SendRoomMessage(
                    room_id=recorded[0].id, sender_id=sender, text=f"r{i}", client_msg_id=f"r{i}"
                )
            )
        )
    live_server.container.wait_for("rooms", "chat", recorded[-1])
    rooms = [r["name"] for r in walk(reader.http, "/v1/rooms", 2)]
    assert [n for n in rooms if n.startswith(prefix)] == names
    assert rooms == sorted(rooms)
    history = walk(reader.http, f"/v1/rooms/{names[0]}/messages", 2)
    assert [m["seq"] for m in history] == [5, 4, 3, 2, 1]
    # rooms are public, their history too; a bad token is still refused
    with checked_client(live_server) as anon:
        assert walk(anon, f"/v1/rooms/{names[0]}/messages", 5) == history
        refused = anon.get(f"/v1/rooms/{names[0]}/messages", headers={"Authorization": "Bearer x"})
        assert_problem(refused, 401, ("invalid_token", "malformed_token"))
    refused = reader.http.get("/v1/rooms", params={"cursor": "bm9wZQ"})
    assert_problem(refused, 422, "invalid_cursor")
