"""Session tokens against the real PostgreSQL (table from migration 0004_sessions)."""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from api.adapters.sessions import (
    TOKEN_LENGTH,
    ExpiredToken,
    InvalidSession,
    IssuedToken,
    MalformedToken,
    RevokedToken,
    SessionCache,
    SessionStore,
    UnknownToken,
    hash_token,
    is_well_formed,
)
from api.bootstrap.db import connect, make_pool

TTL = 3600


@pytest.fixture(scope="module")
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = make_pool(database_url, size=2, name="test-sessions")
    yield pool
    pool.close()


@pytest.fixture
def store(pool: ConnectionPool) -> SessionStore:
    return SessionStore(pool)


def rows_of(database_url: str, reader_id: uuid.UUID) -> list[dict[str, object]]:
    with connect(database_url) as conn:
        return conn.execute(
            "SELECT * FROM sessions WHERE reader_id = %s ORDER BY created_at", (reader_id,)
        ).fetchall()


def test_issue_then_authenticate(store: SessionStore) -> None:
    reader = uuid.uuid4()
    before = datetime.now(UTC)
    issued = store.issue(reader, TTL)
    assert isinstance(issued, IssuedToken)
    assert issued.token.startswith("ld_")
    assert issued.expires_at.tzinfo is not None
    # database clock vs ours: allow a little skew
    assert abs((issued.expires_at - before).total_seconds() - TTL) < 60
    assert store.authenticate(issued.token) == reader
    assert store.authenticate(issued.token) == reader


def test_tokens_are_distinct_and_carry_at_least_128_bits(store: SessionStore) -> None:
    reader = uuid.uuid4()
    tokens = [store.issue(reader, TTL).token for _ in range(20)]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert len(token) == TOKEN_LENGTH == 46
        assert is_well_formed(token)
        body = token.removeprefix("ld_")
        bits = len(body) * math.log2(64)  # base64url: 6 bits per character
        assert bits >= 256 - 6  # token_urlsafe(32): 43 chars carry the 256 random bits
        assert bits >= 128


def test_only_the_hash_is_stored(store: SessionStore, database_url: str) -> None:
    reader = uuid.uuid4()
    issued = store.issue(reader, TTL)
    [row] = rows_of(database_url, reader)
    assert bytes(row["token_hash"]) == hashlib.sha256(issued.token.encode()).digest()
    assert bytes(row["token_hash"]) == hash_token(issued.token)
    assert row["revoked_at"] is None
    assert row["expires_at"] == issued.expires_at
    with connect(database_url) as conn:
        [dump] = (
            conn.execute("SELECT string_agg(s::text, ' ') AS text FROM sessions s")
            .fetchone()
            .values()
        )  # type: ignore[union-attr]
    assert issued.token not in dump
    assert issued.token.removeprefix("ld_") not in dump
    assert issued.token.encode().hex() not in dump
    assert issued.token not in repr(issued)


def test_expired_token(store: SessionStore, database_url: str) -> None:
    reader = uuid.uuid4()
    issued = store.issue(reader, 1)
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = %s",
            (hash_token(issued.token),),
        )
    with pytest.raises(ExpiredToken) as caught:
        store.authenticate(issued.token)
    assert caught.value.code == "token_expired"
    assert isinstance(caught.value, InvalidSession)


def test_revoke_one(store: SessionStore, database_url: str) -> None:
    reader = uuid.uuid4()
    kept, gone = store.issue(reader, TTL), store.issue(reader, TTL)
    assert store.revoke(gone.token) is True
    assert store.revoke(gone.token) is False  # idempotent
    with pytest.raises(RevokedToken) as caught:
        store.authenticate(gone.token)
    assert caught.value.code == "token_revoked"
    assert store.authenticate(kept.token) == reader
    revoked = [r for r in rows_of(database_url, reader) if r["revoked_at"] is not None]
    assert len(revoked) == 1


