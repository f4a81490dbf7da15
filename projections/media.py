"""How the read models show a picture attached to a message (``domain.media``).

A message's event stores ``media = {"id", "width", "height"}`` (or nothing). The read models
keep that dict in a ``media jsonb`` column (``{"removed": true}`` added once the picture was
taken down, ``Media.Removed``) and show it as a *picture view*::

    {"id": "<sha-256 hex>", "url": "/v1/media/<id>", "thumb_url": "/v1/media/<id>/thumb",
     "width": 1600, "height": 1200, "removed": false}

``url`` / ``thumb_url`` are paths on the API's own origin (what ``GET /v1/media/{id}`` and
its ``/thumb`` serve); a client prefixes the origin it calls the API on. A removed picture
keeps its id and size (so a layout does not jump) with ``url`` and ``thumb_url`` ``null``
and ``removed: true``: the client shows its own placeholder. Old messages have no picture
(``media: null``).
"""

from __future__ import annotations

from typing import Any

from domain.media import MEDIA_PATH, picture_view


def removed(media: Any) -> dict[str, Any]:
    """The stored ``media`` dict of a picture taken down."""
    return {**dict(media), "removed": True}


PICTURE_VIEW_SQL = (
    "CASE WHEN {m}.media IS NULL THEN NULL ELSE jsonb_build_object("
    "'id', {m}.media->>'id', "
    "'url', CASE WHEN ({m}.media->>'removed')::boolean THEN NULL "
    "ELSE '" + MEDIA_PATH + "/' || ({m}.media->>'id') END, "
    "'thumb_url', CASE WHEN ({m}.media->>'removed')::boolean THEN NULL "
    "ELSE '" + MEDIA_PATH + "/' || ({m}.media->>'id') || '/thumb' END, "
    "'width', coalesce(({m}.media->>'width')::int, 0), "
    "'height', coalesce(({m}.media->>'height')::int, 0), "
    "'removed', coalesce(({m}.media->>'removed')::boolean, false)) END"
)
"""``picture_view`` in SQL, for a table alias ``m`` with a ``media`` column:
``PICTURE_VIEW_SQL.format(m="m")``."""

__all__ = ["MEDIA_PATH", "PICTURE_VIEW_SQL", "picture_view", "removed"]
