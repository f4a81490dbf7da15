"""``liudong serve`` and ``liudong migrate``: run the server, prepare its database."""

from __future__ import annotations

import os
import signal
from typing import Any

import click

from api.cli.context import cli_context


@click.command()
@click.option("--host", default=None, help="Interface to listen on (LIUDONG_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (LIUDONG_PORT, 8000).")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="API worker processes; one of them (the owner) also runs the projections and relay.",
)
@click.option(
    "--access-log/--no-access-log",
    default=None,
    help="Log every HTTP request (LIUDONG_ACCESS_LOG, off: it costs ~5 % of the CPU of a command).",
)
def serve(host: str | None, port: int | None, workers: int, access_log: bool | None) -> None:
    """Run the API, WebSocket gateway, projections and relay in one process (by default).

    Stops cleanly on Ctrl-C or SIGTERM, stopping the embedded servers it started."""
    import uvicorn

    from api.bootstrap.embedded import EmbeddedNats
    from api.bootstrap.logs import uvicorn_log_config

    ctx = cli_context()
    settings = ctx.settings
    host = host or settings.host
    port = port or settings.port
    access_log = settings.access_log if access_log is None else access_log
    embedded_nats: EmbeddedNats | None = None
    # Start embedded servers here (once), so workers share them. NATS_URL is not exported:
    # each worker joins the embedded nats-server as a user of the data folder (so it can
    # start it again on the same port if it dies; api.bootstrap.embedded).
    database_url = ctx.database_url()
    if not settings.nats_url:
        embedded_nats = EmbeddedNats(settings.data_dir)
        embedded_nats.start()
    os.environ["DATABASE_URL"] = database_url
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
            "api.http.asgi:app",
            host=host,
            port=port,
            workers=workers,
            factory=False,
            ws_per_message_deflate=False,
            log_level="info",
            access_log=access_log,
            lifespan="on",
            ws_max_size=64 * 1024,  # frames are ≤ 16 KiB (realtime.protocol); uvicorn: 16 MiB
            ws_ping_interval=None,  # the gateway pings at application level (realtime.gateway)
            # uvicorn's "websockets-sansio" (per frame: ~10 µs here, vs ~17 for "websockets" and
            # "wsproto") plus a direct write for the gateway's frames (api.http.ws_protocol)
            ws="api.http.ws_protocol:GatewayWebSocketProtocol",
            timeout_graceful_shutdown=10,
            # behind nginx: X-Forwarded-For/-Proto believed from these addresses only
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_config=uvicorn_log_config(),  # no token or ticket in any log line
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if embedded_nats is not None:
            embedded_nats.stop()


@click.command()
def migrate() -> None:
    """Apply pending database migrations (event store, registry, sessions, catalog…)."""
    from api.bootstrap.db import migrate as apply

    url = cli_context().database_url(apply_migrations=False)
    applied = apply(url)
    click.echo(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )
