"""``liudong settings``: the environment variables Liudong reads, and their values here."""

from __future__ import annotations

import click

from api.bootstrap.settings import variables, variables_markdown
from api.cli.context import cli_context

SECRET_FIELDS = frozenset(
    {"wechat_secret", "wechat_push_token", "wechat_push_aes_key", "operator_token"}
)


@click.command("settings")
@click.option("--markdown", is_flag=True, help="The table of variables (as in README.md).")
def settings(markdown: bool) -> None:
    """List every setting: variable, value in this environment (secrets hidden), meaning."""
    if markdown:
        click.echo(variables_markdown(), nl=False)
        return
    current = cli_context().settings
    for var in variables():
        value = getattr(current, var.field)
        shown = "(set, hidden)" if var.field in SECRET_FIELDS and value else repr(value)
        if var.field == "database_url" and value:
            shown = repr(_without_password(value))
        click.echo(f"{var.env}={shown}\n    {var.meaning}")


def _without_password(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(url)
    if parts.get("password"):
        parts["password"] = "***"
    return make_conninfo(**parts)
