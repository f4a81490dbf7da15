"""Pictures as the domain sees them: a reference to an uploaded picture, and its removal.

The bytes of a picture never enter the domain: an upload is stored by the media adapter
(``api.adapters.media``) under its id, the SHA-256 of its cleaned bytes (64 lower-case hex
characters). Commands and events refer to a picture by that id only.

``MediaRef``
    What a chat or room message carries: ``{"id", "width", "height"}`` (pixels of the
    cleaned picture; 0 when the sender's client did not say and the server has not filled
    them in). The API fills the dimensions from the stored picture after checking that the
    sender uploaded it (``PictureNotFound`` / ``PictureNotOwned`` otherwise), so a message's
    event records the id and the dimensions, never bytes nor URLs (URLs depend on where
    the server is deployed; ``projections`` build them).

``Media`` (aggregate, in the Library's log)
    Exists only once a picture had to be removed: the WeChat image check found it
    ``risky``. Its id is ``picture_id_for(media_id)``. Event: ``Removed(media_id, reason)``
    (stored as ``Media.Removed``: the *MediaRemoved* event of ``docs/EVENTS.md``). The read
    models show a placeholder wherever the picture was used, and the inbox tells the
    readers who saw it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, Forbidden, Invalid, NotFound

MEDIA_ID_PATTERN = r"^[0-9a-f]{64}$"
"""A picture's id: SHA-256 of its cleaned bytes, hex, lower case."""
PICTURE_NAMESPACE = uuid5(NAMESPACE_URL, "https://liudong.example/pictures")

MediaId = Annotated[str, msgspec.Meta(pattern=MEDIA_ID_PATTERN)]
Pixels = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]

_MEDIA_ID = re.compile(MEDIA_ID_PATTERN)


MEDIA_PATH = "/v1/media"
"""Where the API serves a picture (``GET /v1/media/{id}``, ``…/thumb``): the URLs of a
picture view are paths on the API's own origin."""


def picture_view(media: Any) -> dict[str, Any] | None:
    """How a message shows its stored ``media`` (``{"id", "width", "height"}``, plus
    ``"removed": True`` once taken down; ``None``: no picture)::

        {"id", "url": "/v1/media/<id>", "thumb_url": "/v1/media/<id>/thumb",
         "width", "height", "removed": false}

    A removed picture keeps its id and size, with ``url`` / ``thumb_url`` ``None`` and
    ``removed`` true: the client shows its own placeholder."""
    if not media:
        return None
    media_id = str(media["id"])
    removed = bool(media.get("removed"))
    url = None if removed else f"{MEDIA_PATH}/{media_id}"
    return {
        "id": media_id,
        "url": url,
        "thumb_url": None if url is None else url + "/thumb",
        "width": int(media.get("width") or 0),
        "height": int(media.get("height") or 0),
        "removed": removed,
    }


class MediaRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A picture attached to a message: its id and pixel size (0: not known)."""

    id: MediaId
    width: Pixels = 0
    height: Pixels = 0

    def as_event_data(self) -> dict[str, Any]:
        """The plain-JSON form an event stores: ``{"id": str, "width": int, "height": int}``."""
        return {"id": self.id, "width": self.width, "height": self.height}


def check_media_id(media_id: str) -> None:
    """Raise ``PictureNotFound`` unless ``media_id`` has the shape of a picture id."""
    if not _MEDIA_ID.fullmatch(media_id):
        raise PictureNotFound(f"No picture {media_id[:80]!r}.")


def picture_id_for(media_id: str) -> UUID:
    """The aggregate id of picture ``media_id``: ``uuid5(PICTURE_NAMESPACE, media_id)``."""
    return uuid5(PICTURE_NAMESPACE, media_id)


class PictureNotFound(NotFound):
    """No such picture (never uploaded, deleted after its grace period, or removed)."""

    code = "media_not_found"


class PictureNotOwned(Forbidden):
    """Only a picture you uploaded yourself can be attached."""

    code = "media_not_owned"


class PictureUnavailable(DomainError):
    """The pictures' storage could not be reached; try again later."""

    code = "media_storage_unavailable"


class InvalidPicture(Invalid):
    """The picture reference is not acceptable."""

    code = "invalid_media"


class Media(Aggregate):
    """A picture the server had to take down. Events: ``Removed`` (created with it)."""

    class Removed(Aggregate.Created):
        """The picture was removed (``reason``: ``"risky"`` for WeChat's image check). Its
        file and thumbnail are gone; messages and covers that used it show a placeholder."""

        media_id: str
        reason: str

    @event(Removed)
    def __init__(self, id: UUID, media_id: str, reason: str) -> None:  # noqa: A002
        self.media_id = media_id
        self.reason = reason

    @classmethod
    def remove(cls, media_id: str, reason: str) -> Media:
        """The removal of ``media_id``. Raises ``PictureNotFound`` for a malformed id and
        ``InvalidPicture`` for an empty reason."""
        check_media_id(media_id)
        if not reason or len(reason) > 64:
            raise InvalidPicture("A removal has a reason of 1 to 64 characters.")
        return cls(id=picture_id_for(media_id), media_id=media_id, reason=reason)


__all__ = [
    "MEDIA_ID_PATTERN",
    "MEDIA_PATH",
    "picture_view",
    "InvalidPicture",
    "MediaId",
    "MediaRef",
    "Media",
    "PictureNotFound",
    "PictureNotOwned",
    "PictureUnavailable",
    "check_media_id",
    "picture_id_for",
]
