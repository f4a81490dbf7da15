"""Session tokens: random, opaque, hashed at rest, expiring and revocable.

The old backends used the WeChat openId itself as the session id (anyone knowing an openId
could act as that user). A token here is ``"ld_" + secrets.token_urlsafe(32)``: 256 random
bits, 46 ASCII characters, sent as ``Authorization: Bearer <token>``. The table ``sessions``
(migration ``0004_sessions``) stores only ``sha256(token)``; the plain token exists only in
the login response.

Exception hierarchy (each class has a stable ``code`` string)::

    SessionError
    ├── InvalidSession              (→ HTTP 401)
    │   ├── MalformedToken          "malformed_token"   wrong prefix, length or alphabet; no query
    │   ├── UnknownToken            "unknown_token"     no such token (or purged)
    │   ├── ExpiredToken            "token_expired"     past its expires_at
    │   └── RevokedToken            "token_revoked"     logged out / revoked
    └── SessionStoreUnavailable     "session_store_unavailable"   (→ HTTP 503) the database
                                                        could not be reached (psycopg
                                                        OperationalError, pool timeout)

psycopg errors are translated once, in ``SessionStore._run``, with ``raise ... from exc``.
Methods are synchronous (psycopg pool); call them from a thread (``sync_to_thread=True``).
All times come from the database clock (``now()``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import msgspec
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

__all__ = [
    "TOKEN_PREFIX",
    "ExpiredToken",
    "InvalidSession",
    "IssuedToken",
    "MalformedToken",
    "RevokedToken",
    "SessionError",
    "SessionStore",
    "SessionStoreUnavailable",
    "UnknownToken",
    "hash_token",
    "is_well_formed",
]

TOKEN_PREFIX = "ld_"
TOKEN_BYTES = 32  # 256 bits of entropy
_TOKEN_BODY_LENGTH = 43  # len(base64url(32 bytes)) without padding
_TOKEN_RE = re.compile(re.escape(TOKEN_PREFIX) + rf"[A-Za-z0-9_\-]{{{_TOKEN_BODY_LENGTH}}}")
TOKEN_LENGTH = len(TOKEN_PREFIX) + _TOKEN_BODY_LENGTH  # 46

# last_seen_at is refreshed at most this often per token (avoid a write per request)
LAST_SEEN_GRANULARITY = timedelta(minutes=5)

T = TypeVar("T")


class SessionError(Exception):
    code: ClassVar[str] = "session_error"


class InvalidSession(SessionError):
    """The bearer token does not authenticate anyone (answer 401)."""

    code = "invalid_token"


class MalformedToken(InvalidSession):
    code = "malformed_token"


class UnknownToken(InvalidSession):
    code = "unknown_token"


class ExpiredToken(InvalidSession):
    code = "token_expired"


class RevokedToken(InvalidSession):
    code = "token_revoked"


class SessionStoreUnavailable(SessionError):
    """The database is unreachable (answer 503, retryable)."""

    code = "session_store_unavailable"


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A new session: ``token`` (give it to the client, once; never log it) and
    ``expires_at`` (timezone-aware UTC datetime, from the database clock)."""

    token: str
    expires_at: datetime

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"IssuedToken(token='{self.token[:6]}…', expires_at={self.expires_at!r})"