def test_revoke_all(store: SessionStore) -> None:
    reader, other = uuid.uuid4(), uuid.uuid4()
    mine = [store.issue(reader, TTL) for _ in range(3)]
    theirs = store.issue(other, TTL)
    store.revoke(mine[0].token)
    assert store.revoke_all(reader) == 2
    assert store.revoke_all(reader) == 0
    for issued in mine:
        with pytest.raises(RevokedToken):
            store.authenticate(issued.token)
    assert store.authenticate(theirs.token) == other


def test_revoked_wins_over_expired(store: SessionStore, database_url: str) -> None:
    issued = store.issue(uuid.uuid4(), 1)
    store.revoke(issued.token)
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE sessions SET expires_at = now() - interval '1 hour' WHERE token_hash = %s",
            (hash_token(issued.token),),
        )
    with pytest.raises(RevokedToken):
        store.authenticate(issued.token)


def test_unknown_token(store: SessionStore) -> None:
    token = "ld_" + "A" * 43
    assert is_well_formed(token)
    with pytest.raises(UnknownToken) as caught:
        store.authenticate(token)
    assert caught.value.code == "unknown_token"
    assert store.revoke(token) is False


class ExplodingPool:
    """A pool that fails the test if anyone asks it for a connection."""

    def connection(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("a malformed token must be refused without a database query")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ld_",
        "ld_" + "A" * 42,
        "ld_" + "A" * 44,
        "xx_" + "A" * 43,
        "LD_" + "A" * 43,
        "A" * 46,
        "ld_" + "A" * 42 + "=",
        "ld_" + "A" * 42 + "+",
        "ld_" + "A" * 42 + "/",
        "ld_" + "A" * 42 + "é",
        "ld_" + "A" * 42 + " ",
        "ld_" + "A" * 43 + "\n",
        "Bearer ld_" + "A" * 43,
    ],
)
def test_malformed_tokens_are_refused_without_a_query(token: str) -> None:
    store = SessionStore(ExplodingPool())  # type: ignore[arg-type]
    with pytest.raises(MalformedToken) as caught:
        store.authenticate(token)
    assert caught.value.code == "malformed_token"
    assert isinstance(caught.value, InvalidSession)
    assert store.revoke(token) is False


def test_ttl_must_be_positive(store: SessionStore) -> None:
    for ttl in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            store.issue(uuid.uuid4(), ttl)  # type: ignore[arg-type]


def test_last_seen_is_refreshed_at_most_every_few_minutes(
    store: SessionStore, database_url: str
) -> None:
    reader = uuid.uuid4()
    issued = store.issue(reader, TTL)
    digest = hash_token(issued.token)
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE sessions SET last_seen_at = now() - interval '1 hour' WHERE token_hash = %s",
            (digest,),
        )
    store.authenticate(issued.token)
    [row] = rows_of(database_url, reader)
    assert row["last_seen_at"] > datetime.now(UTC) - timedelta(minutes=1)
    with connect(database_url) as conn:
        conn.execute(
            "UPDATE sessions SET last_seen_at = now() - interval '1 minute' WHERE token_hash = %s",
            (digest,),
        )
        recent = conn.execute(
            "SELECT last_seen_at FROM sessions WHERE token_hash = %s", (digest,)
        ).fetchone()
    store.authenticate(issued.token)
    [row] = rows_of(database_url, reader)
    assert recent is not None and row["last_seen_at"] == recent["last_seen_at"]


def test_purge_expired(store: SessionStore, database_url: str) -> None:
    reader = uuid.uuid4()
    live = store.issue(reader, TTL)
    old_expired = store.issue(reader, 1)
    recently_expired = store.issue(reader, 1)
    old_revoked = store.issue(reader, TTL)
    with connect(database_url) as conn:
        for issued, column, age in (
            (old_expired, "expires_at", "2 days"),
            (recently_expired, "expires_at", "1 minute"),
            (old_revoked, "revoked_at", "2 days"),
        ):
            conn.execute(
                f"UPDATE sessions SET {column} = now() - interval '{age}' WHERE token_hash = %s",
                (hash_token(issued.token),),
            )
    assert store.purge_expired(timedelta(days=1)) >= 2
    with pytest.raises(UnknownToken):
        store.authenticate(old_expired.token)
    with pytest.raises(UnknownToken):
        store.authenticate(old_revoked.token)
    with pytest.raises(ExpiredToken):  # still in its grace period
        store.authenticate(recently_expired.token)
    assert store.authenticate(live.token) == reader
    with pytest.raises(ValueError):
        store.purge_expired(timedelta(seconds=-1))


