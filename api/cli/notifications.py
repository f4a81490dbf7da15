"""``liudong notifications status``: the subscribe-message notifier at a glance — how many
items are pending, being sent, sent, refused by WeChat (43101), skipped (the reader was
online, had no grant, or has no openId) and failed, the oldest pending one, and the
notifier's lag behind the inbox per log (in log positions). Reads the database only
(``subscribe_notifications``, ``notify_tracking``), so it works while the servers run.
"""

from __future__ import annotations

import json

import click

from api.cli.context import cli_context

notifications = click.Group(
    "notifications", help="Subscribe messages to readers who are away: status."
)


@notifications.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status_command(as_json: bool) -> None:
    """Pending, sent, failed… and the notifier's lag."""
    from api.adapters.subscribe import Outbox, Templates
    from api.bootstrap.db import make_pool

    settings = cli_context().settings
    pool = make_pool(cli_context().database_url(), size=1)
    try:
        status = Outbox(pool, Templates()).status()
    finally:
        pool.close()
    status["templates"] = str(settings.subscribe_templates or "")
    if as_json:
        click.echo(json.dumps(status, ensure_ascii=False, sort_keys=True))
        return
    counts = status["counts"]
    if not settings.subscribe_templates:
        click.echo("LIUDONG_SUBSCRIBE_TEMPLATES is unset: no subscribe messages are sent")
    click.echo("  ".join(f"{name} {counts[name]}" for name in counts))
    if status["skipped"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(status["skipped"].items()))
        click.echo(f"skipped because: {reasons}")
    if status["oldest_pending"]:
        click.echo(f"oldest pending since {status['oldest_pending']}")
    for source, where in status["sources"].items():
        if where["position"] is None:
            click.echo(f"{source}: not started (inbox at {where['inbox']})")
        else:
            click.echo(
                f"{source}: at {where['position']}, inbox at {where['inbox']}, lag {where['lag']}"
            )
