"""``liudong events …``: export the event logs for analysis, show one aggregate's history,
follow the logs live. Read-only; see ``api.adapters.eventlog`` for the exported shape."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any
from uuid import UUID

import click
import psycopg
from psycopg import sql

from api.adapters.eventlog import (
    MAX_JOBS,
    PARALLEL_MIN_EVENTS,
    SEEK_MARGIN,
    CsvWriter,
    LogReader,
    NdjsonWriter,
    ParquetWriter,
    WriteBehind,
    Writer,
    export_jobs,
    export_parallel,
    export_tasks,
    format_event,
)
from api.bootstrap.db import eventsourcing_env
from api.cli.context import cli_context
from domain.instants import InvalidInstant, parse_instant
from projections.registry import open_sources
from projections.source import Source, gc_paused

CONTEXTS = ("library", "chat")


def _database_url() -> str:
    return cli_context().database_url()


@contextlib.contextmanager
def _logs() -> Iterator[tuple[psycopg.Connection[Any], dict[str, Source]]]:
    database_url = _database_url()
    with (
        open_sources(eventsourcing_env(database_url, pool_size=1)) as sources,
        psycopg.connect(database_url, autocommit=True, application_name="liudong events") as conn,
    ):
        yield conn, sources


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except InvalidInstant as exc:
        raise click.BadParameter(str(exc), param_hint=name) from exc


events = click.Group("events", help="The event logs: export, show one aggregate, tail.")


@events.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "csv", "parquet"]),
    default="ndjson",
    show_default=True,
)
@click.option(
    "--out",
    "out_path",
    required=True,
    help="File to write; '-' writes NDJSON or CSV to standard output.",
)
@click.option(
    "--since", help="Only events recorded at or after this ISO 8601 time (with Z or an offset)."
)
@click.option("--until", help="Only events recorded before this ISO 8601 time.")
@click.option(
    "--type", "types", multiple=True, help="Only this event type, e.g. Loan.Requested (repeatable)."
)
@click.option(
    "--context",
    "contexts",
    multiple=True,
    type=click.Choice(CONTEXTS),
    help="Only this context's log (repeatable; default both).",
)
@click.option(
    "--include-contact",
    is_flag=True,
    help="Include contact details (phone / WeChat id): personal data.",
)
@click.option("--page-size", default=5000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes reading and decoding the logs (1: this process only). Default: "
    f"the CPUs available, at most {MAX_JOBS}, from {PARALLEL_MIN_EVENTS:,} events on.",
)
def export_command(  # noqa: PLR0913
    fmt: str,
    out_path: str,
    since: str | None,
    until: str | None,
    types: tuple[str, ...],
    contexts: tuple[str, ...],
    include_contact: bool,
    page_size: int,
    jobs: int | None,
) -> None:
    """Export events of both contexts' logs (library, then chat, each in log order).

    Columns: context, position, recorded_at, aggregate_id, aggregate_version, event_type,
    data (the event's fields as JSON: a string in CSV and Parquet, an object in NDJSON).
    Memory does not grow with the log: pages are read by keyset and written as they come
    (one Parquet row group per page), by worker processes on a large log (--jobs). A progress
    bar and a summary go to standard error.
    """
    from tqdm import tqdm

    start_at, end_at = _when(since, "--since"), _when(until, "--until")
    if fmt == "parquet" and out_path == "-":
        raise click.BadParameter("Parquet needs a file", param_hint="--out")
    started = time.monotonic()
    written = scanned = 0
    with _logs() as (conn, sources), _writer(fmt, out_path) as writer, gc_paused():
        # gc_paused: pages are all acyclic garbage (reference counting frees them); cyclic
        # collections would scan the pages in flight and every module's objects again and
        # again (see projections.source.GC_PAUSE_PAGE_SIZE)
        readers = [LogReader(conn, sources[c]) for c in (contexts or CONTEXTS) if c in sources]
        plans = []
        for reader in readers:
            after = reader.seek(start_at) if start_at else 0
            plans.append((reader, after, reader.head()))
        total = sum(max(0, head - after) for _, after, head in plans)
        workers = export_jobs(jobs, total)
        with tqdm(
            total=total,
            unit="ev",
            unit_scale=True,
            desc="export",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None,
        ) as bar:
            if workers > 1:
                tasks = export_tasks(
                    _database_url(),
                    [(reader.context, after, head) for reader, after, head in plans],
                    fmt,
                    jobs=workers,
                    page_size=page_size,
                    types=types,
                    include_contact=include_contact,
                    since=start_at,
                    until=end_at,
                )
                for chunk in export_parallel(
                    tasks, workers, eventsourcing_env(_database_url(), pool_size=1)
                ):
                    for payload in chunk.payloads:
                        writer.write_encoded(payload)
                    written += chunk.written
                    scanned += chunk.scanned
                    bar.update(chunk.task.stop - chunk.task.after)
            else:
                for reader, after, head in plans:
                    pages = reader.pages(
                        after=after,
                        types=types,
                        page_size=page_size,
                        stop=head,
                        include_contact=include_contact,
                    )
                    with contextlib.closing(pages):  # its read-ahead ends before the next's
                        for page in pages:
                            chosen = page.between(start_at, end_at)
                            if chosen:
                                writer.write(chosen)
                            written += len(chosen)
                            scanned += page.scanned
                            bar.update(page.last_position - after)
                            after = page.last_position
                            if page and end_at and min(page.recorded_at) >= end_at + SEEK_MARGIN:
                                # later events are later still (api.adapters.eventlog)
                                break
    seconds = time.monotonic() - started
    rate = written / seconds if seconds else 0.0
    click.echo(
        f"exported {written:,} events (scanned {scanned:,}) in {seconds:.2f} s "
        f"({rate:,.0f} events/s) to {out_path}",
        err=True,
    )


@contextlib.contextmanager
def _writer(fmt: str, out_path: str) -> Iterator[Writer]:
    stream: IO[bytes] | None = None
    if fmt == "parquet":
        writer: Writer = ParquetWriter(out_path)
    else:
        stream = sys.stdout.buffer if out_path == "-" else open(out_path, "wb")  # noqa: SIM115
        writer = NdjsonWriter(stream) if fmt == "ndjson" else CsvWriter(stream)
    writer = WriteBehind(writer)  # pages are written while the next one is decoded
    try:
        yield writer
    finally:
        writer.close()
        if stream is not None and out_path != "-":
            stream.close()


@events.command("show")
@click.argument("aggregate_id", type=click.UUID)
@click.option("--include-contact", is_flag=True, help="Show contact details (personal data).")
@click.option(
    "--at",
    "at",
    default=None,
    help="Time travel: also print the aggregate's state as it was at this ISO 8601 time.",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(1),
    default=None,
    help="Time travel: also print the aggregate's state at this version.",
)
def show_command(
    aggregate_id: UUID, include_contact: bool, at: str | None, version: int | None
) -> None:
    """The history of one aggregate (reader, book, loan, conversation, room), oldest first,
    from whichever context's log holds it; with --at or --version, its state then (rebuilt
    by replaying its events, upcasters included)."""
    when = _when(at, "--at")
    with _logs() as (conn, sources):
        for name in CONTEXTS:
            if name not in sources:
                continue
            reader = LogReader(conn, sources[name])
            rows = reader.history(aggregate_id)
            if rows:
                break
        else:
            raise click.ClickException(f"no events of {aggregate_id} in any log")
        history = [reader.decode(row, include_contact=include_contact) for row in rows]
        kind = history[0].event_type.split(".", 1)[0]
        click.echo(f"{kind} {aggregate_id} ({reader.context} log, {len(rows)} events)")
        for event in history:
            stamp = event.recorded_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            click.echo(
                f"  v{event.aggregate_version:<4} {stamp}Z  {event.event_type}  "
                f"(position {event.position})"
            )
            for key, value in event.data.items():
                click.echo(f"        {key}: {value}")
        if when is not None:
            before = [e.aggregate_version for e in history if e.recorded_at <= when]
            if not before:
                raise click.ClickException(f"{aggregate_id} did not exist yet at {at}")
            version = max(before) if version is None else min(version, max(before))
        if version is not None:
            state = reader.source.app.repository.get(aggregate_id, version=version)
            click.echo(f"state at v{state.version} ({state.modified_on:%Y-%m-%d %H:%M:%S}Z):")
            for key, value in _public_state(state, include_contact).items():
                click.echo(f"        {key}: {value}")


def _public_state(aggregate: Any, include_contact: bool) -> dict[str, Any]:
    """An aggregate's attributes as a reader of ``show`` wants them (no private ones, no
    contact details unless asked)."""
    state = {k: v for k, v in vars(aggregate).items() if not k.startswith("_")}
    if not include_contact and "contact" in state:
        state["contact"] = "(hidden: --include-contact)" if state["contact"] else None
    return state


@events.command("tail")
@click.option(
    "--context",
    "contexts",
    multiple=True,
    type=click.Choice(CONTEXTS),
    help="Only this context's log (repeatable; default both).",
)
@click.option(
    "--from-position",
    type=int,
    default=None,
    help="Start after this position (default: the current head, i.e. new events).",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="Stop after this many events (default: until Ctrl-C).",
)
@click.option("--include-contact", is_flag=True, help="Show contact details (personal data).")
def tail_command(
    contexts: tuple[str, ...],
    from_position: int | None,
    count: int | None,
    include_contact: bool,
) -> None:
    """Follow the logs live: print each event as it commits (Ctrl-C to stop)."""
    printed = 0
    with _logs() as (conn, sources):
        readers = [LogReader(conn, sources[c]) for c in (contexts or CONTEXTS) if c in sources]
        positions = {
            r.context: r.head() if from_position is None else from_position for r in readers
        }
        for reader in readers:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(reader.source.channel)))
        try:
            while count is None or printed < count:
                for reader in readers:
                    for page in reader.rows(after=positions[reader.context], page_size=500):
                        for row in page:
                            click.echo(
                                format_event(reader.decode(row, include_contact=include_contact))
                            )
                            positions[reader.context] = row[0]
                            printed += 1
                            if count is not None and printed >= count:
                                return
                # a NOTIFY wakes us at once; poll every second anyway
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    pass
        except KeyboardInterrupt:
            click.echo(f"\n{printed} event(s)", err=True)


__all__ = ["events"]