def test_schema(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'sessions'"
            ).fetchall()
        )
        indexes = {
            r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename='sessions'")
        }
    assert columns == {
        "token_hash": "bytea",
        "reader_id": "uuid",
        "created_at": "timestamp with time zone",
        "expires_at": "timestamp with time zone",
        "revoked_at": "timestamp with time zone",
        "last_seen_at": "timestamp with time zone",
    }
    assert any("(reader_id)" in d for d in indexes)


def test_a_ws_ticket_is_stored_hashed_and_works_once(
    store: SessionStore, database_url: str
) -> None:
    from api.adapters.sessions import InvalidTicket, session_id

    reader = uuid.uuid4()
    issued = store.issue(reader, 3600)
    ticket = store.issue_ticket(issued.token)
    assert ticket.startswith("lt_") and len(ticket) == 46
    with connect(database_url) as conn:
        stored = conn.execute("SELECT ticket_hash FROM ws_tickets").fetchall()
    hashes = [bytes(r["ticket_hash"]) for r in stored]
    assert hashlib.sha256(ticket.encode()).digest() in hashes
    assert not any(ticket.encode() in h for h in hashes)
    session = store.redeem_ticket(ticket)
    assert session.reader_id == reader
    assert session.session_id == session_id(hashlib.sha256(issued.token.encode()).digest())
    assert session.session_id == store.authenticate_session(issued.token).session_id
    with pytest.raises(InvalidTicket):
        store.redeem_ticket(ticket)  # used up
    with pytest.raises(InvalidTicket):
        store.redeem_ticket("lt_" + "x" * 43)
    with pytest.raises(ValueError):
        store.issue_ticket(issued.token, 61)


def test_a_ticket_expires_and_a_ticket_of_a_revoked_session_is_refused(
    store: SessionStore,
) -> None:
    import time

    from api.adapters.sessions import InvalidTicket

    issued = store.issue(uuid.uuid4(), 3600)
    short = store.issue_ticket(issued.token, 1)
    time.sleep(1.1)
    with pytest.raises(InvalidTicket):
        store.redeem_ticket(short)
    ticket = store.issue_ticket(issued.token)
    assert store.revoke(issued.token)
    with pytest.raises(RevokedToken):
        store.redeem_ticket(ticket)
    with pytest.raises(RevokedToken):
        store.issue_ticket(issued.token)


def test_beyond_max_sessions_the_oldest_are_revoked_and_named(store: SessionStore) -> None:
    from api.adapters.sessions import session_id

    reader = uuid.uuid4()
    tokens = [store.issue(reader, 3600, max_sessions=3).token for _ in range(3)]
    fourth = store.issue(reader, 3600, max_sessions=3)
    assert fourth.evicted == (session_id(hashlib.sha256(tokens[0].encode()).digest()),)
    with pytest.raises(RevokedToken):
        store.authenticate(tokens[0])
    for token in (*tokens[1:], fourth.token):
        assert store.authenticate(token) == reader
    ids = store.revoke_all_ids(reader)
    assert len(ids) == 3 and fourth.evicted[0] not in ids


def test_replace_others_revokes_every_other_live_session_of_the_reader(
    store: SessionStore,
) -> None:
    from api.adapters.sessions import session_id

    reader, other_reader = uuid.uuid4(), uuid.uuid4()
    old = [store.issue(reader, 3600).token for _ in range(2)]
    kept = store.issue(other_reader, 3600).token
    new = store.issue(reader, 3600, max_sessions=10, replace_others=True)
    assert sorted(new.replaced) == sorted(
        session_id(hashlib.sha256(t.encode()).digest()) for t in old
    )
    assert new.evicted == ()
    for token in old:
        with pytest.raises(RevokedToken):
            store.authenticate(token)
    assert store.authenticate(new.token) == reader
    assert store.authenticate(kept) == other_reader  # another reader is untouched
    again = store.issue(reader, 3600, replace_others=True)
    assert again.replaced == (session_id(hashlib.sha256(new.token.encode()).digest()),)


