"""``Idempotency-Key`` for POSTs: a retried request with the same key gets the first
response again instead of acting twice (draft-ietf-httpapi-idempotency-key-header).

A key is scoped to the reader. Reusing a key for a different request is a 422; a retry
while the first is still running is a 409. Server errors are not remembered, so they can be
retried. Creating commands also derive their new aggregate's id from the key
(``derived_id``), so even a retry after a crash between the event and the stored response
cannot create a second book or loan.

A crash (or a failure to store the response) after the command committed leaves the key
"in progress" without a response. Every command's events mark its key as committed in the
same transaction (``api.adapters.eventstore``: ``committed_log``, ``committed_position``),
so a retry knows whether the command happened, for every command:

- committed (the mark is there): ``recover(Committed)`` builds the answer from what was
  recorded, the same status and body as the first response would have been (the read model
  as it is now, once it includes the commit; 202 ``Accepted`` while it lags), stores it and
  returns it with ``Idempotent-Replayed: true``. Never a 409, never a second run;
- not committed: a creating command's ``recover(None)`` still looks for the aggregate of
  its derived id (a command that committed before the mark existed); otherwise the key is
  409 ``idempotency_in_progress`` while the first request may still be running (for
  ``STALE_AFTER``), then the command runs again (it never happened).

A failure after the commit does not forget the key either (only an uncommitted one is
forgotten, so that it can be retried): the retry recovers the answer.

A crash *before* the command committed leaves the key "in progress" too, and ``recover``
finds nothing. The key records the database session that took it (``owner_pid``,
``owner_start``: the request's pooled connection, as ``pg_stat_activity`` shows it); when
that session no longer exists, the process that ran the first request is gone (its
connections died with it), nothing can commit any more, and the retry runs the command at
once (for commands with ``recover`` only: their retry is safe by construction). While the
session exists the first request may still be running: 409 ``idempotency_in_progress``.
(The session is the pooled connection that inserted the key; should the pool replace it
while the first request still runs, after ``max_idle`` or an outage, both may run: the
derived aggregate id lets only one of them record anything.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4, uuid5

import msgspec
from litestar import Response

from api.adapters.eventstore import claimed
from api.http.errors import ApiError, problem
from domain.errors import DomainError

STALE_AFTER = timedelta(seconds=60)

T = TypeVar("T")


class Committed(msgspec.Struct, frozen=True, kw_only=True):
    """What the mark of a committed command says: its log (``library`` or ``chat``) and the
    position of its last event there (for read-your-writes)."""

    log: str
    position: int


Recover = Callable[[Committed | None], Response[Any] | None]
"""``recover(committed)``: the response of a command whose response was never stored,
built from what it recorded; ``None`` when it did not commit (``committed`` is ``None``
and there is nothing else to find)."""


def after_commit(respond: Callable[[Committed], Response[Any]]) -> Recover:
    """The ``recover`` of a command that creates nothing: ``respond(committed)`` when the
    mark says it committed, else ``None`` (it did not: it may run again)."""
    return lambda committed: None if committed is None else respond(committed)


def derived_id(reader_id: UUID, key: str | None, purpose: str) -> UUID:
    """A new aggregate id: random, or derived from the idempotency key when one is given."""
    if key is None:
        return uuid4()
    return uuid5(reader_id, f"{purpose}:{key}")


def _encode(status: int, body: Any) -> bytes:
    return msgspec.json.encode({"status": status, "body": body})


def run_idempotent(
    container: Any,
    reader_id: UUID,
    key: str | None,
    method: str,
    path: str,
    payload: Any,
    action: Callable[[], Response[Any]],
    recover: Recover | None = None,
) -> Response[Any]:
    """Run ``action`` at most once per ``(reader_id, key)``; replay its response after.
    ``recover`` (see ``Recover``): the response of an action that committed but whose
    response was never stored. Raises ``ApiError`` 422 ``idempotency_key_reused``, 409
    ``idempotency_in_progress``; ``action``'s own errors pass through (a domain error or a
    4xx is stored and replayed like a success)."""
    if key is None:
        return action()
    replayed = _claim(container, reader_id, key, method, path, payload, recover)
    if replayed is not None:
        return replayed

    def run() -> Response[Any]:
        with claimed(reader_id, key):
            return action()

    return _conclude(container.pool, reader_id, key, run)


@dataclass(frozen=True, slots=True)
class Staged(Generic[T]):
    """An idempotent command that ran (``begin_idempotent``) and whose response is still to
    be made and stored (``finish_idempotent``): ``value`` is what it returned."""

    value: T
    reader_id: UUID
    key: str | None


def begin_idempotent(
    container: Any,
    reader_id: UUID,
    key: str | None,
    method: str,
    path: str,
    payload: Any,
    act: Callable[[], T],
    recover: Recover | None = None,
) -> Response[Any] | Staged[T]:
    """The first half of ``run_idempotent`` (blocking: run it in a worker thread), for a
    handler that awaits the read models between the command and its response: claims the
    key and runs ``act`` (the command) under it. Returns the response to send at once (a
    replay, a recovered answer, the stored problem of a domain error), else ``Staged``:
    await what the response needs, then ``finish_idempotent`` (or ``abandon_idempotent``
    when that fails). Raises like ``run_idempotent``."""
    if key is None:
        return Staged(act(), reader_id, None)
    replayed = _claim(container, reader_id, key, method, path, payload, recover)
    if replayed is not None:
        return replayed
    try:
        with claimed(reader_id, key):
            value = act()
    except BaseException as exc:
        return _failed(container.pool, reader_id, key, exc)
    return Staged(value, reader_id, key)


def finish_idempotent(
    container: Any, staged: Staged[T], respond: Callable[[T], Response[Any]]
) -> Response[Any]:
    """The second half (blocking): ``respond(staged.value)``, stored for the key as
    ``run_idempotent`` stores its action's response (errors likewise)."""
    if staged.key is None:
        return respond(staged.value)
    return _conclude(container.pool, staged.reader_id, staged.key, lambda: respond(staged.value))


