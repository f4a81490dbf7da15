"""The list of environment variables is generated from ``Settings`` and README shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from api.bootstrap.settings import Settings, SettingsError, variables, variables_markdown
from api.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_every_field_names_its_variable_and_meaning() -> None:
    found = list(variables())
    assert [v.field for v in found] == list(Settings.__struct_fields__)
    assert all(v.env.isupper() and v.meaning for v in found)
    assert len({v.env for v in found}) == len(found)


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert variables_markdown() in readme, "run `liudong settings --markdown` into README.md"


def test_from_env_reads_every_variable_and_names_the_bad_one() -> None:
    settings = Settings.from_env({"LIUDONG_PORT": "9001", "LIUDONG_ACCESS_LOG": "true", "X": "1"})
    assert settings.port == 9001 and settings.access_log is True
    with pytest.raises(SettingsError, match="LIUDONG_WS_QUEUE_SIZE"):
        Settings.from_env({"LIUDONG_WS_QUEUE_SIZE": "0"})


def test_settings_command_hides_secrets() -> None:
    env = {
        "LIUDONG_WECHAT_SECRET": "s3cr3t-value",
        "DATABASE_URL": "postgresql://u:hunter2@db.example:5432/x",
    }
    result = CliRunner().invoke(main, ["settings"], env=env)
    assert result.exit_code == 0, result.output
    assert "LIUDONG_WECHAT_SECRET=(set, hidden)" in result.output
    assert "s3cr3t-value" not in result.output and "hunter2" not in result.output
    assert CliRunner().invoke(main, ["settings", "--markdown"]).output == variables_markdown()
