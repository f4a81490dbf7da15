"""``ContentFlagged`` records: texts accepted with a ``review`` verdict, for an operator.

Stored in ``moderation_flags`` (migration ``0009_wechat``); listed and resolved with
``liudong moderation list`` / ``liudong moderation resolve ID``. Synchronous (psycopg pool):
call from a worker thread.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from domain.moderation import ContentFlagged

__all__ = ["RESOLUTIONS", "FlagStore"]

_COLUMNS = (
    "id, flagged_at, reader_id, scene, field, subject, label, provider, text, resolved_at, "
    "resolved_by, resolution"
)
RESOLUTIONS = ("approved", "removed")
"""What an operator decided (``resolution``, migration ``0017_moderation_resolution``):
``approved`` (the text may stay) or ``removed`` (it must go; see docs/OPERATIONS.md)."""


class FlagStore:
    """The ``moderation_flags`` table over ``pool`` (``dict_row`` connections)."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def record(self, flag: ContentFlagged) -> int:
        """Store ``flag``; returns its id."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO moderation_flags "
                "(reader_id, scene, field, subject, label, provider, text) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    flag.reader_id,
                    int(flag.scene),
                    flag.field,
                    flag.subject,
                    flag.label,
                    flag.provider,
                    flag.text,
                ),
            ).fetchone()
        assert row is not None
        return int(row["id"] if isinstance(row, dict) else row[0])

    def list(self, *, include_resolved: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        """The newest flags first (open ones only unless ``include_resolved``)."""
        where = "" if include_resolved else "WHERE resolved_at IS NULL"
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM moderation_flags {where} "  # noqa: S608
                "ORDER BY flagged_at DESC, id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [dict(row) if isinstance(row, dict) else _as_dict(row) for row in rows]

    def get(self, flag_id: int) -> dict[str, Any] | None:
        """One flag, or None."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM moderation_flags WHERE id = %s",  # noqa: S608
                (flag_id,),
            ).fetchone()
        if row is None:
            return None
        return dict(row) if isinstance(row, dict) else _as_dict(row)

    def resolve(self, flag_id: int, *, by: str, resolution: str | None = None) -> bool:
        """Mark flag ``flag_id`` handled, with the operator's ``resolution`` (one of
        ``RESOLUTIONS``, or None: just handled); False when there is no such open flag.
        Raises ``ValueError`` for another resolution."""
        if resolution is not None and resolution not in RESOLUTIONS:
            raise ValueError(f"resolution is one of {RESOLUTIONS}, not {resolution!r}")
        with self.pool.connection() as conn:
            cursor = conn.execute(
                "UPDATE moderation_flags SET resolved_at = now(), resolved_by = %s, "
                "resolution = %s WHERE id = %s AND resolved_at IS NULL",
                (by, resolution, flag_id),
            )
            return int(cursor.rowcount) == 1


def _as_dict(row: Any) -> dict[str, Any]:
    names = [name.strip() for name in _COLUMNS.split(",")]
    return dict(zip(names, row, strict=True))