def abandon_idempotent(container: Any, staged: Staged[Any]) -> None:
    """What went wrong between the halves is a server error (blocking): forget the key
    like ``run_idempotent`` does (unless its command committed: a retry recovers)."""
    if staged.key is not None:
        _forget(container.pool, staged.reader_id, staged.key)


def _claim(
    container: Any,
    reader_id: UUID,
    key: str,
    method: str,
    path: str,
    payload: Any,
    recover: Recover | None,
) -> Response[Any] | None:
    """Take the key for this request: ``None`` when the action is to run now, else the
    response to send instead (a replay, a recovered answer). Raises like
    ``run_idempotent``."""
    request_hash = hashlib.sha256(
        method.encode() + b" " + path.encode() + b" " + msgspec.json.encode(payload)
    ).hexdigest()
    pool = container.pool
    with pool.connection() as conn:
        inserted = conn.execute(
            "INSERT INTO idempotency_keys "
            "(reader_id, key, method, path, request_hash, owner_pid, owner_start) "
            f"VALUES (%s, %s, %s, %s, %s, {_SESSION}) ON CONFLICT DO NOTHING RETURNING key",
            (reader_id, key, method, path, request_hash),
        ).fetchone()
        if inserted is not None:
            return None
        row = conn.execute(
            "SELECT request_hash, status, body, now() - created_at AS age, "
            "committed_log, committed_position, owner_pid, owner_start, "
            "EXISTS (SELECT 1 FROM pg_stat_activity a "
            "  WHERE a.pid = k.owner_pid AND a.backend_start = k.owner_start) AS owner_alive "
            "FROM idempotency_keys k WHERE reader_id = %s AND key = %s",
            (reader_id, key),
        ).fetchone()
        if row is None:  # deleted meanwhile: treat as new
            conn.rollback()
            return _claim(container, reader_id, key, method, path, payload, recover)
        if row["request_hash"] != request_hash:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request.",
            )
        if row["status"] is None:
            conn.commit()
            committed = (
                None
                if row["committed_position"] is None
                else Committed(log=row["committed_log"], position=row["committed_position"])
            )
            recovered = recover(committed) if recover is not None else None
            if recovered is not None:  # it committed, then its response was lost
                _store(pool, reader_id, key, recovered)
                recovered.headers["Idempotent-Replayed"] = "true"
                return recovered
            orphaned = committed is None and recover is not None and not row["owner_alive"]
            if orphaned and _take_over(pool, reader_id, key, row):
                return None  # the first request died before its command committed: run it now
            if committed is not None or row["age"] < STALE_AFTER:
                raise ApiError(
                    409,
                    "idempotency_in_progress",
                    "A request with this Idempotency-Key is still being processed.",
                )
            return None
        stored = msgspec.json.decode(row["body"])
        return _replay(stored["status"], stored["body"])


