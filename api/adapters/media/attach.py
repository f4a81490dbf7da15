"""Attaching an uploaded picture to a message: the check in front of the Chat.

Only a picture the sender uploaded can be attached (``MediaStore.mark_attached``, which
also keeps it from the sweep). ``attach_ref`` does that for one ``MediaRef`` and returns it
with the picture's stored size; ``AttachingChat(chat, media)`` puts it in front of a Chat's
``handle`` for ``SendMessage`` / ``SendRoomMessage`` (the WebSocket path, ``chat.send`` and
``room.send``), translating the media errors into domain errors so that the gateway answers
an ``error`` frame:

    MediaNotFound, MediaRemoved  → PictureNotFound    "media_not_found"
    MediaNotOwned                → PictureNotOwned    "media_not_owned"
    MediaStorageUnavailable      → PictureUnavailable "media_storage_unavailable"

The REST controllers call ``MediaStore.mark_attached`` themselves and map the media errors
to problem+json (``api.http.controllers.media.media_api_error``): the same codes.
Everything blocks (psycopg): call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgspec

from api.adapters.media.errors import (
    MediaNotFound,
    MediaNotOwned,
    MediaRemoved,
    MediaStorageUnavailable,
)
from api.adapters.media.store import MediaStore
from domain import chat_commands as cc
from domain.media import MediaRef, PictureNotFound, PictureNotOwned, PictureUnavailable

__all__ = ["AttachingChat", "attach_ref"]


def attach_ref(store: MediaStore | None, ref: MediaRef, reader_id: UUID) -> MediaRef:
    """``ref`` attached by ``reader_id``, with the stored picture's width and height.
    Raises ``PictureNotFound`` (unknown, swept, removed, or pictures not configured),
    ``PictureNotOwned``, ``PictureUnavailable``."""
    if store is None:
        raise PictureNotFound("Pictures are not configured on this server.")
    try:
        info = store.mark_attached(ref.id, reader_id)
    except (MediaNotFound, MediaRemoved) as exc:
        raise PictureNotFound(exc.message) from exc
    except MediaNotOwned as exc:
        raise PictureNotOwned(exc.message) from exc
    except MediaStorageUnavailable as exc:
        raise PictureUnavailable(exc.message) from exc
    return MediaRef(id=info.id, width=info.width, height=info.height)


class AttachingChat:
    """A Chat whose sends attach their picture first (module docstring). ``media()`` is
    read per command (the container's store; ``None``: no pictures)."""

    def __init__(self, chat: Any, media: Callable[[], MediaStore | None]) -> None:
        self.chat = chat
        self.media = media

    def handle(self, command: Any) -> Any:
        if isinstance(command, cc.SendMessage | cc.SendRoomMessage) and command.media:
            sender = command.sender_id
            ref = attach_ref(self.media(), command.media, sender)
            command = msgspec.structs.replace(command, media=ref)
        return self.chat.handle(command)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chat, name)
