"""``liudong moderation …``: the texts the content check flagged for an operator.

``list`` prints the open ``ContentFlagged`` records (texts accepted with a ``review``
verdict: who wrote what, where, why), newest first; ``resolve ID`` marks one handled;
``check TEXT`` shows what the configured check (``LIUDONG_MODERATION``) says of a text
(the local word list; ``wechat`` needs ``--reader`` of a reader who logged in with WeChat).
"""

from __future__ import annotations

import contextlib
import getpass
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import click

from api.cli.context import cli_context

moderation = click.Group(
    "moderation", help="Texts the content check flagged for review: list, resolve, check."
)

SCENES = ("profile", "comment", "forum", "social_log")


@contextlib.contextmanager
def _pool() -> Iterator[Any]:
    from api.bootstrap.db import make_pool

    pool = make_pool(cli_context().database_url(), size=1)
    try:
        yield pool
    finally:
        pool.close()


def _short(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@moderation.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Resolved flags too.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(include_resolved: bool, limit: int, as_json: bool) -> None:
    """Flagged texts, newest first (open ones unless --all)."""
    from api.adapters.moderation import FlagStore
    from domain.moderation import Scene

    with _pool() as pool:
        rows = FlagStore(pool).list(include_resolved=include_resolved, limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    if not rows:
        click.echo("no flagged texts" + ("" if include_resolved else " to review"))
        return
    for row in rows:
        decision = f" ({row['resolution']})" if row.get("resolution") else ""
        state = f"resolved by {row['resolved_by']}{decision}" if row["resolved_at"] else "open"
        click.echo(
            f"#{row['id']}  {row['flagged_at']:%Y-%m-%d %H:%M:%S%z}  {state}\n"
            f"    {Scene(row['scene']).label}/{row['field']}  {row['subject'] or '-'}  "
            f"reader {row['reader_id']}  {row['provider']}: {row['label'] or '-'}\n"
            f"    {_short(row['text'])}"
        )


@moderation.command("resolve")
@click.argument("flag_id", type=int)
@click.option("--by", default=None, help="Who handled it (default: the login name).")
@click.option(
    "--as",
    "resolution",
    type=click.Choice(["approved", "removed"]),
    default=None,
    help="The decision (as the console's approve / remove); default: none recorded.",
)
def resolve_command(flag_id: int, by: str | None, resolution: str | None) -> None:
    """Mark flag FLAG_ID handled."""
    from api.adapters.moderation import FlagStore

    with _pool() as pool:
        done = FlagStore(pool).resolve(flag_id, by=by or getpass.getuser(), resolution=resolution)
    if not done:
        raise click.ClickException(f"no open flag #{flag_id}")
    click.echo(f"resolved #{flag_id}")


@moderation.command("check")
@click.argument("text")
@click.option("--scene", type=click.Choice(SCENES), default="comment", show_default=True)
@click.option(
    "--reader",
    "reader_id",
    type=UUID,
    default=None,
    help="The writer (WeChat's check needs one who logged in with WeChat).",
)
def check_command(text: str, scene: str, reader_id: UUID | None) -> None:
    """What the configured content check says of TEXT (nothing is recorded)."""
    from uuid import uuid4

    from api.bootstrap.wechat import WeChatPlatform
    from domain.moderation import ContentCheckUnavailable, Scene

    ctx = cli_context()
    database_url = ctx.database_url()
    platform = WeChatPlatform.start(ctx.settings, database_url)
    try:
        with _pool() as pool:
            moderator = platform.attach(pool).moderation
            assert moderator is not None
            if moderator.check is None:
                click.echo("moderation is off (LIUDONG_MODERATION=off)")
                return
            try:
                [verdict] = moderator.check.check(
                    [text], Scene[scene.upper()], reader_id or uuid4()
                )
            except ContentCheckUnavailable as exc:
                raise click.ClickException(f"{moderator.provider}: {exc.message}") from exc
    finally:
        platform.close()
    label = f" ({verdict.label})" if verdict.label else ""
    click.echo(f"{moderator.provider}: {verdict.suggest}{label}")
