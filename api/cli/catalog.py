"""``liudong catalog …``: import book metadata from CSV and look ISBNs up.

The database is ``DATABASE_URL``, or the embedded PostgreSQL (migrated automatically) when
it is unset. A configured database must have been migrated (``liudong migrate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click
import msgspec
import psycopg

from api.adapters.catalog import Catalog, CatalogImportError, ImportSummary, import_csv
from api.adapters.isbn import InvalidIsbn, normalize_isbn
from api.bootstrap.db import make_pool
from api.cli.context import cli_context

catalog = click.Group(
    "catalog",
    help="The local ISBN catalog: import book metadata from CSV files, look ISBNs up.",
)


@contextlib.contextmanager
def _catalog(ctx: click.Context) -> Iterator[Catalog]:
    url = cli_context().database_url()
    pool = make_pool(url, size=2, name="liudong-catalog")
    try:
        yield Catalog(pool)
    except psycopg.errors.UndefinedTable as exc:
        raise click.ClickException(
            f"the catalog table is missing ({exc.diag.message_primary}); run `liudong migrate`"
        ) from exc
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"database error: {exc}") from exc
    finally:
        pool.close()


def format_summary(summary: ImportSummary) -> str:
    """The human-readable report printed by ``liudong catalog import``."""
    lines = [
        f"file:           {summary.path} ({summary.format} layout)",
        f"rows read:      {summary.rows_read:,}",
        f"imported:       {summary.imported:,} rows → {summary.distinct_isbns:,} distinct ISBNs",
        f"rejected:       {summary.rejected_total:,}",
    ]
    for reason, count in summary.rejected.items():
        lines.append(f"  {reason}: {count:,}")
    if summary.samples:
        lines.append("first rejected rows:")
        for r in summary.samples:
            lines.append(f"  line {r.line}: {r.reason} — {r.detail}")
    lines.append(f"time:           {summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s)")
    return "\n".join(lines)


@catalog.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Rows written per transaction.",
)
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@click.pass_context
def import_command(ctx: click.Context, file: Path, batch_size: int, no_progress: bool) -> None:
    """Import book metadata from the CSV file FILE.

    The layout is detected from the header: douban, goodbooks-10k (books.csv), or generic
    with the columns isbn, title and optionally author, publisher, published_year,
    language, tags (separated by "|"), cover_url, summary. Rows repeating an ISBN are merged
    (tags unioned);
    invalid rows are skipped and counted by reason."""
    with _catalog(ctx) as cat:
        try:
            summary = import_csv(file, cat, batch_size=batch_size, progress=not no_progress)
        except CatalogImportError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(format_summary(summary))


@catalog.command("lookup")
@click.argument("isbn")
@click.pass_context
def lookup_command(ctx: click.Context, isbn: str) -> None:
    """Print the catalog entry of ISBN as JSON (exit status 1 if not in the catalog)."""
    try:
        key = normalize_isbn(isbn)
    except InvalidIsbn as exc:
        raise click.BadParameter(str(exc), param_hint="ISBN") from exc
    with _catalog(ctx) as cat:
        entry = cat.lookup(key)
    if entry is None:
        click.echo(f"not found: {key}", err=True)
        ctx.exit(1)
    click.echo(msgspec.json.format(msgspec.json.encode(entry), indent=2).decode())
