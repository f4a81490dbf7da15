"""The content check of a REST command: one call at the top of its handler.

::

    check_texts(container, reader_id, {"text": data.text}, Scene.SOCIAL_LOG,
                subject=f"conversation:{conversation_id}")

runs the container's ``Moderator`` (``api.adapters.moderation``) on the non-blank texts
before the command is built: ``ContentRejected`` → 422 ``content_rejected`` (nothing
recorded), ``ContentCheckUnavailable`` → 503 with ``Retry-After`` (``api.http.errors``); a
``review`` verdict is recorded for an operator and the handler goes on. Blocking: handlers
calling it run in a worker thread (``sync_to_thread=True``); on an event loop thread it
raises ``RuntimeError`` rather than stall every socket of the node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from domain.moderation import Scene

__all__ = ["Scene", "check_texts"]


def check_texts(
    container: Any,
    reader_id: UUID,
    fields: Mapping[str, str | Sequence[str] | None],
    scene: Scene,
    *,
    subject: str | None = None,
) -> None:
    """Check ``fields`` (name → text, list of texts or None) written by ``reader_id``."""
    platform = getattr(container, "wechat", None)
    moderator = getattr(platform, "moderation", None)
    if moderator is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("check_texts blocks: call it from a worker thread")
    moderator.check_texts(reader_id, fields, scene, subject=subject)
