"""The one mapping from errors to RFC 9457 ``application/problem+json`` responses.

Problem bodies (``Problem``): ``{"type", "title", "status", "detail", "code", "errors"?}``
where ``type`` is ``https://liudong.dev/problems/<code>`` and ``code`` is stable (the API
contract). Domain errors map by branch: NotFound→404, Forbidden→403, Conflict→409,
Invalid→422. A 401 carries ``WWW-Authenticate``; a 429 or 503 carries ``Retry-After``.
Which operation gives which problem is in the OpenAPI document (``api.http.openapi``).
The content check (``domain.moderation``): ``content_rejected`` 422 with
``errors: [{"field", "label"}]``; ``content_check_unavailable`` 503 with ``Retry-After``;
a WeChat quota (``wechat_quota_exceeded``) 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from api.adapters.ratelimit import RateLimited
from api.adapters.wechat import WeChatQuotaExceeded
from api.bootstrap.container import ReadModelLag
from domain import errors as d
from domain.moderation import ContentCheckUnavailable, ContentRejected

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://liudong.dev/problems/"

_DOMAIN_STATUS: list[tuple[type[d.DomainError], int]] = [
    (d.NotFound, 404),
    (d.Forbidden, 403),
    (d.Conflict, 409),
    (d.Invalid, 422),
]


RETRY_AFTER_SECONDS = {429: 60, 503: 1}
"""The ``Retry-After`` of a problem of these statuses (seconds)."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An RFC 9457 problem (``application/problem+json``). ``code`` is stable: the API
    contract; ``errors`` (only on some 422s) names the offending fields; ``loan_id`` (only
    on a 409 ``request_pending``) is the borrower's open loan of that book."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    loan_id: UUID | msgspec.UnsetType = msgspec.UNSET


def domain_status_of(kind: type[d.DomainError]) -> int:
    """The HTTP status of a domain error class (by its branch of the tree)."""
    for branch, status in _DOMAIN_STATUS:
        if issubclass(kind, branch):
            return status
    return 400


class ApiError(Exception):
    """An error raised by the API layer itself with an explicit status and stable code."""

    def __init__(
        self, status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors


DATABASE_RETRY_AFTER = 2
"""The ``Retry-After`` (seconds) of ``database_unavailable``."""


class DatabaseUnavailable(ApiError):
    """The database cannot be reached (down, restarting, out of connections): 503
    ``database_unavailable`` with ``Retry-After``, answered within the request's bounded
    waits (``LIUDONG_DB_*_TIMEOUT``), never a 500 or a hang."""

    def __init__(self) -> None:
        super().__init__(
            503, "database_unavailable", "The database is unavailable; try again in a moment."
        )


def database_down(exc: BaseException) -> bool:
    """True when ``exc`` or one of its causes says the database cannot be reached: psycopg's
    ``OperationalError`` (not a statement error such as a serialization failure), a pool
    timeout, eventsourcing's ``OperationalError``/``InterfaceError``, the session store's
    ``SessionStoreUnavailable``."""
    from eventsourcing.persistence import InterfaceError as EsInterfaceError
    from eventsourcing.persistence import OperationalError as EsOperationalError
    from psycopg_pool import PoolTimeout

    from api.adapters.sessions import SessionStoreUnavailable
    from api.bootstrap.db import DatabaseDown

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, psycopg.errors.QueryCanceled):  # statement_timeout
            return True
        if isinstance(
            seen,
            PoolTimeout
            | EsInterfaceError
            | SessionStoreUnavailable
            | psycopg.InterfaceError
            | DatabaseDown,
        ):
            return True
        if isinstance(seen, psycopg.OperationalError | EsOperationalError) and not isinstance(
            seen,
            psycopg.errors.SerializationFailure
            | psycopg.errors.DeadlockDetected
            | psycopg.errors.LockNotAvailable,
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Unauthorized(ApiError):
    def __init__(
        self, code: str = "unauthorized", detail: str = "A valid session token is required."
    ) -> None:  # noqa: E501
        super().__init__(401, code, detail)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    loan_id: UUID | None = None,
) -> Response[Problem]:
    body = Problem(
        type=PROBLEM_BASE + code,
        title=code.replace("_", " ").capitalize(),
        status=status,
        detail=detail,
        code=code,
        errors=errors or msgspec.UNSET,
        loan_id=msgspec.UNSET if loan_id is None else loan_id,
    )
    hdrs = dict(headers or {})
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="liudong"')
    if code == "database_unavailable":
        hdrs.setdefault("Retry-After", str(DATABASE_RETRY_AFTER))
    if status in RETRY_AFTER_SECONDS:
        hdrs.setdefault("Retry-After", str(RETRY_AFTER_SECONDS[status]))
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=hdrs)


