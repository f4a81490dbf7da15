"""The OpenAPI document (``GET /schema/openapi.json``) tells the truth: what each operation
needs, takes and can answer. ``tests/e2e/test_openapi_conformance.py`` holds the server to it
(schemathesis against the live app).

Litestar builds the document from the handlers: parameters with their constraints, request
bodies, success schemas (the return annotation) and descriptions (the docstring).
``document(app)`` then completes every operation with what Litestar cannot see, from the
handler's signature and its ``contract(...)`` (``opt=contract(...)`` on the route decorator):

- **security**: ``[]`` for a public operation (no token needed; a token that is sent is still
  checked), the bearer scheme for the others (``reader_id`` in the signature, or
  ``auth="reader"`` for a handler that resolves its reader in its own thread), the
  ``OperatorToken`` scheme for the operator console's operations (``auth="operator"``:
  ``Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>``, else 401 ``operator_token_required``);
- **problems**: one response per possible error status, ``application/problem+json``, the one
  shared ``Problem`` schema, with that status and the possible ``code`` values as an ``enum``
  (also listed in the description). They come from the contract (domain errors, whose
  status follows their branch of the tree in ``domain/errors.py``, and ``Code``\\ s of the API
  layer) and from the operation's shape:

  ======================================  =================================================
  every operation                         422 ``unknown_parameter``
  a query or header parameter, or a      422 ``validation_failed``
  path parameter with a pattern
  a UUID path parameter                   404 ``not_found`` (not a UUID: no such route)
  a JSON body                             400 ``malformed_json``, 413 ``payload_too_large``,
                                          422 ``validation_failed``
  ``Idempotency-Key``                     409 ``idempotency_in_progress``,
                                          422 ``idempotency_key_reused``
  a bearer token required                 401 ``missing_token`` ``invalid_token``
                                          ``token_expired`` ``token_revoked``,
                                          503 ``unavailable`` (the session store)
  a bearer token optional                 the same, less ``missing_token``
  a command (``command=``)                409 ``concurrent_update``
  ======================================  =================================================

- **commands**: their success responses and a 202 ``Accepted`` (recorded, read model behind)
  carry ``Liudong-Position``; idempotent ones carry ``Idempotent-Replayed`` on a replay;
  a 401 carries ``WWW-Authenticate``, a 429 or 503 ``Retry-After``;
- a 204 has no body; ``also=`` lists other statuses with the success body (200 when an open
  or a send finds what exists; readiness's 503);
- query and header parameters are never ``null`` (an optional one is left out), so the
  ``null`` that Litestar adds to an optional parameter's schema is removed; unions of
  response bodies are ``anyOf`` (a book as it was is also a book).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, get_args

import msgspec
from litestar import Litestar
from litestar.exceptions import ImproperlyConfiguredException
from litestar.routes import HTTPRoute

from api.http.errors import PROBLEM_JSON, Problem, domain_status_of
from api.http.schemas import Accepted
from domain.errors import DomainError

CONTRACT = "contract"
BEARER = "BearerToken"
REF = "#/components/schemas/{name}"

Auth = Literal["reader", "optional", "none", "operator"]
OPERATOR = "OperatorToken"


@dataclass(frozen=True)
class Code:
    """A problem ``code`` of the API layer with its status (``ApiError(status, code, …)``)."""

    status: int
    code: str


@dataclass(frozen=True)
class Contract:
    """What an operation can answer beyond what its signature shows (see the module)."""

    problems: tuple[Code, ...] = ()
    auth: Auth | None = None
    command: Literal["library", "chat"] | None = None
    also: tuple[int, ...] = ()
    request_body: dict[str, Any] | None = None
    responses: dict[int, dict[str, Any]] | None = None
    database: bool = True


def code_of(problem: type[DomainError] | Code) -> Code:
    if isinstance(problem, Code):
        return problem
    return Code(domain_status_of(problem), problem.code)


def contract(  # noqa: PLR0913
    *problems: type[DomainError] | Code,
    auth: Auth | None = None,
    command: Literal["library", "chat"] | None = None,
    also: tuple[int, ...] = (),
    request_body: dict[str, Any] | None = None,
    responses: dict[int, dict[str, Any]] | None = None,
    database: bool = True,
) -> dict[str, Any]:
    """The ``opt`` of a route handler: the problems it raises itself (domain error classes
    or ``Code``\\ s), its authentication when the signature does not show it, whether it is a
    command of the Library or the Chat log, other statuses of its success body; for a
    handler that reads its own body or answers bytes (media), its ``request_body`` and
    success ``responses`` as OpenAPI objects; ``database=False`` for an operation that never
    touches the database (it cannot answer ``database_unavailable``)."""
    return {
        CONTRACT: Contract(
            tuple(code_of(p) for p in problems),
            auth,
            command,
            also,
            request_body,
            responses,
            database,
        )
    }


# -- the shapes every operation may have --------------------------------------------------------

DATABASE_UNAVAILABLE = Code(503, "database_unavailable")
"""Every operation that reads or writes the database may answer it (with ``Retry-After``)."""
TOKEN_REFUSED = (
    Code(401, "invalid_token"),
    Code(401, "token_expired"),
    Code(401, "token_revoked"),
    DATABASE_UNAVAILABLE,
)
TOKEN_REQUIRED = (Code(401, "missing_token"), *TOKEN_REFUSED)
OPERATOR_REQUIRED = (Code(401, "operator_token_required"),)
"""An operator operation (``auth="operator"``, ``/v1/ops``) without
``Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>`` (or with the token unset on the server)."""
BODY = (Code(400, "malformed_json"), Code(413, "payload_too_large"), Code(422, "validation_failed"))
IDEMPOTENT = (Code(409, "idempotency_in_progress"), Code(422, "idempotency_key_reused"))
MODERATED = (  # the content check of readers' texts (api.http.moderation)
    Code(422, "content_rejected"),
    Code(503, "content_check_unavailable"),
    Code(503, "wechat_quota_exceeded"),
)

HEADERS: dict[str, dict[str, Any]] = {
    "Liudong-Position": {
        "description": "The log position the command wrote (`library:<n>` or `chat:<n>`); "
        "absent when it wrote nothing (a retry, a read receipt that changes nothing).",
        "schema": {"type": "string", "pattern": "^(library|chat):[0-9]+$"},
    },
    "Idempotent-Replayed": {
        "description": "`true` on the stored response of an earlier request with the same "
        "`Idempotency-Key`.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {
        "description": 'The scheme to authenticate with: `Bearer realm="liudong"`.',
        "required": True,
        "schema": {"type": "string"},
    },
}


def document(app: Litestar) -> dict[str, Any]:
    """Complete the app's OpenAPI document in place (see the module); returns it as served."""
    openapi = app.openapi_schema
    paths: dict[str, Any] = {}
    for path, item in (openapi.paths or {}).items():
        paths[path] = item.to_schema()
    bodies: set[type[msgspec.Struct]] = {Problem, Accepted}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if not handler.resolve_include_in_schema():
                continue
            operation = paths[route.path_format or "/"][method.lower()]
            _complete(operation, handler)
            signature = handler.parsed_fn_signature
            data = signature.parameters.get("data")
            for annotation in (data.annotation if data else None, signature.return_type.annotation):
                bodies |= _structs(annotation)
    # The bodies' schemas as msgspec itself decodes and encodes them: every constraint
    # (list items too) and ``additionalProperties: false`` where unknown fields are refused.
    _, components = msgspec.json.schema_components(sorted(bodies, key=_name), ref_template=REF)
    unknown = set(openapi.components.schemas) - set(components)
    if unknown:  # a body type this module did not find: it would lose its schema
        raise ImproperlyConfiguredException(f"components not from msgspec bodies: {unknown}")
    openapi.components.schemas = components  # type: ignore[assignment]
    openapi.paths = paths  # type: ignore[assignment]
    return openapi.to_schema()


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _structs(annotation: Any) -> set[type[msgspec.Struct]]:
    """The msgspec Structs in a parameter's or a return annotation (``Response[X]``,
    ``X | Y``, ``list[X]``, ``Annotated[X, …]``…)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return {annotation}
    found: set[type[msgspec.Struct]] = set()
    for arg in get_args(annotation):
        found |= _structs(arg)
    return found


def _auth(handler: Any, declared: Auth | None) -> Auth:
    names = set(handler.parsed_fn_signature.parameters)
    shown: Auth | None = (
        "reader" if "reader_id" in names else "optional" if "viewer_id" in names else None
    )
    if declared is not None and shown is not None and declared != shown:
        raise ImproperlyConfiguredException(
            f"{handler}: contract says auth={declared!r}, the signature {shown!r}"
        )
    return declared or shown or "none"


def _complete(operation: dict[str, Any], handler: Any) -> None:
    promised: Contract = handler.opt.get(CONTRACT) or Contract()
    auth = _auth(handler, promised.auth)
    operation["security"] = (
        [{BEARER: []}] if auth == "reader" else [{OPERATOR: []}] if auth == "operator" else []
    )
    parameters = operation.get("parameters") or []
    for parameter in parameters:
        if parameter["in"] in ("query", "header"):
            _drop_null(parameter["schema"])
    idempotent = any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters)

    codes = [*promised.problems, Code(422, "unknown_parameter")]
    if promised.database:
        codes.append(DATABASE_UNAVAILABLE)
    if auth == "reader":
        codes += TOKEN_REQUIRED
    elif auth == "optional":
        codes += TOKEN_REFUSED
    elif auth == "operator":
        codes += OPERATOR_REQUIRED
    if any(p["in"] in ("query", "header") or "pattern" in p["schema"] for p in parameters):
        codes.append(Code(422, "validation_failed"))  # a path's pattern is checked the same way
    if any(p["in"] == "path" and p["schema"].get("format") == "uuid" for p in parameters):
        codes.append(Code(404, "not_found"))
    if "requestBody" in operation and promised.request_body is None:
        codes += BODY
    if idempotent:
        codes += IDEMPOTENT
    if promised.command:
        codes.append(Code(409, "concurrent_update"))

    if promised.request_body is not None:
        operation["requestBody"] = copy.deepcopy(promised.request_body)
        codes += BODY
    responses: dict[str, Any] = operation["responses"]
    for status in [s for s in responses if int(s) >= 400]:
        del responses[status]  # Litestar's generic 400: not what this server sends
    if promised.responses is not None:
        responses.clear()
        responses.update({str(k): copy.deepcopy(v) for k, v in promised.responses.items()})
    success = str(handler.status_code)
    for status in promised.also:
        responses[str(status)] = {
            **copy.deepcopy(responses[success]),
            "description": HTTPStatus(status).phrase,
        }
    for status, response in responses.items():
        if int(status) == 204:
            response.pop("content", None)
        if "content" in response:  # parameters of a media type are not part of its name
            response["content"] = {k.split(";")[0]: v for k, v in response["content"].items()}
        for schema in (m.get("schema") for m in response.get("content", {}).values()):
            if schema and "oneOf" in schema and all("$ref" in s for s in schema["oneOf"]):
                schema["anyOf"] = schema.pop("oneOf")
    if promised.command:
        responses["202"] = {
            "description": "Accepted: recorded, but the read model has not caught up within "
            "the consistency timeout; a GET shows it a moment later.",
            "content": {"application/json": {"schema": {"$ref": REF.format(name="Accepted")}}},
        }
        for status in [success, *map(str, promised.also), "202"]:
            _header(responses[status], "Liudong-Position")
    for status, response in sorted(_problems(codes).items()):
        responses[str(status)] = response
    if idempotent:  # what the first request's action answered can be replayed
        replayable = {success, *map(str, promised.also), "202"}
        replayable |= {str(c.status) for c in promised.problems}
        replayable |= {"409"} if promised.command else set()
        for status in replayable & set(responses):
            _header(responses[status], "Idempotent-Replayed")
    operation["responses"] = dict(sorted(responses.items()))


def _problems(codes: list[Code]) -> dict[int, dict[str, Any]]:
    by_status: dict[int, set[str]] = {}
    for code in codes:
        by_status.setdefault(code.status, set()).add(code.code)
    responses: dict[int, dict[str, Any]] = {}
    for status, names in by_status.items():
        listed = ", ".join(f"`{n}`" for n in sorted(names))
        response: dict[str, Any] = {
            "description": f"{HTTPStatus(status).phrase}. `code`: {listed}.",
            "content": {
                PROBLEM_JSON: {
                    "schema": {
                        "allOf": [{"$ref": REF.format(name="Problem")}],
                        "properties": {
                            "status": {"const": status},
                            "code": {"enum": sorted(names)},
                        },
                    }
                }
            },
        }
        if status == 401:
            _header(response, "WWW-Authenticate")
        if status in (429, 503):
            _header(response, "Retry-After")
        responses[status] = response
    return responses


def _header(response: dict[str, Any], name: str) -> None:
    response.setdefault("headers", {})[name] = dict(HEADERS[name])


def _drop_null(schema: dict[str, Any]) -> None:
    """Remove ``null`` from a parameter's schema: a parameter left out is not ``null``."""
    one_of = schema.get("oneOf")
    if one_of is not None:
        kept = [s for s in one_of if s.get("type") != "null"]
        if len(kept) == 1:
            schema.pop("oneOf")
            schema.update(kept[0])
        else:
            schema["oneOf"] = kept
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        schema["type"] = rest[0] if len(rest) == 1 else rest
    if "enum" in schema:
        schema["enum"] = [v for v in schema["enum"] if v is not None]


def dump() -> str:
    """The document the server serves at ``/schema/openapi.json``, as indented JSON text
    (UTF-8, keys in the served order), built from the app without starting it: no database,
    NATS or network is touched. ``python -m api.http.openapi > openapi.json`` prints it; the
    mini-program SDK generates its types from it (``clients/miniprogram``, ``npm run
    gen-types``)."""
    import json

    from api.bootstrap.settings import Settings
    from api.http.app import create_app

    app = create_app(Settings(env="test"))
    return json.dumps(app.openapi_schema.to_schema(), ensure_ascii=False, indent=2) + "\n"


__all__ = ["MODERATED", "OPERATOR", "Code", "Contract", "code_of", "contract", "document", "dump"]


if __name__ == "__main__":
    import sys

    sys.stdout.write(dump())
