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
All times come from the database clock (``now()``), but for the cache's expiry check below.

The session cache (``SessionCache``, off unless ``enable()``-d): a live session found in the
database is remembered for ``ttl`` seconds (``LIUDONG_SESSION_CACHE_TTL``, 5 s), so a
client's next requests skip the lookup. Revocation still wins: a revoke on this node drops
the entry at once, and the composition root drops the entries named by every revocation
message (``liudong.sessions.revoked`` on NATS) and turns the cache off while NATS is
disconnected (a message missed then cannot keep a revoked session alive). An entry never
outlives its session's ``expires_at`` (this machine's clock).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
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
    "SessionCache",
    "SessionStore",
    "SessionStoreUnavailable",
    "UnknownToken",
    "Authenticated",
    "InvalidTicket",
    "hash_token",
    "is_well_formed",
    "session_id",
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
    ``expires_at`` (timezone-aware UTC datetime, from the database clock). ``evicted``: the
    session ids (``session_id``) of the reader's oldest sessions revoked to keep at most
    ``max_sessions`` live (close their sockets). ``replaced``: the session ids of the
    reader's other sessions revoked because of ``replace_others`` (single-device mode:
    their sockets get ``session_replaced``)."""

    token: str
    expires_at: datetime
    evicted: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"IssuedToken(token='{self.token[:6]}…', expires_at={self.expires_at!r})"


def is_well_formed(token: object) -> bool:
    """True when ``token`` has the shape of one of ours: ``ld_`` + 43 base64url chars."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


