"""The operator's credential: ``Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>``.

``/readyz`` shows its details only to it; every operation under ``/v1/ops`` (the console at
``/ops``) requires it (``operator_guard``: 401 ``operator_token_required`` otherwise, also
when the server has no operator token configured: then nobody is an operator). The token is
compared in constant time (``hmac.compare_digest``) and never logged.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.http.errors import ApiError


def is_operator(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """The request carries the operator token (constant-time comparison); False when no
    token is configured."""
    expected = connection.app.state.container.settings.operator_token
    header = connection.headers.get("authorization") or ""
    scheme, _, given = header.partition(" ")
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    )


def operator_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard of the operator operations. Raises ``ApiError`` 401
    ``operator_token_required``."""
    if not is_operator(connection):
        configured = bool(connection.app.state.container.settings.operator_token)
        raise ApiError(
            401,
            "operator_token_required",
            "Send Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>."
            if configured
            else "No operator token is configured on this server (LIUDONG_OPERATOR_TOKEN).",
        )


__all__ = ["is_operator", "operator_guard"]
