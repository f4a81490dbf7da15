"""Bearer-token authentication: ``Authorization: Bearer <session token>`` → reader id.

Tokens are opaque and random (``api.adapters.sessions``); an openId is never a credential."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request
from litestar.di import Provide

from api.adapters.sessions import (
    Authenticated,
    ExpiredToken,
    InvalidSession,
    InvalidTicket,
    RevokedToken,
    SessionStoreUnavailable,
)
from api.http.errors import DatabaseUnavailable, Unauthorized


def bearer_token(request: Request) -> str | None:  # type: ignore[type-arg]
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), else ``None``."""
    return parse_bearer(request.headers.get("authorization"))


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization`` header's value ``Bearer <token>`` (RFC 6750 §2.1),
    else ``None``."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_token(container: object, token: str | None) -> UUID:
    """The reader of ``token``. Raises ``Unauthorized`` (401) with a specific code."""
    if not token:
        raise Unauthorized("missing_token", "Send Authorization: Bearer <token>.")
    try:
        return container.sessions.authenticate(token)  # type: ignore[attr-defined,no-any-return]
    except ExpiredToken as exc:
        raise Unauthorized("token_expired", str(exc)) from exc
    except RevokedToken as exc:
        raise Unauthorized("token_revoked", str(exc)) from exc
    except InvalidSession as exc:
        raise Unauthorized("invalid_token", str(exc)) from exc
    except SessionStoreUnavailable as exc:
        raise DatabaseUnavailable() from exc


def authenticate_socket(container: object, token: str | None, ticket: str | None) -> Authenticated:
    """The login session of a WebSocket: its bearer ``token`` (header) or a single-use
    ``ticket`` (``?ticket=``, used up here). Raises ``Unauthorized`` (401) or ``ApiError``
    503 like ``authenticate_token``; a bad ticket is ``invalid_ticket``."""
    sessions: Any = container.sessions  # type: ignore[attr-defined]
    if not token and not ticket:
        raise Unauthorized(
            "missing_token",
            "Send Authorization: Bearer <token>, or ?ticket= (POST /v1/ws/tickets).",
        )
    try:
        if ticket:
            return sessions.redeem_ticket(ticket)  # type: ignore[no-any-return]
        return sessions.authenticate_session(token)  # type: ignore[no-any-return]
    except InvalidTicket as exc:
        raise Unauthorized("invalid_ticket", str(exc)) from exc
    except ExpiredToken as exc:
        raise Unauthorized("token_expired", str(exc)) from exc
    except RevokedToken as exc:
        raise Unauthorized("token_revoked", str(exc)) from exc
    except InvalidSession as exc:
        raise Unauthorized("invalid_token", str(exc)) from exc
    except SessionStoreUnavailable as exc:
        raise DatabaseUnavailable() from exc


def current_reader(request: Request) -> UUID:  # type: ignore[type-arg]
    """The reader of the request's bearer token (the ``reader_id`` dependency). Raises
    ``Unauthorized`` (401). Command handlers that run in a worker thread anyway may call it
    there instead of declaring ``reader_id``: the dependency costs a second thread hop per
    request (about a tenth of the server's CPU per command)."""
    return authenticate_token(request.app.state.container, bearer_token(request))


def _optional_reader(request: Request) -> UUID | None:  # type: ignore[type-arg]
    token = bearer_token(request)
    if token is None:
        return None
    return authenticate_token(request.app.state.container, token)


AUTH_DEPENDENCIES = {
    "reader_id": Provide(current_reader, sync_to_thread=True),
    "viewer_id": Provide(_optional_reader, sync_to_thread=True),
}