def hash_token(token: str) -> bytes:
    """``sha256(token as UTF-8)``: 32 bytes, the primary key of ``sessions``."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def session_id(digest: bytes) -> str:
    """The public name of a session (``sha256("liudong-session:" + token_hash)``, 32 hex
    characters): what the gateway keeps per socket and what a revocation on NATS carries.
    Neither the token nor its hash (the table's key) can be recovered from it."""
    return hashlib.sha256(b"liudong-session:" + digest).hexdigest()[:32]


class Authenticated(msgspec.Struct, frozen=True, kw_only=True):
    """A live session: its reader, its ``session_id`` and when it expires."""

    reader_id: UUID
    session_id: str
    expires_at: datetime


TICKET_PREFIX = "lt_"
_TICKET_RE = re.compile(re.escape(TICKET_PREFIX) + rf"[A-Za-z0-9_\-]{{{_TOKEN_BODY_LENGTH}}}")
TICKET_TTL = 30  # seconds a WebSocket ticket lives (≤ 60)


class InvalidTicket(InvalidSession):
    """Unknown, used or expired WebSocket ticket (they are deleted when used)."""

    code = "invalid_ticket"


def new_token() -> str:
    """A fresh token: ``"ld_" + secrets.token_urlsafe(32)`` (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


class SessionCache:
    """Live sessions by token hash for ``ttl`` seconds (at most ``maxsize`` entries, the
    least recently used dropped first). Thread-safe. Starts disabled: ``get`` finds nothing
    and ``put`` keeps nothing until ``enable()`` (the composition root enables it once it
    hears revocations on NATS, and ``disable()``s it while it cannot)."""

    def __init__(self, ttl: float = 5.0, maxsize: int = 100_000) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self.enabled = False
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, Authenticated]] = OrderedDict()
        self._by_session: dict[str, bytes] = {}
        self._generation = 0  # bumped by every forget/disable: a lookup racing one is not kept

    @property
    def generation(self) -> int:
        return self._generation

    def enable(self) -> None:
        self.enabled = self.ttl > 0

    def disable(self) -> None:
        with self._lock:
            self.enabled = False
            self._generation += 1
            self._entries.clear()
            self._by_session.clear()

    def get(self, digest: bytes) -> Authenticated | None:
        """The cached live session of ``digest``, if fresh and not past its expiry."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                self.misses += 1
                return None
            until, auth = entry
            if time.monotonic() >= until or datetime.now(UTC) >= auth.expires_at:
                del self._entries[digest]
                self._by_session.pop(auth.session_id, None)
                self.misses += 1
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            return auth

    def put(self, digest: bytes, auth: Authenticated, generation: int) -> None:
        """Remember ``auth`` unless a ``forget``/``disable`` happened since ``generation``
        (read before the lookup that found it)."""
        if not self.enabled:
            return
        with self._lock:
            if generation != self._generation:
                return
            self._entries[digest] = (time.monotonic() + self.ttl, auth)
            self._entries.move_to_end(digest)
            self._by_session[auth.session_id] = digest
            while len(self._entries) > self.maxsize:
                _, (_, old) = self._entries.popitem(last=False)
                self._by_session.pop(old.session_id, None)

    def forget(self, session_ids: Iterable[str]) -> None:
        """Drop the entries of these sessions (``session_id``): they were revoked."""
        with self._lock:
            self._generation += 1
            for sid in session_ids:
                digest = self._by_session.pop(sid, None)
                if digest is not None:
                    self._entries.pop(digest, None)

    def forget_reader(self, reader_id: UUID) -> None:
        """Drop every entry of ``reader_id`` (all its sessions were revoked)."""
        with self._lock:
            self._generation += 1
            for digest, (_, auth) in list(self._entries.items()):
                if auth.reader_id == reader_id:
                    del self._entries[digest]
                    self._by_session.pop(auth.session_id, None)


class SessionStore:
    """Sessions in PostgreSQL table ``sessions``.

    ``pool``: an open ``psycopg_pool.ConnectionPool`` with ``dict_row`` rows
    (``api.bootstrap.db.make_pool``); ``cache``: a ``SessionCache`` (a disabled one by
    default).
    Every method runs one short transaction and raises ``SessionStoreUnavailable`` when the
    database cannot be reached."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        token_factory: Callable[[], str] = new_token,
        cache: SessionCache | None = None,
        read_pool: ConnectionPool | None = None,
    ):
        self._pool = pool
        self._read_pool = read_pool or pool  # autocommit: a lookup is one round trip
        self._new_token = token_factory
        self.cache = cache or SessionCache()

    def _run(
        self, work: Callable[[psycopg.Connection[Any]], T], pool: ConnectionPool | None = None
    ) -> T:
        try:
            with (pool or self._pool).connection() as conn:
                return work(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SessionStoreUnavailable(f"session store unavailable: {exc}") from exc

    def issue(
        self,
        reader_id: UUID,
        ttl_seconds: int,
        *,
        max_sessions: int | None = None,
        replace_others: bool = False,
    ) -> IssuedToken:
        """Create a session for ``reader_id`` valid ``ttl_seconds`` seconds (> 0; typically
        ``Settings.token_ttl``). Returns the plain token (stored only as its hash) and its
        expiry. With ``replace_others`` (``LIUDONG_SINGLE_DEVICE``) every other live session
        of the reader is revoked in the same transaction (``IssuedToken.replaced``); else
        those beyond ``max_sessions`` are (``IssuedToken.evicted``). Raises ``ValueError``
        for a non-positive ttl."""
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be a positive integer, not {ttl_seconds!r}")
        token = self._new_token()
        if not is_well_formed(token):
            raise ValueError("token_factory made a token of the wrong shape")

        def work(
            conn: psycopg.Connection[Any],
        ) -> tuple[datetime, tuple[str, ...], tuple[str, ...]]:
            row = conn.execute(
                "INSERT INTO sessions (token_hash, reader_id, created_at, expires_at, "
                "last_seen_at) VALUES (%s, %s, now(), now() + make_interval(secs => %s), now()) "
                "RETURNING expires_at",
                (hash_token(token), reader_id, ttl_seconds),
            ).fetchone()
            assert row is not None
            expires_at: datetime = row["expires_at"]
            evicted: tuple[str, ...] = ()
            if replace_others:
                rows = conn.execute(
                    "UPDATE sessions SET revoked_at = now() WHERE reader_id = %s"
                    " AND token_hash <> %s AND revoked_at IS NULL AND expires_at > now() "
                    "RETURNING token_hash",
                    (reader_id, hash_token(token)),
                ).fetchall()
                replaced = tuple(session_id(bytes(r["token_hash"])) for r in rows)
                return expires_at, evicted, replaced
            if max_sessions is not None:
                # the oldest live sessions beyond max_sessions (this new one is the newest)
                rows = conn.execute(
                    "UPDATE sessions SET revoked_at = now() WHERE token_hash IN ("
                    " SELECT token_hash FROM sessions WHERE reader_id = %s"
                    " AND revoked_at IS NULL AND expires_at > now()"
                    " ORDER BY created_at DESC, token_hash OFFSET %s FOR UPDATE) "
                    "RETURNING token_hash",
                    (reader_id, max_sessions),
                ).fetchall()
                evicted = tuple(session_id(bytes(r["token_hash"])) for r in rows)
            return expires_at, evicted, ()

        expires_at, evicted, replaced = self._run(work)
        if evicted or replaced:
            self.cache.forget((*evicted, *replaced))
        return IssuedToken(token=token, expires_at=expires_at, evicted=evicted, replaced=replaced)

    def authenticate(self, token: str) -> UUID:
        """The reader id of a live session. Raises ``MalformedToken`` (no query),
        ``UnknownToken``, ``RevokedToken`` or ``ExpiredToken`` (checked in that order), or
        ``SessionStoreUnavailable``. Refreshes ``last_seen_at`` at most every 5 minutes.

        Lookup is by hash (the primary key), so no constant-time comparison is needed."""
        return self.authenticate_session(token).reader_id

    def authenticate_session(self, token: str) -> Authenticated:
        """``authenticate`` with the session's id and expiry (the WebSocket keeps them)."""
        if not is_well_formed(token):
            raise MalformedToken("not a Liudong session token")
        return self._authenticate_digest(hash_token(token))

    def _authenticate_digest(self, digest: bytes) -> Authenticated:
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        generation = self.cache.generation

        def work(conn: psycopg.Connection[Any]) -> tuple[UUID, bool, bool, datetime]:
            row = conn.execute(
                "SELECT reader_id, revoked_at IS NOT NULL AS revoked, "
                "expires_at <= now() AS expired, last_seen_at < now() - %s AS stale, "
                "expires_at FROM sessions WHERE token_hash = %s",
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
            return reader_id, revoked, expired, row["expires_at"]

        reader_id, revoked, expired, expires_at = self._run(work, self._read_pool)
        if revoked:
            raise RevokedToken("this session was revoked (logged out)")
        if expired:
            raise ExpiredToken("this session has expired; log in again")
        auth = Authenticated(
            reader_id=reader_id, session_id=session_id(digest), expires_at=expires_at
        )
        self.cache.put(digest, auth, generation)
        return auth

    def issue_ticket(self, token: str, ttl_seconds: int = TICKET_TTL) -> str:
        """A single-use WebSocket ticket for the live session of ``token`` (checked first:
        raises like ``authenticate``), valid ``ttl_seconds`` (1..60). Stored hashed."""
        if not 0 < ttl_seconds <= 60:
            raise ValueError("a ticket lives 1 to 60 seconds")
        self.authenticate_session(token)
        ticket = TICKET_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("DELETE FROM ws_tickets WHERE expires_at < now() - interval '1 minute'")
            conn.execute(
                "INSERT INTO ws_tickets (ticket_hash, token_hash, expires_at) "
                "VALUES (%s, %s, now() + make_interval(secs => %s))",
                (hash_token(ticket), hash_token(token), ttl_seconds),
            )

        self._run(work)
        return ticket

    def redeem_ticket(self, ticket: str) -> Authenticated:
        """The session of a WebSocket ticket, which is used up (deleted) by this call.
        Raises ``InvalidTicket`` (malformed, unknown, used or expired), then like
        ``authenticate`` for the session it stands for."""
        if not isinstance(ticket, str) or _TICKET_RE.fullmatch(ticket) is None:
            raise InvalidTicket("not a Liudong WebSocket ticket")

        def work(conn: psycopg.Connection[Any]) -> bytes | None:
            row = conn.execute(
                "DELETE FROM ws_tickets WHERE ticket_hash = %s "
                "RETURNING token_hash, expires_at > now() AS live",
                (hash_token(ticket),),
            ).fetchone()
            if row is None or not row["live"]:
                return None
            return bytes(row["token_hash"])

        digest = self._run(work)
        if digest is None:
            raise InvalidTicket("unknown, used or expired WebSocket ticket; ask for a new one")
        return self._authenticate_digest(digest)

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

        revoked = self._run(work)
        # after the commit: a lookup that began before it is not cached (generation)
        self.cache.forget([session_id(hash_token(token))])
        return revoked

    def revoke_all(self, reader_id: UUID) -> int:
        """Revoke every unrevoked session of ``reader_id`` (all devices; also on erasure).
        Returns how many were revoked."""
        return len(self.revoke_all_ids(reader_id))

    def revoke_all_ids(self, reader_id: UUID) -> list[str]:
        """``revoke_all``, returning the ``session_id`` of each session it revoked."""

        def work(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                "UPDATE sessions SET revoked_at = now() "
                "WHERE reader_id = %s AND revoked_at IS NULL RETURNING token_hash",
                (reader_id,),
            ).fetchall()
            return [session_id(bytes(r["token_hash"])) for r in rows]

        ids = self._run(work)
        self.cache.forget_reader(reader_id)
        return ids

    def sessions_of(self, reader_id: UUID, *, limit: int = 100) -> list[dict[str, Any]]:
        """The sessions of ``reader_id``, newest first (at most ``limit``), for an operator:
        ``{"session_id", "created_at", "last_seen_at", "expires_at", "revoked_at", "live"}``
        (``session_id`` as ``session_id()`` names it; neither the token nor its hash)."""

        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT token_hash, created_at, last_seen_at, expires_at, revoked_at, "
                "revoked_at IS NULL AND expires_at > now() AS live FROM sessions "
                "WHERE reader_id = %s ORDER BY created_at DESC, token_hash LIMIT %s",
                (reader_id, limit),
            ).fetchall()
            return [
                {
                    "session_id": session_id(bytes(r["token_hash"])),
                    "created_at": r["created_at"],
                    "last_seen_at": r["last_seen_at"],
                    "expires_at": r["expires_at"],
                    "revoked_at": r["revoked_at"],
                    "live": bool(r["live"]),
                }
                for r in rows
            ]

        return self._run(work)

    def revoke_session(self, reader_id: UUID, sid: str) -> bool:
        """Revoke the live session of ``reader_id`` named ``sid`` (``session_id``), as an
        operator does. True if it was live and is now revoked; False for no such live session.
        (The id is a one-way name: the reader's sessions are matched one by one, at most
        ``LIUDONG_MAX_SESSIONS`` live ones.)"""

        def work(conn: psycopg.Connection[Any]) -> bool:
            rows = conn.execute(
                "SELECT token_hash FROM sessions WHERE reader_id = %s AND revoked_at IS NULL "
                "AND expires_at > now()",
                (reader_id,),
            ).fetchall()
            for r in rows:
                digest = bytes(r["token_hash"])
                if session_id(digest) == sid:
                    cur = conn.execute(
                        "UPDATE sessions SET revoked_at = now() "
                        "WHERE token_hash = %s AND revoked_at IS NULL",
                        (digest,),
                    )
                    return cur.rowcount == 1
            return False

        revoked: bool = self._run(work)
        if revoked:
            self.cache.forget([sid])
        return revoked

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