def is_well_formed(token: object) -> bool:
    """True when ``token`` has the shape of one of ours: ``ld_`` + 43 base64url chars."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


def hash_token(token: str) -> bytes:
    """``sha256(token as UTF-8)``: 32 bytes, the primary key of ``sessions``."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    """A fresh token: ``"ld_" + secrets.token_urlsafe(32)`` (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


class SessionStore:
    """Sessions in PostgreSQL table ``sessions``.

    ``pool``: an open ``psycopg_pool.ConnectionPool`` with ``dict_row`` rows
    (``api.bootstrap.db.make_pool``).
    Every method runs one short transaction and raises ``SessionStoreUnavailable`` when the
    database cannot be reached."""

    def __init__(self, pool: ConnectionPool, *, token_factory: Callable[[], str] = new_token):
        self._pool = pool
        self._new_token = token_factory

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            with self._pool.connection() as conn:
                return work(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SessionStoreUnavailable(f"session store unavailable: {exc}") from exc

    def issue(self, reader_id: UUID, ttl_seconds: int) -> IssuedToken:
        """Create a session for ``reader_id`` valid ``ttl_seconds`` seconds (> 0; typically
        ``Settings.token_ttl``). Returns the plain token (stored only as its hash) and its
        expiry. Raises ``ValueError`` for a non-positive ttl."""
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be a positive integer, not {ttl_seconds!r}")
        token = self._new_token()
        if not is_well_formed(token):
            raise ValueError("token_factory made a token of the wrong shape")

        def work(conn: psycopg.Connection[Any]) -> datetime:
            row = conn.execute(
                "INSERT INTO sessions (token_hash, reader_id, created_at, expires_at, "
                "last_seen_at) VALUES (%s, %s, now(), now() + make_interval(secs => %s), now()) "
                "RETURNING expires_at",
                (hash_token(token), reader_id, ttl_seconds),
            ).fetchone()
            assert row is not None
            expires_at: datetime = row["expires_at"]
            return expires_at

        return IssuedToken(token=token, expires_at=self._run(work))

    def authenticate(self, token: str) -> UUID:
        """The reader id of a live session. Raises ``MalformedToken`` (no query),
        ``UnknownToken``, ``RevokedToken`` or ``ExpiredToken`` (checked in that order), or
        ``SessionStoreUnavailable``. Refreshes ``last_seen_at`` at most every 5 minutes.

        Lookup is by hash (the primary key), so no constant-time comparison is needed."""
        if not is_well_formed(token):
            raise MalformedToken("not a Liudong session token")
        digest = hash_token(token)

        def work(conn: psycopg.Connection[Any]) -> tuple[UUID, bool, bool, bool]:
            row = conn.execute(
                "SELECT reader_id, revoked_at IS NOT NULL AS revoked, "
                "expires_at <= now() AS expired, last_seen_at < now() - %s AS stale "
                "FROM sessions WHERE token_hash = %s",
                (LAST_SEEN_GRANULARITY, digest),
            ).fetchone()
            if row is None:
                raise UnknownToken("unknown session token")
            reader_id, revoked, expired, stale = (
                row["reader_id"],
                row["revoked"],
                row["expired"],
                row["stale"],
            )
            if stale and not revoked and not expired:
                conn.execute(
                    "UPDATE sessions SET last_seen_at = now() WHERE token_hash = %s", (digest,)
                )
            return reader_id, revoked, expired, stale

        reader_id, revoked, expired, _ = self._run(work)
        if revoked:
            raise RevokedToken("this session was revoked (logged out)")
        if expired:
            raise ExpiredToken("this session has expired; log in again")
        return reader_id

    def revoke(self, token: str) -> bool:
        """Revoke one session (logout). Returns True if a live (unrevoked) session was revoked,
        False for an unknown, malformed or already revoked token (idempotent)."""
        if not is_well_formed(token):
            return False

        def work(conn: psycopg.Connection[Any]) -> bool:
            cur = conn.execute(
                "UPDATE sessions SET revoked_at = now() "
                "WHERE token_hash = %s AND revoked_at IS NULL",
                (hash_token(token),),
            )
            return cur.rowcount == 1

        return self._run(work)

    def revoke_all(self, reader_id: UUID) -> int:
        """Revoke every unrevoked session of ``reader_id`` (all devices; also on erasure).
        Returns how many were revoked."""

        def work(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "UPDATE sessions SET revoked_at = now() "
                "WHERE reader_id = %s AND revoked_at IS NULL",
                (reader_id,),
            )
            return cur.rowcount

        return self._run(work)

    def purge_expired(self, older_than: timedelta = timedelta(0)) -> int:
        """Delete sessions expired or revoked more than ``older_than`` ago (a grace period in
        which a client still gets "expired"/"revoked" instead of "unknown"). Returns how many
        rows were deleted. Raises ``ValueError`` for a negative ``older_than``."""
        if older_than < timedelta(0):
            raise ValueError("older_than must not be negative")

        def work(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "DELETE FROM sessions WHERE expires_at < now() - %s OR revoked_at < now() - %s",
                (older_than, older_than),
            )
            return cur.rowcount

        return self._run(work)
