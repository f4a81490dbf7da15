"""Page cursors of the read models' lists: opaque to clients, issued by this server only."""

from __future__ import annotations

import base64

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor"]


class InvalidCursor(ValueError):
    """A page cursor that this server did not issue."""


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(f"s:{value}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Raises ``InvalidCursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        if prefix != "s":
            raise ValueError(prefix)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this server issued") from exc
