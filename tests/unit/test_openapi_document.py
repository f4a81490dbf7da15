"""The shape of the OpenAPI document (``api.http.openapi``), without a server: who needs a
token, one ``Problem`` schema for every error with its codes, 202 ``Accepted`` and the
headers of commands, clean component names, parameter constraints, and every code of the
domain error tree documented somewhere. ``tests/e2e/test_openapi_conformance.py`` checks
against the live app that all of it is true."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from api.bootstrap.settings import Settings
from api.http.app import create_app
from domain import chat_errors, errors

PUBLIC = {
    "POST /v1/auth/login",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/books",
    "GET /v1/books/{book_id}",
    "GET /v1/isbn/{isbn}",
    "GET /v1/rooms",
    "GET /v1/rooms/{name}/messages",
    "GET /v1/media/{media_id}",  # ids are content hashes: unguessable without the picture
    "GET /v1/media/{media_id}/thumb",
}
LISTS = {
    "GET /v1/books",
    "GET /v1/me/books",
    "GET /v1/me/loans",
    "GET /v1/conversations",
    "GET /v1/conversations/{conversation_id}/messages",
    "GET /v1/inbox",
    "GET /v1/rooms",
    "GET /v1/rooms/{name}/messages",
}
PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(
        env="test", database_url="postgresql://nobody@127.0.0.1:1/none", nats_url="nats://x:1"
    )
    return create_app(settings).openapi_schema.to_schema()


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_public_operations_need_no_token_and_the_others_the_bearer_scheme(
    document: dict[str, Any],
) -> None:
    ops = operations(document)
    assert set(ops) >= PUBLIC
    for label, operation in ops.items():
        operator = label.split(" ", 1)[1].startswith("/v1/ops/")  # the console's API
        scheme = "OperatorToken" if operator else "BearerToken"
        expected: list[Any] = [] if label in PUBLIC else [{scheme: []}]
        assert operation["security"] == expected, label
        if label not in PUBLIC:
            codes = operation["responses"]["401"]["content"]["application/problem+json"]
            code = "operator_token_required" if operator else "missing_token"
            assert code in codes["schema"]["properties"]["code"]["enum"], label
            assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"]


def test_every_error_is_a_problem_with_its_codes(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail", "code"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "code",
        "errors",
        "loan_id",  # request_pending: the open loan
    }
    for label, operation in operations(document).items():
        assert operation.get("description"), f"{label}: no description (handler docstring)"
        assert "422" in operation["responses"], label  # unknown_parameter, at least
        for status, response in operation["responses"].items():
            if int(status) < 400 or label == "GET /readyz":
                continue
            (media, content), *rest = response["content"].items()
            assert not rest and media == "application/problem+json", (label, status)
            schema = content["schema"]
            assert schema["allOf"] == [{"$ref": PROBLEM_REF}], (label, status)
            codes = schema["properties"]["code"]["enum"]
            assert codes and schema["properties"]["status"] == {"const": int(status)}
            for code in codes:
                assert (
                    re.fullmatch(r"[a-z][a-z0-9_]*", code)
                    and f"`{code}`" in response["description"]
                ), (label, status, code)
            if int(status) in (429, 503):
                assert response["headers"]["Retry-After"]["required"], (label, status)


def test_commands_document_202_accepted_and_their_headers(document: dict[str, Any]) -> None:
    ops = operations(document)
    # the console's rebuild answers 202 too, with the projection (it runs on, in a thread)
    rebuild = "POST /v1/ops/projections/{name}/rebuild"
    assert ops[rebuild]["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProjectionOut"
    }
    commands = {label for label, op in ops.items() if "202" in op["responses"]} - {rebuild}
    assert commands == {
        "PATCH /v1/me",
        "DELETE /v1/me",
        "POST /v1/books",
        "PATCH /v1/books/{book_id}",
        "DELETE /v1/books/{book_id}",
        "POST /v1/books/{book_id}/relist",
        "POST /v1/books/{book_id}/loans",
        "POST /v1/loans/{loan_id}/approve",
        "POST /v1/loans/{loan_id}/decline",
        "POST /v1/loans/{loan_id}/cancel",
        "POST /v1/loans/{loan_id}/return",
        "POST /v1/loans/{loan_id}/confirm-return",
        "POST /v1/conversations",
        "POST /v1/conversations/{conversation_id}/messages",
        "POST /v1/conversations/{conversation_id}/read",
        "POST /v1/conversations/{conversation_id}/messages/{message_id}/hide",
    }
    for label in commands:
        responses = ops[label]["responses"]
        accepted = responses["202"]["content"]["application/json"]["schema"]
        assert accepted == {"$ref": "#/components/schemas/Accepted"}, label
        for status, response in responses.items():
            if status.startswith("2"):
                assert "Liudong-Position" in response["headers"], (label, status)
                if status != "204":
                    assert response["content"]["application/json"]["schema"], (label, status)
    for label, operation in ops.items():
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])):
            success = [s for s in operation["responses"] if s.startswith("2")]
            for status in success:
                headers = operation["responses"][status]["headers"]
                assert "Idempotent-Replayed" in headers, (label, status)
    assert document["components"]["schemas"]["Accepted"]["required"] == [
        "id",
        "position",
        "status",
    ]


def test_no_body_on_204_and_metrics_is_text(document: dict[str, Any]) -> None:
    ops = operations(document)
    hide = "POST /v1/conversations/{conversation_id}/messages/{message_id}/hide"
    for label in ("POST /v1/auth/logout", hide):
        assert "content" not in ops[label]["responses"]["204"], label
    assert set(ops["GET /metrics"]["responses"]["200"]["content"]) == {"text/plain"}


def test_component_names_are_clean_and_every_reference_resolves(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    assert all(re.fullmatch(r"[A-Z][A-Za-z]*", name) for name in names), names
    assert {"BookPage", "ConversationPage", "MessagePage", "RoomPage", "Problem"} <= names
    referenced = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    assert referenced <= names, referenced - names
    body = document["components"]["schemas"]["PublishBody"]
    assert body["additionalProperties"] is False
    revise = document["components"]["schemas"]["RevisePatch"]
    tags = next(s for s in revise["properties"]["tags"]["anyOf"] if s.get("type") == "array")
    assert tags["items"]["minLength"] == 1 and tags["items"]["maxLength"] == 32


def test_lists_page_with_cursor_and_constraints_are_documented(document: dict[str, Any]) -> None:
    ops = operations(document)

    def parameter(label: str, name: str) -> dict[str, Any]:
        return next(p for p in ops[label]["parameters"] if p["name"] == name)

    for label in LISTS:
        cursor = parameter(label, "cursor")["schema"]
        assert cursor["type"] == "string" and cursor["maxLength"] == 200, label
        limit = parameter(label, "limit")["schema"]
        assert limit["minimum"] == 1 and limit["maximum"] in (100, 200), label
        assert "before" not in {p["name"] for p in ops[label]["parameters"]}, label
        page = ops[label]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][page.rsplit("/", 1)[1]]
        assert "next_cursor" in schema["required"], label
    assert "pattern" in parameter("GET /v1/isbn/{isbn}", "isbn")["schema"]
    assert "pattern" in parameter("GET /v1/books", "isbn")["schema"]
    for label in ("GET /v1/books/{book_id}", "GET /v1/loans/{loan_id}"):
        as_of = parameter(label, "as_of")["schema"]
        assert as_of["pattern"] and as_of["maxLength"] == 64 and as_of["type"] == "string"
    owner = parameter("GET /v1/books", "owner_id")["schema"]
    assert owner == {"type": "string", "format": "uuid", "description": owner["description"]}


def test_every_domain_error_code_is_documented(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    documented = set(re.findall(r'"code": \{"enum": \[([^\]]*)\]', text))
    codes = {c.strip(' "') for group in documented for c in group.split(",")}
    tree = [
        value
        for module in (errors, chat_errors)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, errors.DomainError)
    ]
    # branches (never raised themselves), errors that no HTTP operation can give (rooms are
    # created by operators, book details are validated before the domain sees them)
    not_http = {
        "domain_error",
        "not_found",
        "forbidden",
        "conflict",
        "invalid",
        "room_already_exists",
        "invalid_room",
        "invalid_details",
    }
    missing = {kind.code for kind in tree} - not_http - codes
    assert not missing, missing