def _conclude(
    pool: Any, reader_id: UUID, key: str, run: Callable[[], Response[Any]]
) -> Response[Any]:
    """``run()``'s response stored for the key; its errors as ``_failed`` treats them."""
    try:
        response = run()
    except BaseException as exc:
        return _failed(pool, reader_id, key, exc)
    return _stored(pool, reader_id, key, response)


def _failed(pool: Any, reader_id: UUID, key: str, exc: BaseException) -> Response[Any]:
    """A domain error or a 4xx ``ApiError`` is stored and answered like a success;
    anything else forgets the key and is raised again."""
    if isinstance(exc, DomainError):
        from api.http.errors import domain_problem

        return _stored(pool, reader_id, key, domain_problem(exc))
    if isinstance(exc, ApiError) and exc.status < 500:
        return _stored(
            pool, reader_id, key, problem(exc.status, exc.code, exc.detail, errors=exc.errors)
        )
    _forget(pool, reader_id, key)
    raise exc


def _stored(pool: Any, reader_id: UUID, key: str, response: Response[Any]) -> Response[Any]:
    """``response`` stored for the key (a 5xx forgets it instead)."""
    if response.status_code is None:  # a programming error: the stored status must be known
        _forget(pool, reader_id, key)
        raise TypeError("an idempotent action must give its response's status_code")
    if response.status_code >= 500:
        _forget(pool, reader_id, key)
        return response
    _store(pool, reader_id, key, response)
    return response


# this connection's session, as pg_stat_activity names it
_SESSION = (
    "pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
)


def _take_over(pool: Any, reader_id: UUID, key: str, row: dict[str, Any]) -> bool:
    """Make this request the key's owner, unless another retry did so first."""
    with pool.connection() as conn:
        taken = conn.execute(
            f"UPDATE idempotency_keys SET (owner_pid, owner_start) = ({_SESSION}), "
            "created_at = now() WHERE reader_id = %s AND key = %s AND status IS NULL "
            "AND owner_pid IS NOT DISTINCT FROM %s "
            "AND owner_start IS NOT DISTINCT FROM %s RETURNING key",
            (reader_id, key, row["owner_pid"], row["owner_start"]),
        ).fetchone()
    return taken is not None


def _store(pool: Any, reader_id: UUID, key: str, response: Response[Any]) -> None:
    """Remember ``response`` for the key (tests make it fail: a crash after the commit)."""
    body = msgspec.to_builtins(response.content)
    with pool.connection() as conn:
        conn.execute(
            "UPDATE idempotency_keys SET status = %s, body = %s WHERE reader_id = %s AND key = %s",
            (response.status_code, _encode(response.status_code, body), reader_id, key),
        )


def _forget(pool: Any, reader_id: UUID, key: str) -> None:
    """Forget a key whose request failed, unless its command committed (then a retry
    recovers the answer: it must not run again)."""
    with pool.connection() as conn:
        conn.execute(
            "DELETE FROM idempotency_keys "
            "WHERE reader_id = %s AND key = %s AND committed_position IS NULL",
            (reader_id, key),
        )


def _replay(status: int, body: Any) -> Response[Any]:
    media = "application/problem+json" if status >= 400 else "application/json"
    return Response(
        body, status_code=status, media_type=media, headers={"Idempotent-Replayed": "true"}
    )
