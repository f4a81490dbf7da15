"""``liudong rooms …``: create and list the public chat rooms.

Rooms are created by operators only (there is no REST endpoint for it): ``create`` runs the
``CreateRoom`` command of the Chat application against ``DATABASE_URL`` (or the embedded
PostgreSQL). Creating a room that exists with the same title does nothing; with another
title it fails (``room_already_exists``).

``list`` first brings the rooms read model up to date (so a room just created shows even
when no server runs), then prints each room with its live member count, collected from the
running nodes over NATS (``liudong.presence_sync``) when a NATS server is reachable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row

from api.cli.context import cli_context
from domain import chat_commands as cc
from domain.errors import DomainError

rooms = click.Group("rooms", help="Public chat rooms: create them, list them with member counts.")


@contextlib.contextmanager
def _chat() -> Iterator[tuple[Any, str, Any]]:
    from api.bootstrap.db import eventsourcing_env
    from domain.chat import Chat

    ctx = cli_context()
    settings = ctx.settings
    database_url = ctx.database_url()
    chat = Chat(env=eventsourcing_env(database_url, pool_size=2))
    try:
        yield chat, database_url, settings
    finally:
        chat.close()


@rooms.command("create")
@click.argument("name")
@click.argument("title")
def create_command(name: str, title: str) -> None:
    """Create room NAME (a slug: a-z, 0-9, '-') titled TITLE."""
    from domain.chat import room_id_for

    with _chat() as (chat, _url, _settings):
        try:
            recorded = chat.handle(cc.CreateRoom(name=name, title=title))
        except DomainError as exc:
            raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    if recorded.position is None:
        click.echo(f"room {name!r} already exists ({room_id_for(name)})")
    else:
        click.echo(f"created room {name!r} ({recorded.id}): {title}")


def catch_up_rooms(database_url: str, chat: Any) -> None:
    """Apply the Chat log's pending events to the rooms read model (safe while a server
    runs the same projection: pages are serialised by the tracking row lock)."""
    from projections.rooms import RoomsProjection
    from projections.runner import ReadModelRunner
    from projections.source import Source
    from projections.versions import ensure_active_version

    projection = RoomsProjection()
    ensure_active_version(database_url, projection)
    source = Source("chat", chat)
    runner = ReadModelRunner(projection, database_url, {"chat": source})
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        while runner.process_page(conn, source):
            pass


async def _collect_members(nats_url: str, wait: float) -> dict[str, int]:
    """Ask the running nodes for their room presence and count distinct readers per room."""
    import nats

    from realtime.presence import SUBJECT_PREFIX, SYNC_SUBJECT
    from realtime.protocol import PresenceSync, encode, presence_state_decoder

    members: dict[str, dict[str, set[str]]] = {}
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:

        async def on_state(msg: Any) -> None:
            state = presence_state_decoder.decode(msg.data)
            members.setdefault(state.room, {})[state.node] = {str(m.id) for m in state.members}

        await nc.subscribe(SUBJECT_PREFIX + "*", cb=on_state)
        await nc.publish(SYNC_SUBJECT, encode(PresenceSync(node="liudong-cli")))
        await nc.flush()
        await asyncio.sleep(wait)
    finally:
        await nc.close()
    return {room: len(set().union(*nodes.values())) for room, nodes in members.items()}


def _nats_url(settings: Any) -> str | None:
    """The configured NATS, or the embedded one if a server already runs it (never starts one)."""
    if settings.nats_url:
        return str(settings.nats_url)
    from api.bootstrap.embedded import EmbeddedNats

    return EmbeddedNats(settings.data_dir).running_url()


@rooms.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.option(
    "--wait",
    default=0.5,
    show_default=True,
    type=float,
    help="Seconds to collect member counts from the running nodes.",
)
def list_command(as_json: bool, wait: float) -> None:
    """Every room: name, title, messages, live members."""
    from api.bootstrap.db import make_pool
    from projections.rooms import RoomQueries

    with _chat() as (chat, database_url, settings):
        catch_up_rooms(database_url, chat)
        pool = make_pool(database_url, size=1, name="liudong-rooms")
        try:
            rows = RoomQueries(pool).rooms()
        finally:
            pool.close()
    counts: dict[str, int] = {}
    url = _nats_url(settings)
    if url and rows:
        try:
            # its own thread and loop: works even when called from a running event loop
            with concurrent.futures.ThreadPoolExecutor(1) as pool_:
                counts = pool_.submit(asyncio.run, _collect_members(url, wait)).result()
        except Exception as exc:  # no NATS: counts unknown, the list still useful
            click.echo(f"(member counts unavailable: {exc})", err=True)
    for row in rows:
        entry = {
            "id": str(row["id"]),
            "name": row["name"],
            "title": row["title"],
            "messages": row["last_seq"],
            "members": counts.get(row["name"], 0),
            "created_at": row["created_at"].isoformat(),
        }
        if as_json:
            click.echo(json.dumps(entry, ensure_ascii=False))
        else:
            click.echo(
                f"{entry['name']:<24} {entry['members']:>5} online  {entry['messages']:>7} msgs  "
                f"{entry['title']}"
            )
    if not rows and not as_json:
        click.echo("no rooms yet: liudong rooms create NAME TITLE")


__all__ = ["catch_up_rooms", "rooms"]
