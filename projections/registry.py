"""The one place that lists the projections and the logs they follow.

Operator commands (``liudong projections …``), ``/metrics`` and ``/readyz`` ask this module
which projections exist, so a new projection is registered here and nowhere else. Nothing
here imports ``api``: callers pass in the Applications they already have
(``sources_from_apps``) or the eventsourcing environment of a database (``open_sources``).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from eventsourcing.application import Application

from projections.read_model import ReadModelProjection
from projections.source import Source


def _optional(module: str, attribute: str) -> Any | None:
    """``module.attribute``, or None when that module does not exist (yet)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
    return getattr(mod, attribute, None)


def all_projections() -> list[ReadModelProjection]:
    """A fresh instance of every projection: ``shelf`` and, when present, ``inbox`` and
    ``rooms``."""
    from projections.shelf import ShelfProjection

    found: list[ReadModelProjection] = [ShelfProjection()]
    inbox = _optional("projections.inbox", "InboxProjection")
    if inbox is not None:
        found.append(inbox())
    rooms = _optional("projections.rooms", "RoomsProjection")
    if rooms is not None:
        found.append(rooms())
    return found


def projection_named(name: str) -> ReadModelProjection:
    """The registered projection called ``name``. Raises ``KeyError`` naming the known ones."""
    for projection in all_projections():
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in all_projections())
    raise KeyError(f"no projection {name!r} (known: {known})")


def sources_from_apps(
    library: Application[Any], chat: Application[Any] | None = None
) -> dict[str, Source]:
    """``{"library": Source, "chat": Source}`` (``chat`` only when given)."""
    sources = {"library": Source("library", library)}
    if chat is not None:
        sources["chat"] = Source("chat", chat)
    return sources


@contextlib.contextmanager
def open_sources(env: Mapping[str, str]) -> Iterator[dict[str, Source]]:
    """Build the Library (and, when ``domain.chat`` exists, Chat) Applications on the
    eventsourcing environment ``env`` (e.g. ``api.bootstrap.db.eventsourcing_env(url)``),
    yield their sources, and close them on exit."""
    from domain.library import Library

    apps: list[Application[Any]] = [Library(env=dict(env))]
    chat_cls = _optional("domain.chat", "Chat")
    if chat_cls is not None:
        apps.append(chat_cls(env=dict(env)))
    try:
        yield sources_from_apps(*apps)
    finally:
        for app in apps:
            app.close()


__all__ = ["all_projections", "open_sources", "projection_named", "sources_from_apps"]
