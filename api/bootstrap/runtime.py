"""Resolving the real services a command needs: the configured ones, or the embedded default."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from api.bootstrap.db import migrate, pending_migrations
from api.bootstrap.embedded import EmbeddedNats, start_postgres
from api.bootstrap.settings import Settings


@dataclass
class Services:
    """URLs of the PostgreSQL database and NATS server in use."""

    database_url: str
    nats_url: str | None
    embedded_nats: EmbeddedNats | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.embedded_nats is not None:
            self.embedded_nats.stop()


class NotMigrated(RuntimeError):
    """A configured database has migrations pending; the message names ``liudong migrate``."""


def resolve_database_url(settings: Settings, *, apply_migrations: bool | None = None) -> str:
    """``DATABASE_URL``, or the embedded PostgreSQL under ``settings.data_dir``.

    Migrations are applied automatically on the embedded default (``apply_migrations=None``)
    and never implicitly on a configured database (run ``liudong migrate``).

    Raises ``NotMigrated`` when a configured database has pending migrations and
    ``apply_migrations`` is ``None`` (``False`` skips the check, for ``liudong migrate``)."""
    if settings.database_url:
        url = settings.database_url
        if apply_migrations:
            migrate(url)
        elif apply_migrations is None:
            pending = pending_migrations(url)
            if pending:
                raise NotMigrated(
                    f"the database has {len(pending)} pending migration(s) "
                    f"({pending[0]}…): run `liudong migrate` first"
                )
        return url
    url = start_postgres(settings.data_dir)
    if apply_migrations is None or apply_migrations:
        migrate(url)
    return url


@contextlib.contextmanager
def services(settings: Settings, *, need_nats: bool = True) -> Iterator[Services]:
    """The database (and NATS when ``need_nats``) for a command; embedded ones as needed."""
    database_url = resolve_database_url(settings)
    embedded: EmbeddedNats | None = None
    nats_url = settings.nats_url
    if need_nats and not nats_url:
        embedded = EmbeddedNats(settings.data_dir)
        nats_url = embedded.start()
    svc = Services(database_url=database_url, nats_url=nats_url, embedded_nats=embedded)
    try:
        yield svc
    finally:
        svc.close()
