"""The OpenAPI document tells the truth (``api.http.openapi``): schemathesis reads
``/schema/openapi.json`` from the live app and sends generated requests (valid and invalid
ones) for every operation over real HTTP as a logged-in reader. Every response must be one
the document promises:

- never a 5xx;
- its status documented for that operation, its content type and headers as documented,
  its body valid against the documented schema (problems against ``Problem`` with the
  response's own ``code`` values);
- a request the document calls invalid is refused (4xx);
- an operation that declares the bearer scheme refuses a request without a valid token.

Some generated path parameters are swapped for ids of real books, loans, conversations,
messages and rooms, so that answers beyond 404 are checked too. ``POST /v1/auth/logout``
gets a fresh token each time (it revokes the one it is sent).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from api.adapters.catalog import CatalogEntry
from domain import chat_commands as cc
from tests.e2e.conftest import LiveServer
from tests.e2e.test_api_auth import checked_client, isbn13

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    ignored_auth,
]
MAX_EXAMPLES = 25  # fuzzing cases per operation, on top of the coverage phase's
MIN_CASES = 1000
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

CASES: Counter[str] = Counter()

pytestmark = pytest.mark.conformance


@dataclass
class World:
    """Real objects of the reader who fuzzes (and of a peer), by path parameter name."""

    token: str
    reader_id: UUID
    ids: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> World:
    container = live_server.container
    token, me = live_server.login()
    peer_token, peer = live_server.login()
    isbn = isbn13()
    container.catalog.upsert_many([CatalogEntry(isbn=isbn, title="流动的书", source="test")])
    with (
        checked_client(live_server, token) as mine,
        checked_client(live_server, peer_token) as theirs,
    ):

        def made(response: Any) -> dict[str, Any]:
            assert response.status_code in (200, 201), response.text
            return response.json()  # type: ignore[no-any-return]

        my_books = [
            made(mine.post("/v1/books", json={"isbn": isbn13(), "title": f"我的书{i}"}))
            for i in range(2)
        ]
        their_books = [
            made(theirs.post("/v1/books", json={"isbn": isbn, "title": f"书{i}"})) for i in range(2)
        ]
        borrowed = made(mine.post(f"/v1/books/{their_books[0]['id']}/loans", json={"note": "借"}))
        lent = made(theirs.post(f"/v1/books/{my_books[0]['id']}/loans", json={"note": "借我"}))
        made(mine.post(f"/v1/loans/{borrowed['id']}/cancel"))
        conversation = made(mine.post("/v1/conversations", json={"peer_id": peer["id"]}))
        messages = [
            made(
                theirs.post(
                    f"/v1/conversations/{conversation['id']}/messages",
                    json={"text": f"你好 {i}", "client_msg_id": f"w{i}"},
                )
            )
            for i in range(3)
        ]
    room = f"fuzz-{isbn[-6:]}"
    created = container.chat.handle(cc.CreateRoom(name=room, title="模糊测试"))
    sent = container.chat.handle(
        cc.SendRoomMessage(
            room_id=created.id, sender_id=UUID(peer["id"]), text="大家好", client_msg_id="w"
        )
    )
    container.wait_for("rooms", "chat", sent)
    return World(
        token=token,
        reader_id=UUID(me["id"]),
        ids={
            "book_id": [b["id"] for b in my_books + their_books],
            "loan_id": [borrowed["id"], lent["id"]],
            "conversation_id": [conversation["id"]],
            "message_id": [m["id"] for m in messages],
            "name": [room],
            "isbn": [isbn],
        },
    )


@pytest.fixture(scope="module")
def api_schema(live_server: LiveServer, world: World) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": 20261207,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{live_server.url}/schema/openapi.json", config=config)

    @schema.hook
    def flatmap_path_parameters(_: Any, path_parameters: dict[str, Any] | None) -> Any:
        """Now and then, real objects instead of random (still valid) ids."""
        if not path_parameters:
            return st.just(path_parameters)
        real = {
            name: st.sampled_from(world.ids[name])
            for name, value in path_parameters.items()
            if name in world.ids and (not name.endswith("_id") or UUID_TEXT.fullmatch(str(value)))
        }
        if not real:
            return st.just(path_parameters)
        swapped = st.fixed_dictionaries(real).map(lambda ids: {**path_parameters, **ids})
        return st.one_of(st.just(path_parameters), swapped)

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation_keeps_the_promises_of_the_document(
    case: schemathesis.Case, world: World, live_server: LiveServer
) -> None:
    token = world.token
    if case.operation.label == "POST /v1/auth/logout":  # revokes the token it is sent
        token = live_server.container.sessions.issue(world.reader_id, 3600).token
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
    CASES[case.operation.label] += 1


def test_the_generated_cases_cover_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    operations = {
        result.ok().label
        for result in api_schema.get_all_operations()
        if isinstance(result, schemathesis.core.result.Ok)
    }
    if not CASES:
        pytest.skip("the conformance test did not run in this session")
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len(CASES)} operations: {CASES}")
    assert set(CASES) == operations, operations - set(CASES)
    assert sum(CASES.values()) >= MIN_CASES, CASES
