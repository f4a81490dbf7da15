"""What every ``liudong`` command shares, passed through the click context: the settings
(read once from the environment) and the database they name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported when first used: `liudong --help` stays fast
    from api.bootstrap.settings import Settings


@dataclass
class CliContext:
    """``ctx.obj`` of the ``liudong`` group; commands get it with ``cli_context()``."""

    verbose: int = 0
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """The settings, read from the environment on first use.

        Raises ``click.ClickException`` naming the variable when one is unusable."""
        from api.bootstrap.settings import Settings, SettingsError

        if self._settings is None:
            try:
                self._settings = Settings.from_env()
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings

    def database_url(self, *, apply_migrations: bool | None = None) -> str:
        """``DATABASE_URL`` or the embedded PostgreSQL (started, migrated); on a configured
        database that is not migrated, a ``click.ClickException`` naming ``liudong migrate``;
        one that does not answer, a ``click.ClickException`` saying so.
        """
        import psycopg

        from api.bootstrap.runtime import NotMigrated, resolve_database_url

        try:
            return resolve_database_url(self.settings, apply_migrations=apply_migrations)
        except NotMigrated as exc:
            raise click.ClickException(str(exc)) from exc
        except psycopg.OperationalError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise click.ClickException(f"cannot reach the database: {reason}") from exc


def cli_context() -> CliContext:
    """The current command's ``CliContext`` (a default one when a command runs on its own,
    e.g. from ``click.testing.CliRunner``)."""
    return click.get_current_context().ensure_object(CliContext)
