"""The command line: one click group, ``liudong``, whose command groups live one per module
here and are imported only when invoked (so ``liudong --help`` stays fast).

Settings reach every command through the click context (``CliContext``), read once."""

from __future__ import annotations

import importlib
import logging

import click

from api.cli.context import CliContext

# name → "module:attribute"; help texts are read from the module only when shown in full.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("api.cli.serve:serve", "Run the API, WebSocket gateway, projections and relay."),
    "migrate": ("api.cli.serve:migrate", "Apply pending database migrations."),
    "catalog": ("api.cli.catalog:catalog", "The ISBN catalog: import book lists, look up an ISBN."),
    "demo": ("api.cli.demo:demo", "Demo data: real book lists through the client's commands."),
    "projections": (
        "api.cli.projections:projections",
        "Read models: status, rebuild, skip, retry.",
    ),
    "events": ("api.cli.events:events", "The event logs: export, show one aggregate, tail."),
    "rooms": (
        "api.cli.rooms:rooms",
        "Public chat rooms: create them, list them with member counts.",
    ),
    "replay": ("api.cli.replay:replay", "Replay the logs into an analyst schema, up to a time."),
    "media": ("api.cli.media:media", "Uploaded pictures: sweep the ones never attached."),
    "moderation": ("api.cli.moderation:moderation", "Flagged texts: list, resolve; check a text."),
    "notifications": (
        "api.cli.notifications:notifications",
        "Subscribe messages to readers who are away: status, lag.",
    ),
    "settings": ("api.cli.settings:settings", "The environment variables read, and their values."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy-loading
    pattern: https://click.palletsprojects.com/en/stable/complex/#lazily-loading-subcommands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The one-line help of each command without importing its module.
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log more: -v INFO (embedded servers, projections), -vv DEBUG.",
)
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Liudong (流动): event-sourced backend of the drifting library.

    Settings come from the environment (DATABASE_URL, NATS_URL, LIUDONG_*); with no
    DATABASE_URL / NATS_URL, embedded PostgreSQL and nats-server run under LIUDONG_DATA_DIR.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(verbose=verbose)
