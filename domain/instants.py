"""Parsing a point in time given as text: one rule for every entry point (the API's
``as_of``, the CLI's ``--since``/``--until``/``--at``, ``liudong replay --until``).

The rule: ISO 8601 (RFC 3339) with an explicit offset, ``Z`` or ``±hh:mm``. A time without
one is refused rather than guessed: a reader in China means UTC+8, an operator's server
may run in UTC, and a silent eight-hour shift is worse than an error.
"""

from __future__ import annotations

from datetime import datetime


class InvalidInstant(ValueError):
    """The text is not an ISO 8601 time with an offset; the message says why."""


def parse_instant(text: str) -> datetime:
    """An aware ``datetime`` from ISO 8601 text such as ``2026-12-07T08:30:00Z`` or
    ``2026-12-07 16:30+08:00``.

    Raises ``InvalidInstant`` when the text does not parse or has no offset."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInstant(f"{text[:64]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInstant(
            f"{text[:64]!r} has no timezone: add Z (UTC) or an offset such as +08:00"
        )
    return parsed
