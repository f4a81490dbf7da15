"""``liudong projections …``: status, rebuild, skip and retry of the read-model projections.

They talk to the database only (``projections.ops``), so they work while ``liudong serve``
runs (here or on another machine), against the configured or the embedded PostgreSQL.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from api.cli.context import cli_context
from projections import ops
from projections.registry import all_projections, open_sources, projection_named
from projections.runner import ProjectionFailed
from projections.source import Source


@dataclass
class _Env:
    database_url: str
    sources: dict[str, Source]


@contextlib.contextmanager
def _env() -> Iterator[_Env]:
    from api.bootstrap.db import eventsourcing_env

    database_url = cli_context().database_url()
    with open_sources(eventsourcing_env(database_url, pool_size=2)) as sources:
        yield _Env(database_url, sources)


def _projection(name: str) -> Any:
    try:
        return projection_named(name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="NAME") from exc


projections = click.Group(
    "projections",
    help="Read-model projections: status, rebuild (blue/green), skip a poison event.",
)


@projections.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def status_command(as_json: bool) -> None:
    """Per projection: active version, position and lag per log, state, failures, rebuild.

    Lag is in events (log head − position) and in seconds (age of the oldest event not yet
    processed; 0 when caught up). State: running (a process holds the projection's lock),
    stopped, failed (a poison event; see ``skip`` and ``retry``) or missing (never built).
    """
    with _env() as env:
        found = ops.status(env.database_url, all_projections(), env.sources)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found], indent=2, ensure_ascii=False))
        return
    for st in found:
        version = f"v{st.version} ({st.schema})" if st.version else "no version yet"
        holder = f"  held by {st.holder}" if st.holder else ""
        click.echo(f"{st.name:<8} {version:<16} {st.state}{holder}")
        for src in st.sources:
            click.echo(
                f"  {src.source:<8} position {src.position:,} / head {src.head:,}   "
                f"lag {src.lag_events:,} events, {src.lag_seconds:,.1f} s"
            )
        for f in st.failures:
            when = f.failed_at.strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"  FAILED at {f.source} position {f.position} ({when}): {f.error}")
            click.echo(
                f"    fix and `liudong projections retry {st.name}`, or `liudong "
                f"projections skip {st.name} {f.position} --source {f.source} "
                f"--reason TEXT`"
            )
        if st.rebuild:
            where = ", ".join(f"{k} {v:,}" for k, v in st.rebuild.positions.items())
            running = "running" if st.rebuilding else "not running (resume with --resume)"
            click.echo(
                f"  rebuild v{st.rebuild.version} ({st.rebuild.schema}) at {where}: {running}"
            )


@projections.command("rebuild")
@click.argument("name")
@click.option(
    "--page-size",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Events per transaction.",
)
@click.option("--keep-old", is_flag=True, help="Keep the previous version (inactive).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the version an interrupted rebuild left, instead of restarting.",
)
def rebuild_command(name: str, page_size: int, keep_old: bool, resume: bool) -> None:
    """Rebuild projection NAME into a new version while the current one keeps serving, then
    switch to it atomically and drop the old one.

    Safe while ``liudong serve`` runs: the switch waits for the live runner's page, and the
    live runner continues on the new version from the same position.
    """
    from tqdm import tqdm

    projection = _projection(name)
    with _env() as env:
        bar = tqdm(
            desc=f"rebuild {name}", unit="ev", unit_scale=True, file=sys.stderr, dynamic_ncols=True
        )

        def progress(done: int, total: int) -> None:
            if total and total != bar.total:
                bar.total = max(total, bar.n + done)
                bar.refresh()
            bar.update(done)

        try:
            result = ops.rebuild(
                env.database_url,
                projection,
                env.sources,
                page_size=page_size,
                progress=progress,
                keep_old=keep_old,
                resume=resume,
            )
        except ProjectionFailed as exc:
            raise click.ClickException(
                f"rebuild stopped on a poison event: {exc} (the new version stays inactive; "
                "see `liudong projections status`)"
            ) from exc
        except ops.OpsError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            bar.close()
    at = ", ".join(f"{k} {v:,}" for k, v in result.positions.items())
    old = result.old_schema or "nothing"
    click.echo(
        f"rebuilt {name}: {old} → {result.new_schema}, {result.events:,} events in "
        f"{result.seconds:.1f} s ({result.events_per_second:,.0f} events/s); switched at {at}"
        + (f"; dropped {result.old_schema}" if result.dropped_old else "")
    )


def _operator() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@projections.command("skip")
@click.argument("name")
@click.argument("position", type=click.IntRange(1))
@click.option("--source", required=True, help="The log of the failed event (library, chat).")
@click.option("--reason", required=True, help="Why skipping it is right (kept with the failure).")
@click.option("--by", default=None, help="Who skips it (default: user@host).")
def skip_command(name: str, position: int, source: str, reason: str, by: str | None) -> None:
    """Skip the failed event at POSITION of projection NAME, explicitly.

    Only a position recorded as failed can be skipped. The failure keeps who, when and why;
    the tracking position moves past it and the runner resumes within 5 s.
    """
    with _env() as env:
        try:
            result = ops.skip(
                env.database_url, name, source, position, reason=reason, by=by or _operator()
            )
        except ops.OpsError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"skipped {source} position {position} of {name} ({', '.join(result.schemas)})")


@projections.command("retry")
@click.argument("name")
def retry_command(name: str) -> None:
    """Clear the recorded failures of NAME so its runner tries those events again (after a
    fix is deployed). If the event still fails, it is recorded again."""
    with _env() as env:
        cleared = ops.retry(env.database_url, name)
    click.echo(f"cleared {cleared} failure(s) of {name}; the runner retries within 5 s")


__all__ = ["projections"]