def domain_status(exc: d.DomainError) -> int:
    return domain_status_of(type(exc))


def domain_problem(exc: d.DomainError) -> Response[Problem]:
    """The problem response of a domain error (with ``loan_id`` for ``RequestPending``)."""
    loan_id = exc.loan_id if isinstance(exc, d.RequestPending) else None
    return problem(domain_status(exc), exc.code, exc.message, loan_id=loan_id)


def _domain_handler(_: Request[Any, Any, Any], exc: d.DomainError) -> Response[Any]:
    return domain_problem(exc)


def _api_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return problem(exc.status, exc.code, exc.detail, errors=exc.errors)


def _content_rejected_handler(_: Request[Any, Any, Any], exc: ContentRejected) -> Response[Any]:
    return problem(422, exc.code, exc.message, errors=[{"field": exc.field, "label": exc.label}])


def _retry_later_handler(
    _: Request[Any, Any, Any], exc: ContentCheckUnavailable | WeChatQuotaExceeded
) -> Response[Any]:
    detail = (
        exc.message
        if isinstance(exc, ContentCheckUnavailable)
        else "A WeChat quota is used up; try again later."
    )
    return problem(503, exc.code, detail, headers={"Retry-After": str(exc.retry_after)})


def _validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    detail = str(exc.detail)
    if "malformed" in detail.lower() or any(
        "malformed" in str(e.get("message", "")).lower() for e in extra if isinstance(e, dict)
    ):
        return problem(400, "malformed_json", "The request body is not valid JSON.")
    return problem(422, "validation_failed", detail, errors=extra or None)


def _caused_by_body_decoding(exc: BaseException) -> bool:
    """True when ``exc`` comes from decoding the request body: Litestar turns a
    ``msgspec.DecodeError`` into ``SerializationException`` → ``ClientException`` (400), but
    lets a ``UnicodeDecodeError`` (invalid UTF-8) or a ``RecursionError`` (absurdly deep
    nesting) from the same decoder through."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SerializationException):
            return True
        tb = seen.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_name in ("decode_json", "decode_msgpack") and "litestar" in code.co_filename:
                return True
            tb = tb.tb_next
        seen = seen.__cause__
    return False


def _malformed() -> Response[Any]:
    return problem(400, "malformed_json", "The request body is not valid JSON.")


def _http_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        429: "too_many_requests",
        503: "unavailable",
    }
    status = exc.status_code
    code = codes.get(status, "error" if status < 500 else "internal_error")
    detail = str(exc.detail)
    if status == 400 and ("json" in detail.lower() or _caused_by_body_decoding(exc)):
        code = "malformed_json"
    return problem(status, code, detail, headers=exc.headers)


def _rate_limited_handler(_: Request[Any, Any, Any], exc: RateLimited) -> Response[Any]:
    return problem(429, "rate_limited", str(exc), headers={"Retry-After": str(exc.retry_after)})


def _lag_handler(_: Request[Any, Any, Any], exc: ReadModelLag) -> Response[Any]:
    return problem(503, "read_model_lag", "The read models are behind; try again in a moment.")


def _internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, (UnicodeDecodeError, RecursionError)) and _caused_by_body_decoding(exc):
        return _malformed()
    if database_down(exc):
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return _api_handler(request, DatabaseUnavailable())
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "Something went wrong.")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    d.DomainError: _domain_handler,
    ContentRejected: _content_rejected_handler,
    ContentCheckUnavailable: _retry_later_handler,
    WeChatQuotaExceeded: _retry_later_handler,
    ApiError: _api_handler,
    ReadModelLag: _lag_handler,
    RateLimited: _rate_limited_handler,
    ValidationException: _validation_handler,
    NotAuthorizedException: _http_handler,
    PermissionDeniedException: _http_handler,
    NotFoundException: _http_handler,
    HTTPException: _http_handler,
    Exception: _internal_handler,
}

__all__ = [
    "ApiError",
    "DatabaseUnavailable",
    "database_down",
    "EXCEPTION_HANDLERS",
    "MediaType",
    "Problem",
    "Unauthorized",
    "domain_status_of",
    "problem",
]
