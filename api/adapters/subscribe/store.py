"""The subscribe-message tables (migration ``0011_subscribe_messages``), through a psycopg
``ConnectionPool`` with ``dict_row`` rows. Every method is one short transaction and
synchronous: call it from a worker thread.

- ``Grants``: the one-time grants each reader has left per template.
- ``Outbox``: the notifier's side — following the inbox into ``subscribe_notifications``
  (``follow``), claiming an item for sending while using one grant (``claim``), recording
  the outcome (``sent`` / ``refused`` / ``retry`` / ``failed`` / ``skip``), forgetting a
  reader, and the figures of ``liudong notifications status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from api.adapters.subscribe.templates import RenderError, Templates
from projections.board import tracked_position

__all__ = ["FORGOTTEN_TOPIC", "Claim", "Grants", "Outbox"]

FORGOTTEN_TOPIC = "domain.reader:Reader.Forgotten"
"""The stored topic of the event that forgets a reader (crypto-shredding): their grants and
pending subscribe messages are deleted when the notifier passes it."""

MAX_GRANTS = 1000
"""At most this many grants left per reader and template (a client reporting in a loop)."""


def own_action(item: dict[str, Any]) -> bool:
    """Whether the item tells its reader of their own act (their other devices' copy): a
    ``chat.message`` they sent, a ``loan.cancelled`` they (the borrower) cancelled. No
    subscribe message for those."""
    data = item.get("data") or {}
    reader = str(item["reader_id"])
    if item["kind"] == "chat.message":
        return str((data.get("sender") or {}).get("id")) == reader
    if item["kind"] == "loan.cancelled":
        return str((data.get("borrower") or {}).get("id")) == reader
    return False


class Grants:
    """``subscribe_grants``: ``add`` what a reader granted, ``left`` what remains."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def add(self, reader_id: UUID, grants: Iterable[tuple[str, int]]) -> dict[str, int]:
        """Add ``count`` (≥ 1) grants per ``template_id``, capped at ``MAX_GRANTS`` each;
        returns every template's remaining count for the reader."""
        with self.pool.connection() as conn, conn.transaction():
            for template_id, count in grants:
                conn.execute(
                    "INSERT INTO subscribe_grants (reader_id, template_id, remaining) "
                    "VALUES (%s, %s, LEAST(%s, %s)) ON CONFLICT (reader_id, template_id) DO "
                    "UPDATE SET remaining = LEAST(subscribe_grants.remaining + excluded.remaining"
                    ", %s), updated_at = now()",
                    (reader_id, template_id, count, MAX_GRANTS, MAX_GRANTS),
                )
            return self._left(conn, reader_id)

    def left(self, reader_id: UUID) -> dict[str, int]:
        """``{template_id: remaining}`` of the reader (templates never granted are absent)."""
        with self.pool.connection() as conn:
            return self._left(conn, reader_id)

    @staticmethod
    def _left(conn: Any, reader_id: UUID) -> dict[str, int]:
        rows = conn.execute(
            "SELECT template_id, remaining FROM subscribe_grants WHERE reader_id = %s",
            (reader_id,),
        ).fetchall()
        return {r["template_id"]: int(r["remaining"]) for r in rows}


@dataclass(frozen=True)
class Claim:
    """An item claimed for sending (status ``sending``, one grant used)."""

    source: str
    position: int
    reader_id: UUID
    template_id: str
    page: str
    data: dict[str, Any]
    attempts: int

    @property
    def key(self) -> tuple[str, int, UUID]:
        return (self.source, self.position, self.reader_id)


class Outbox:
    """``subscribe_notifications`` and ``notify_tracking``. ``inbox``: the schema of the
    inbox read model's views (``"inbox"``)."""

    def __init__(self, pool: Any, templates: Templates, *, inbox: str = "inbox") -> None:
        self.pool = pool
        self.templates = templates
        self.inbox = inbox

    # -- following the inbox ---------------------------------------------------------------

    def follow(self, source: str, chunk: int = 1000) -> tuple[int, bool]:
        """Record the intents of the inbox items ``source`` made after the notifier's
        position, up to the inbox projection's position (at most ``chunk`` log positions),
        and move the position — one transaction, so each item is recorded exactly once
        whatever crashes. On the library log, a ``Reader.Forgotten`` in that range deletes
        the reader's grants and unsent messages. The first call on a database starts at the
        inbox's position (older items are not announced). Returns ``(intents recorded,
        whether the inbox is further ahead)``."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT position FROM notify_tracking WHERE source = %s FOR UPDATE", (source,)
            ).fetchone()
            inbox_at = tracked_position(conn, self.inbox, source)
            if row is None:
                conn.execute(
                    "INSERT INTO notify_tracking (source, position) VALUES (%s, %s) "
                    "ON CONFLICT (source) DO NOTHING",
                    (source, inbox_at),
                )
                return 0, False
            after = int(row["position"])
            upto = min(inbox_at, after + chunk)
            if upto <= after:
                return 0, False
            items = conn.execute(
                sql.SQL(
                    "SELECT reader_id, seq, kind, at, data, position FROM {}.items "
                    "WHERE source = %s AND position > %s AND position <= %s "
                    "AND kind = ANY(%s) ORDER BY position, seq"
                ).format(sql.Identifier(self.inbox)),
                (source, after, upto, sorted(self.templates.kinds)),
            ).fetchall()
            recorded = 0
            with conn.cursor() as cur:
                for item in items:
                    recorded += self._intent(cur, source, item)
            if source == "library":
                forgotten = conn.execute(
                    "SELECT originator_id FROM library_events WHERE notification_id > %s "
                    "AND notification_id <= %s AND topic = %s",
                    (after, upto, FORGOTTEN_TOPIC),
                ).fetchall()
                self._forget(conn, [r["originator_id"] for r in forgotten])
            conn.execute(
                "UPDATE notify_tracking SET position = %s, updated_at = now() WHERE source = %s",
                (upto, source),
            )
            return recorded, upto < inbox_at

    def _intent(self, cur: Any, source: str, item: dict[str, Any]) -> int:
        if own_action(item):
            return 0
        template = self.templates.by_kind[item["kind"]]
        status, error = "pending", None
        try:
            page, data = template.render(item)
        except RenderError as exc:
            page, data, status, error = "", {}, "failed", str(exc)
        cur.execute(
            "INSERT INTO subscribe_notifications (source, position, reader_id, seq, kind, "
            "template_id, page, data, status, last_error, item_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                source,
                item["position"],
                item["reader_id"],
                item["seq"],
                item["kind"],
                template.template_id,
                page,
                Jsonb(data),
                status,
                error,
                item["at"],
            ),
        )
        return int(cur.rowcount or 0)

    def forget(self, reader_ids: Sequence[UUID]) -> None:
        """Delete the grants and every not yet sent message of these readers."""
        with self.pool.connection() as conn, conn.transaction():
            self._forget(conn, reader_ids)

    @staticmethod
    def _forget(conn: Any, reader_ids: Sequence[UUID]) -> None:
        if not reader_ids:
            return
        ids = list(reader_ids)
        conn.execute("DELETE FROM subscribe_grants WHERE reader_id = ANY(%s)", (ids,))
        conn.execute(
            "DELETE FROM subscribe_notifications WHERE reader_id = ANY(%s) "
            "AND status IN ('pending', 'sending', 'skipped', 'failed', 'refused')",
            (ids,),
        )

    # -- sending ---------------------------------------------------------------------------

    def due(self, limit: int = 100) -> list[dict[str, Any]]:
        """Pending items whose time has come, oldest first: ``{"source", "position",
        "reader_id", "template_id"}``."""
        with self.pool.connection() as conn:
            return list(
                conn.execute(
                    "SELECT source, position, reader_id, template_id FROM "
                    "subscribe_notifications WHERE status = 'pending' AND next_attempt_at "
                    "<= now() ORDER BY next_attempt_at, created_at LIMIT %s",
                    (limit,),
                ).fetchall()
            )

    def claim(self, key: tuple[str, int, UUID]) -> Claim | None:
        """Take a pending item for sending and use one of its reader's grants, in one
        transaction: ``None`` (and the item ``skipped``, reason ``no_grant``) when none is
        left, ``None`` when another node took it first."""
        source, position, reader_id = key
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT template_id, page, data, attempts FROM subscribe_notifications "
                "WHERE source = %s AND position = %s AND reader_id = %s "
                "AND status = 'pending' FOR UPDATE SKIP LOCKED",
                key,
            ).fetchone()
            if row is None:
                return None
            used = conn.execute(
                "UPDATE subscribe_grants SET remaining = remaining - 1, updated_at = now() "
                "WHERE reader_id = %s AND template_id = %s AND remaining > 0 RETURNING 1",
                (reader_id, row["template_id"]),
            ).fetchone()
            if used is None:
                self._set(conn, key, "skipped", reason="no_grant")
                return None
            conn.execute(
                "UPDATE subscribe_notifications SET status = 'sending', attempts = attempts + 1, "
                "updated_at = now() WHERE source = %s AND position = %s AND reader_id = %s",
                key,
            )
        return Claim(
            source,
            position,
            reader_id,
            row["template_id"],
            row["page"],
            row["data"],
            int(row["attempts"]) + 1,
        )

    def skip(self, key: tuple[str, int, UUID], reason: str) -> None:
        """A pending item that is not sent: ``online`` (a live socket), ``no_openid``."""
        with self.pool.connection() as conn, conn.transaction():
            self._set(conn, key, "skipped", reason=reason, only="pending")

    def sent(self, claim: Claim) -> None:
        with self.pool.connection() as conn, conn.transaction():
            self._set(conn, claim.key, "sent", sent=True)

    def refused(self, claim: Claim, error: str) -> None:
        """43101: the reader has no grant left with WeChat (or withdrew it): ours go to 0."""
        with self.pool.connection() as conn, conn.transaction():
            self._set(conn, claim.key, "refused", reason="43101", error=error)
            conn.execute(
                "UPDATE subscribe_grants SET remaining = 0, updated_at = now() "
                "WHERE reader_id = %s AND template_id = %s",
                (claim.reader_id, claim.template_id),
            )

    def retry(self, claim: Claim, error: str, delay: float) -> None:
        """Not sent, try again in ``delay`` seconds; the grant is given back."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE subscribe_notifications SET status = 'pending', last_error = %s, "
                "next_attempt_at = now() + make_interval(secs => %s), updated_at = now() "
                "WHERE source = %s AND position = %s AND reader_id = %s",
                (error, delay, *claim.key),
            )
            self._give_back(conn, claim)

    def failed(self, claim: Claim, error: str) -> None:
        """Not sent and given up; the grant is given back."""
        with self.pool.connection() as conn, conn.transaction():
            self._set(conn, claim.key, "failed", error=error)
            self._give_back(conn, claim)

    def interrupted(self, older_than: float) -> int:
        """Items left ``sending`` for more than ``older_than`` seconds (a node died during
        the call): marked ``failed``, never sent again — WeChat may have delivered them, and
        at most one message per item is the rule. Their grant stays used. How many."""
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.execute(
                "UPDATE subscribe_notifications SET status = 'failed', last_error = "
                "'interrupted while sending; not sent again', updated_at = now() "
                "WHERE status = 'sending' AND updated_at < now() - make_interval(secs => %s)",
                (older_than,),
            )
            return int(cur.rowcount or 0)

    def purge(self, older_than: float) -> int:
        """Delete the rows done (sent, refused, skipped, failed) for more than
        ``older_than`` seconds (they hold nicknames, titles, notes); how many."""
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.execute(
                "DELETE FROM subscribe_notifications WHERE status IN "
                "('sent', 'refused', 'skipped', 'failed') "
                "AND updated_at < now() - make_interval(secs => %s)",
                (older_than,),
            )
            return int(cur.rowcount or 0)

    @staticmethod
    def _give_back(conn: Any, claim: Claim) -> None:
        conn.execute(
            "UPDATE subscribe_grants SET remaining = remaining + 1, updated_at = now() "
            "WHERE reader_id = %s AND template_id = %s",
            (claim.reader_id, claim.template_id),
        )

    @staticmethod
    def _set(
        conn: Any,
        key: tuple[str, int, UUID],
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        sent: bool = False,
        only: str | None = None,
    ) -> None:
        conn.execute(
            "UPDATE subscribe_notifications SET status = %s, reason = coalesce(%s, reason), "
            "last_error = coalesce(%s, last_error), updated_at = now(), "
            "sent_at = CASE WHEN %s THEN now() ELSE sent_at END "
            "WHERE source = %s AND position = %s AND reader_id = %s "
            "AND (%s::text IS NULL OR status = %s)",
            (status, reason, error, sent, *key, only, only),
        )

    # -- figures ---------------------------------------------------------------------------

    def status(self, sources: Sequence[str] = ("library", "chat")) -> dict[str, Any]:
        """``{"counts": {status: n}, "skipped": {reason: n}, "sources": {source: {"position",
        "inbox", "lag"}}, "oldest_pending": ISO time | None}``; ``lag`` is in log positions
        (the inbox's position minus the notifier's)."""
        with self.pool.connection() as conn:
            counts = {
                r["status"]: int(r["n"])
                for r in conn.execute(
                    "SELECT status, count(*) AS n FROM subscribe_notifications GROUP BY status"
                ).fetchall()
            }
            skipped = {
                r["reason"] or "": int(r["n"])
                for r in conn.execute(
                    "SELECT reason, count(*) AS n FROM subscribe_notifications "
                    "WHERE status = 'skipped' GROUP BY reason"
                ).fetchall()
            }
            oldest = conn.execute(
                "SELECT min(created_at) AS at FROM subscribe_notifications WHERE status = 'pending'"
            ).fetchone()
            positions: dict[str, Any] = {}
            for source in sources:
                row = conn.execute(
                    "SELECT position FROM notify_tracking WHERE source = %s", (source,)
                ).fetchone()
                inbox_at = tracked_position(conn, self.inbox, source)
                mine = int(row["position"]) if row else None
                positions[source] = {
                    "position": mine,
                    "inbox": inbox_at,
                    "lag": None if mine is None else max(0, inbox_at - mine),
                }
        return {
            "counts": {
                s: counts.get(s, 0)
                for s in ("pending", "sending", "sent", "refused", "skipped", "failed")
            },
            "skipped": skipped,
            "sources": positions,
            "oldest_pending": oldest["at"].isoformat() if oldest and oldest["at"] else None,
        }
