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


def test_an_empty_limit_turns_it_off_while_other_empty_variables_count_as_unset() -> None:
    limits = {
        "LIUDONG_RATE_LOGIN_ADDRESS": "",
        "LIUDONG_RATE_LOGIN_CODE": "",
        "LIUDONG_RATE_LOAN_REQUESTS": "",
        "LIUDONG_RATE_CHAT_SENDS": "",
        "LIUDONG_RATE_ROOM_SENDS": "",
        "LIUDONG_WS_FRAME_RATE": "",
    }
    off = Settings.from_env({**limits, "LIUDONG_PORT": "", "LIUDONG_HOST": "", "DATABASE_URL": ""})
    fields = {v.env: v.field for v in variables()}
    assert {var: getattr(off, fields[var]) for var in limits} == dict.fromkeys(limits, "")
    # the others: empty is unset, the default applies
    assert off.port == 8000 and off.host == "127.0.0.1" and off.database_url is None
    # unset limits keep their defaults; a set one is read
    default = Settings.from_env({"LIUDONG_RATE_ROOM_SENDS": "3/second"})
    assert default.rate_chat_sends == "60/minute" and default.ws_frame_rate == "120/minute"
    assert default.rate_room_sends == "3/second"
    # every "empty: off" setting is one whose empty value is kept
    assert {v.env for v in variables() if v.rate} == {
        v.env for v in variables() if "empty: off" in v.meaning
    }


@pytest.mark.parametrize("value", ["abc", "10/fortnight", "-1/minute"])
def test_a_limit_that_is_not_a_rate_is_refused_naming_its_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="LIUDONG_RATE_ROOM_SENDS"):
        Settings.from_env({"LIUDONG_RATE_ROOM_SENDS": value})
    assert Settings.from_env({"LIUDONG_RATE_ROOM_SENDS": "5 per second"}).rate_room_sends
