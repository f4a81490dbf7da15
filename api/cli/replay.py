"""``liudong replay``: the read models as they were at a past moment, in a schema an analyst
can query. The work is ``projections.replay``; docs/OPERATIONS.md ("Time travel")."""

from __future__ import annotations

import sys

import click

from projections.registry import all_projections


def _projection_names() -> list[str]:
    return [p.name for p in all_projections()]


@click.command("replay")
@click.option(
    "--until",
    "until_text",
    required=True,
    help="The moment: ISO 8601 time with Z or an offset, e.g. 2025-05-04T08:30:00+08:00.",
)
@click.option(
    "--schema",
    "schema",
    required=True,
    help="The PostgreSQL schema to build (a lower-case identifier, e.g. analyst_t1).",
)
@click.option(
    "--projection",
    "projection_name",
    type=click.Choice([*_projection_names(), "all"]),
    default="shelf",
    show_default=True,
    help="Which read model. 'all': shelf into SCHEMA, inbox into SCHEMA_inbox, rooms into "
    "SCHEMA_rooms (their table names overlap).",
)
@click.option(
    "--page-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Events per transaction.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Drop and rebuild SCHEMA if an earlier replay made it.",
)
def replay(
    until_text: str, schema: str, projection_name: str, page_size: int, replace: bool
) -> None:
    """Build the read models as they were at --until into schema --schema, e.g.
    `SELECT status, count(*) FROM analyst_t1.books GROUP BY 1`.

    Each log is replayed in commit order from the start and stops at the first event
    recorded after --until (events recorded concurrently around that moment may straddle
    the cut). Live versions, views and the projection registry are not touched; live schema
    names (shelf, inbox, *_v<digits>, public…) are refused, and an existing schema unless
    --replace (only a replay's own schema is ever replaced). SCHEMA.replay_info says how far
    each log was read. Safe while `liudong serve` runs.
    """
    from tqdm import tqdm

    from api.bootstrap.db import eventsourcing_env
    from api.cli.context import cli_context
    from projections import replay as r
    from projections.read_model import ReadModelProjection
    from projections.registry import open_sources

    try:
        until = r.parse_until(until_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from exc
    chosen: list[ReadModelProjection] = [
        p for p in all_projections() if projection_name in ("all", p.name)
    ]
    try:
        for target in r.target_schemas(schema, chosen).values():
            r.check_schema_name(target)
    except r.SchemaRefused as exc:
        raise click.BadParameter(str(exc), param_hint="--schema") from exc
    database_url = cli_context().database_url()
    with open_sources(eventsourcing_env(database_url, pool_size=2)) as sources:
        bar = tqdm(
            desc=f"replay {projection_name}",
            unit="ev",
            unit_scale=True,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None,
        )

        def progress(done: int, total: int) -> None:
            if total:
                bar.total = total
                bar.refresh()
            bar.update(done)

        try:
            result = r.replay(
                database_url,
                chosen,
                sources,
                until=until,
                schema=schema,
                replace=replace,
                page_size=page_size,
                progress=progress,
            )
        except r.ReplayFailed as exc:
            raise click.ClickException(
                f"replay stopped on a poison event: {exc} (schema {schema} holds the events "
                "before it; fix the projection and run again with --replace)"
            ) from exc
        except r.ReplayError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            bar.close()
    click.echo(
        f"replayed {', '.join(p.projection for p in result.projections)} as of "
        f"{until.isoformat()}: {result.events:,} events in {result.seconds:.2f} s "
        f"({result.events_per_second:,.0f} events/s)"
    )
    for done in result.projections:
        click.echo(f"  {done.projection} → schema {done.schema}")
        for src in done.sources:
            if src.cut_position is not None and src.cut_event_at is not None:
                stopped = (
                    f"stopped before position {src.cut_position:,} "
                    f"(recorded {src.cut_event_at.isoformat()})"
                )
            else:
                stopped = f"reached the log's end (head {src.head:,})"
            click.echo(
                f"    {src.source:<8} {src.events:,} events up to position {src.position:,}; "
                + stopped
            )
        tables = ", ".join(f"{name} {count:,}" for name, count in done.tables.items())
        click.echo(f"    tables: {tables}")
    first = result.projections[0]
    table = "books" if "books" in first.tables else next(iter(first.tables), "replay_info")
    click.echo(f"query it: SELECT * FROM {first.schema}.{table}")


__all__ = ["replay"]
