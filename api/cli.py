"""``liudong``: the one command-line entry point (``liudong --help``)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import click

from api.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Liudong (流动): event-sourced backend of the drifting library.

    Settings come from the environment (DATABASE_URL, NATS_URL, LIUDONG_*); with no
    DATABASE_URL / NATS_URL, embedded PostgreSQL and nats-server run under LIUDONG_DATA_DIR.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--host", default=None, help="Interface to listen on (LIUDONG_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (LIUDONG_PORT, 8000).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="API worker processes (projections run in one of them at a time).")
@click.option("--access-log/--no-access-log", default=None,
              help="Log every HTTP request (LIUDONG_ACCESS_LOG, off: it costs ~5 % of the CPU "
                   "of a command).")
def serve(host: str | None, port: int | None, workers: int, access_log: bool | None) -> None:
    """Run the API, WebSocket gateway, projections and relay in one process (by default).

    Stops cleanly on Ctrl-C or SIGTERM, stopping the embedded servers it started."""
    import uvicorn

    from api.embedded import EmbeddedNats
    from api.runtime import resolve_database_url

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    access_log = settings.access_log if access_log is None else access_log
    embedded_nats: EmbeddedNats | None = None
    # Start embedded servers here (once), so workers share them.
    database_url = resolve_database_url(settings)
    env_updates = {"DATABASE_URL": database_url}
    if not settings.nats_url:
        embedded_nats = EmbeddedNats(settings.data_dir)
        env_updates["NATS_URL"] = embedded_nats.start()
    os.environ.update(env_updates)
    click.echo(f"Liudong on http://{host}:{port}  (OpenAPI: http://{host}:{port}/schema)")
    if not settings.database_url:
        click.echo(f"embedded PostgreSQL + nats-server under {settings.data_dir}")
    def stop_on_sigterm(signum: int, frame: Any) -> None:
        # uvicorn re-raises the signal it caught after its graceful shutdown; turning it
        # into SystemExit lets the finally below and atexit (pgserver) stop the servers.
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        uvicorn.run(
            "api.asgi:app", host=host, port=port, workers=workers, factory=False,
            ws_per_message_deflate=False, log_level="info", access_log=access_log, lifespan="on",
            ws_max_size=64 * 1024,  # frames are ≤ 16 KiB (realtime.protocol); uvicorn: 16 MiB
            ws_ping_interval=None,  # the gateway pings at application level (realtime.gateway)
            ws="websockets-sansio",  # per frame: ~10 µs here, vs ~17 for "websockets", "wsproto"
            timeout_graceful_shutdown=10,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
        if embedded_nats is not None:
            embedded_nats.stop()


@main.command()
def migrate() -> None:
    """Apply pending database migrations (event store, registry, sessions, catalog…)."""
    from api.db import migrate as apply
    from api.runtime import resolve_database_url

    url = resolve_database_url(_settings(), apply_migrations=False)
    applied = apply(url)
    click.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


def _register_optional_groups() -> None:
    """Command groups living in their own modules."""
    from api.catalog_cli import catalog

    main.add_command(catalog)
    for module, name in (
        ("api.demo", "demo"),
        ("api.projections_cli", "projections"),
        ("api.events_cli", "events"),
        ("api.rooms_cli", "rooms"),
        ("api.replay_cli", "replay"),
    ):
        try:
            mod: Any = __import__(module, fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        main.add_command(getattr(mod, name))


_register_optional_groups()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
