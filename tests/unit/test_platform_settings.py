"""Settings of the WeChat platform and the deployment: names, defaults, and what ``liudong
serve`` hands uvicorn."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from api import cli
from api.bootstrap import runtime
from api.bootstrap.settings import Settings, SettingsError


def test_moderation_defaults_to_local_outside_production() -> None:
    assert Settings().moderation_provider == "local"
    assert Settings(env="test").moderation_provider == "local"
    assert Settings(env="production").moderation_provider == "wechat"
    assert Settings(env="production", moderation="off").moderation_provider == "off"


def test_variables() -> None:
    settings = Settings.from_env(
        {
            "LIUDONG_MODERATION": "wechat",
            "LIUDONG_MODERATION_WORDLIST": "/etc/liudong/words.txt",
            "LIUDONG_MODERATION_TIMEOUT": "1.5",
            "LIUDONG_MODERATION_OUTAGE_MESSAGES": "fail_closed",
            "LIUDONG_MODERATION_OUTAGE_FIELDS": "fail_open",
            "LIUDONG_WECHAT_TOKEN_MARGIN": "120",
            "LIUDONG_WECHAT_PUSH_TOKEN": "t",
            "LIUDONG_WECHAT_PUSH_AES_KEY": "k",
            "LIUDONG_WECHAT_PUSH_WINDOW": "60",
            "LIUDONG_FORWARDED_ALLOW_IPS": "10.0.0.0/8",
        }
    )
    assert settings.moderation == "wechat"
    assert str(settings.moderation_wordlist) == "/etc/liudong/words.txt"
    assert settings.moderation_timeout == 1.5
    assert (settings.moderation_outage_messages, settings.moderation_outage_fields) == (
        "fail_closed",
        "fail_open",
    )
    assert (settings.wechat_token_margin, settings.wechat_push_window) == (120, 60)
    assert (settings.wechat_push_token, settings.wechat_push_aes_key) == ("t", "k")
    assert settings.forwarded_allow_ips == "10.0.0.0/8"
    defaults = Settings.from_env({})
    assert (defaults.moderation_outage_messages, defaults.moderation_outage_fields) == (
        "fail_open",
        "fail_closed",
    )
    assert (defaults.wechat_token_margin, defaults.wechat_push_window) == (300, 300)
    assert defaults.forwarded_allow_ips == "127.0.0.1,::1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIUDONG_MODERATION", "maybe"),
        ("LIUDONG_MODERATION_OUTAGE_FIELDS", "open"),
        ("LIUDONG_WECHAT_TOKEN_MARGIN", "-1"),
        ("LIUDONG_WECHAT_PUSH_WINDOW", "0"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_serve_trusts_forwarded_headers_from_the_proxy_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(runtime, "resolve_database_url", lambda *a, **kw: "postgresql://x/y")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.delenv("LIUDONG_FORWARDED_ALLOW_IPS", raising=False)
    assert CliRunner().invoke(cli.main, ["serve"]).exit_code == 0
    assert calls[-1]["proxy_headers"] is True
    assert calls[-1]["forwarded_allow_ips"] == "127.0.0.1,::1"
    monkeypatch.setenv("LIUDONG_FORWARDED_ALLOW_IPS", "10.1.2.3")
    assert CliRunner().invoke(cli.main, ["serve", "--workers", "3"]).exit_code == 0
    assert (calls[-1]["forwarded_allow_ips"], calls[-1]["workers"]) == ("10.1.2.3", 3)
