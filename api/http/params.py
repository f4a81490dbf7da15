"""The request parameters shared by the controllers, declared with Litestar's explicit markers
(``FromPath``, ``QueryParameter``, ``HeaderParameter``, ``NamedDependency``, ``JSONBody``):
nothing is inferred from a parameter's name, which Litestar 3 will no longer do.

The pagination rule (every list): ``cursor`` is an opaque string taken from the previous
page's ``next_cursor``; passing it back always moves forward; ``next_cursor`` is ``null`` on
the last page. ``limit`` is the page size. A query parameter an operation does not declare is a
422 ``unknown_parameter`` (``check_query``), so a misspelt or retired parameter
(``before=``) is never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, get_args
from uuid import UUID

from litestar import Request
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, HeaderParameter, JSONBody, ParameterKwarg, QueryParameter

from api.http.errors import ApiError
from projections.paging import InvalidCursor, decode_cursor, encode_cursor

ReaderId = NamedDependency[UUID]
"""The reader of the request's bearer token (401 without a valid one): ``api.http.auth``."""

ViewerId = NamedDependency[UUID | None]
"""The reader of the bearer token if one is sent (401 if it is not valid), else ``None``."""

Cursor = Annotated[
    str | None,
    QueryParameter(
        max_length=200,
        description="Opaque: the `next_cursor` of the previous page (omit, or empty, for the "
        "first page).",
    ),
]

PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="Page size (1–100).")]

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        min_length=1,
        max_length=255,
        description=(
            "Makes the command safe to retry: a retry with the same key (same reader, same "
            "request) gets the first response again, with `Idempotent-Replayed: true`, and acts "
            "once, even after a crash between the command's commit and its stored response. "
            "The same key for a different request is a 422 `idempotency_key_reused`; a retry "
            "while the first is still running is a 409 `idempotency_in_progress`."
        ),
    ),
]


def seq_cursor(cursor: str | None) -> int | None:
    """The seq a ``cursor`` of a seq-ordered list stands for (``None``: the first page). One
    this server did not issue is a 422 ``invalid_cursor``."""
    if not cursor:
        return None
    try:
        return decode_cursor(cursor)
    except InvalidCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc


def next_seq_cursor(seq: int | None) -> str | None:
    """The ``next_cursor`` of a seq-ordered list whose next page starts after ``seq``."""
    return None if seq is None else encode_cursor(seq)


# -- the query string ------------------------------------------------------------------------

_DECLARED: dict[int, tuple[HTTPRouteHandler, dict[str, bool]]] = {}


def declared_query(handler: HTTPRouteHandler) -> dict[str, bool]:
    """The query parameters ``handler`` (or a dependency of it) declares: name → whether its
    value is text (``str``)."""
    cached = _DECLARED.get(id(handler))
    if cached is not None and cached[0] is handler:
        return cached[1]
    found: dict[str, bool] = {}
    dependencies = handler.resolve_dependencies()
    signatures = [handler.parsed_fn_signature] + [
        getattr(provide, "parsed_fn_signature", None) for provide in dependencies.values()
    ]
    for signature in signatures:
        for name, field in (signature.parameters if signature else {}).items():
            if name in dependencies:  # provided (``viewer_id``…), never read from the query
                continue
            kwarg = field.kwarg_definition
            if isinstance(kwarg, ParameterKwarg) and kwarg.param_type == ParamType.QUERY:
                annotation = field.annotation
                found[kwarg.name or name] = annotation is str or str in get_args(annotation)
    _DECLARED[id(handler)] = (handler, found)
    return found


async def check_query(request: Request) -> None:  # type: ignore[type-arg]
    """``before_request`` of the app, for the operations of the OpenAPI document: the query
    string holds only what the operation declares, each parameter once, so what the document
    says is what is read.

    - a parameter the operation does not declare: 422 ``unknown_parameter``;
    - a parameter given twice, or ``null`` for one that is not text (Litestar would read it
      as left out): 422 ``validation_failed``.
    """
    if not request.scope.get("query_string"):
        return
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
        return
    declared = declared_query(handler)
    unknown = sorted({name for name in request.query_params if name not in declared})
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        raise ApiError(
            422,
            "unknown_parameter",
            f"Unknown query parameter(s): {', '.join(unknown)}. This operation takes: {takes}.",
            errors=[_error(name, "unknown parameter") for name in unknown],
        )
    errors = []
    for name, is_text in sorted(declared.items()):
        values = request.query_params.getall(name, [])
        if len(values) > 1:
            errors.append(_error(name, "given more than once"))
        elif values and values[0] == "null" and not is_text:
            errors.append(_error(name, "null is not a value: leave the parameter out"))
    if errors:
        raise ApiError(422, "validation_failed", "Invalid query parameters.", errors=errors)


def _error(name: str, message: str) -> dict[str, str]:
    return {"key": name, "source": "query", "message": message}


__all__ = [
    "Cursor",
    "declared_query",
    "next_seq_cursor",
    "check_query",
    "seq_cursor",
    "FromPath",
    "IdempotencyKey",
    "JSONBody",
    "PageSize",
    "ReaderId",
    "ViewerId",
]