# -- the session cache ------------------------------------------------------------------------


@pytest.fixture
def cached(pool: ConnectionPool) -> SessionStore:
    store = SessionStore(pool, cache=SessionCache(ttl=5.0))
    store.cache.enable()
    return store


def _revoke_elsewhere(database_url: str, token: str) -> None:
    """Another node's logout: the row changes, this store's cache is not told."""
    with connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE token_hash = %s", (hash_token(token),)
        )


def test_a_cached_session_needs_no_lookup_until_a_revocation_names_it(
    cached: SessionStore, database_url: str
) -> None:
    reader = uuid.uuid4()
    token = cached.issue(reader, TTL).token
    auth = cached.authenticate_session(token)
    hits = cached.cache.hits
    _revoke_elsewhere(database_url, token)
    # the row says revoked, the cache (within its ttl) does not look: the NATS message is
    # what ends it on this node
    assert cached.authenticate(token) == reader
    assert cached.cache.hits == hits + 1
    cached.cache.forget([auth.session_id])  # liudong.sessions.revoked names it
    with pytest.raises(RevokedToken):
        cached.authenticate(token)


def test_a_revoke_on_this_node_is_refused_at_once(cached: SessionStore) -> None:
    reader = uuid.uuid4()
    one, two = cached.issue(reader, TTL).token, cached.issue(reader, TTL).token
    assert cached.authenticate(one) == reader and cached.authenticate(two) == reader
    assert cached.revoke(one)
    with pytest.raises(RevokedToken):
        cached.authenticate(one)
    assert cached.authenticate(two) == reader
    cached.revoke_all(reader)
    with pytest.raises(RevokedToken):
        cached.authenticate(two)


def test_an_evicted_session_is_refused_at_once(cached: SessionStore) -> None:
    reader = uuid.uuid4()
    oldest = cached.issue(reader, TTL).token
    assert cached.authenticate(oldest) == reader
    cached.issue(reader, TTL, max_sessions=1)
    with pytest.raises(RevokedToken):
        cached.authenticate(oldest)


def test_a_disabled_cache_looks_every_token_up(cached: SessionStore, database_url: str) -> None:
    reader = uuid.uuid4()
    token = cached.issue(reader, TTL).token
    cached.authenticate(token)
    cached.cache.disable()  # NATS disconnected: revocations may be missed
    _revoke_elsewhere(database_url, token)
    with pytest.raises(RevokedToken):
        cached.authenticate(token)


def test_a_cached_session_ends_at_its_expiry_and_after_the_ttl(
    pool: ConnectionPool, database_url: str
) -> None:
    store = SessionStore(pool, cache=SessionCache(ttl=0.2))
    store.cache.enable()
    reader = uuid.uuid4()
    token = store.issue(reader, TTL).token
    store.authenticate(token)
    _revoke_elsewhere(database_url, token)
    deadline = time.monotonic() + 5
    while True:  # the entry lives 0.2 s, then the database says revoked
        try:
            store.authenticate(token)
        except RevokedToken:
            break
        assert time.monotonic() < deadline, "the cached entry outlived its ttl"
        time.sleep(0.05)
    # an entry never outlives the session's own expiry
    short = store.issue(reader, 1).token
    assert store.authenticate(short) == reader
    store.cache.ttl = 60.0
    deadline = time.monotonic() + 5
    while True:
        try:
            store.authenticate(short)
        except ExpiredToken:
            break
        assert time.monotonic() < deadline, "the cached entry outlived the session"
        time.sleep(0.05)


def test_a_lookup_racing_a_revocation_is_not_cached(cached: SessionStore) -> None:
    reader = uuid.uuid4()
    token = cached.issue(reader, TTL).token
    auth = cached.authenticate_session(token)
    cached.cache.forget([auth.session_id])
    generation = cached.cache.generation
    cached.cache.forget(["someone-else"])  # a revocation lands while a lookup runs
    cached.cache.put(hash_token(token), auth, generation)
    assert cached.cache.get(hash_token(token)) is None
