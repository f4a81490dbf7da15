"""``liudong media …``: the uploaded pictures' lifecycle from the command line.

``sweep`` deletes the pictures nobody attached within the grace period
(``LIUDONG_MEDIA_GRACE``, or ``--grace``), exactly what a running server does every
``LIUDONG_MEDIA_SWEEP_INTERVAL`` seconds (safe to run while servers run: each picture is
deleted once). It uses the configured storage (``LIUDONG_S3_BUCKET`` or
``LIUDONG_DATA_DIR/media``) and database.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import click

from api.adapters.media import MediaStore
from api.cli.context import cli_context

media = click.Group("media", help="Uploaded pictures: sweep the ones never attached.")


@contextlib.contextmanager
def _store() -> Iterator[MediaStore]:
    from api.bootstrap.db import make_pool
    from api.bootstrap.media import media_store_for

    ctx = cli_context()
    database_url = ctx.database_url()
    pool = make_pool(database_url, size=2, name="liudong-media-cli")
    store = media_store_for(ctx.settings, pool)
    try:
        yield store
    finally:
        store.close()
        pool.close()


@media.command("sweep")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds an unattached picture is kept (default: LIUDONG_MEDIA_GRACE).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def sweep_command(grace: float | None, dry_run: bool, as_json: bool) -> None:
    """Delete the uploaded pictures never attached to anything within the grace period."""
    with _store() as store:
        result = store.sweep(grace_seconds=grace, dry_run=dry_run)
        storage = store.storage.kind
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "deleted": result.deleted,
                    "bytes_freed": result.bytes_freed,
                    "ids": result.ids,
                    "storage": storage,
                }
            )
        )
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {result.deleted} unattached picture(s), {result.bytes_freed:,} bytes "
        f"({storage} storage)"
    )
    for media_id in result.ids:
        click.echo(f"  {media_id}")
