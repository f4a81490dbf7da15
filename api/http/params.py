"""The request parameters shared by the controllers, declared with Litestar's explicit markers
(``FromPath``, ``QueryParameter``, ``HeaderParameter``, ``NamedDependency``, ``JSONBody``):
nothing is inferred from a parameter's name, which Litestar 3 will no longer do.

The pagination rule (every list): ``cursor`` is an opaque string taken from the previous
page's ``next_cursor``; passing it back always moves forward; ``next_cursor`` is ``null`` on
the last page. ``limit`` is the page size. A query parameter an operation does not declare is a
422 ``unknown_parameter`` (``api.http.openapi.reject_unknown_query``).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

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
            "Makes the POST safe to retry: a retry with the same key (same reader, same request) "
            "gets the first response again, with `Idempotent-Replayed: true`, and acts once. "
            "The same key for a different request is a 422 `idempotency_key_reused`; a retry "
            "while the first is still running is a 409 `idempotency_in_progress`."
        ),
    ),
]


__all__ = [
    "Cursor",
    "FromPath",
    "IdempotencyKey",
    "JSONBody",
    "PageSize",
    "ReaderId",
    "ViewerId",
]
