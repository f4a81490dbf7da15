"""The ``PublishBook`` command a publish request becomes: the fields a client leaves out come
from the ISBN catalog. One rule for ``POST /v1/books`` and ``liudong demo seed``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import msgspec

from api.adapters.catalog.entries import CatalogEntry
from api.adapters.catalog.store import Catalog
from domain import commands as c

FILLED_FIELDS = ("title", "author", "publisher", "tags", "cover_url", "summary")
MAX_TAGS = 20


class PublishRefused(ValueError):
    """The request cannot become a ``PublishBook``; ``code`` is the API's problem code:
    ``title_required`` (no title given nor in the catalog) or ``validation_failed``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def catalog_fields(entry: CatalogEntry | None) -> dict[str, Any]:
    """The fields a catalog entry gives a new book, within the limits of ``PublishBook``.

    An imported catalog (douban CSV…) may hold a longer title or summary, or tags a client
    could not send; those must not make the publish of that ISBN a 422."""
    if entry is None:
        return {}
    cover = entry.cover_url or ""
    return {
        "title": entry.title[:300],
        "author": (entry.author or "")[:300],
        "publisher": (entry.publisher or "")[:300],
        "tags": list(dict.fromkeys(t for t in entry.tags if 1 <= len(t) <= 32))[:MAX_TAGS],
        "cover_url": cover if len(cover) <= 1024 else "",
        "summary": (entry.summary or "")[:5000],
    }


def publish_command(
    catalog: Catalog, isbn: str, given: Mapping[str, Any], *, book_id: UUID, owner_id: UUID
) -> c.PublishBook:
    """``PublishBook`` for the canonical ISBN-13 ``isbn`` with the client's ``given`` fields
    (``title``, ``author``, ``publisher``, ``tags``, ``cover_url``, ``summary``; ``None`` or
    absent = not sent); the others from the catalog; tags cut to 20.

    Raises ``PublishRefused`` (``title_required``, ``validation_failed``)."""
    known = catalog_fields(catalog.lookup(isbn))
    fields: dict[str, Any] = {
        "title": given.get("title") or known.get("title"),
        **{
            k: given[k] if given.get(k) is not None else known.get(k)
            for k in FILLED_FIELDS
            if k != "title"
        },
    }
    if not fields["title"]:
        raise PublishRefused("title_required", f"ISBN {isbn} is not in the catalog: send a title.")
    try:
        return msgspec.convert(
            {
                "book_id": book_id,
                "owner_id": owner_id,
                "isbn": isbn,
                **{
                    k: (v or "") if k != "tags" else list(v or [])[:MAX_TAGS]
                    for k, v in fields.items()
                },
            },
            c.PublishBook,
        )
    except msgspec.ValidationError as exc:
        raise PublishRefused("validation_failed", str(exc)) from exc
