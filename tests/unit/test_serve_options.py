"""``liudong serve``: uvicorn's access log is off unless asked for (``--access-log`` or
``LIUDONG_ACCESS_LOG``); ``LIUDONG_HANDLER_THREADS`` sizes the handlers' thread pool."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from api import cli
from api.bootstrap import runtime
from api.bootstrap.settings import Settings, SettingsError


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(runtime, "resolve_database_url", lambda *a, **kw: "postgresql://x/y")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.delenv("LIUDONG_ACCESS_LOG", raising=False)
    return calls


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], None, False),
        (["--access-log"], None, True),
        ([], "true", True),
        (["--no-access-log"], "true", False),
    ],
)
def test_access_log_is_opt_in(
    uvicorn_calls: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: str | None,
    expected: bool,
) -> None:
    if env is not None:
        monkeypatch.setenv("LIUDONG_ACCESS_LOG", env)
    result = CliRunner().invoke(cli.main, ["serve", *args])
    assert result.exit_code == 0, result.output
    assert uvicorn_calls[-1]["access_log"] is expected


def test_handler_threads_setting() -> None:
    assert Settings.from_env({}).handler_threads == 16
    assert Settings.from_env({"LIUDONG_HANDLER_THREADS": "40"}).handler_threads == 40
    with pytest.raises(SettingsError, match="LIUDONG_HANDLER_THREADS"):
        Settings.from_env({"LIUDONG_HANDLER_THREADS": "0"})
