"""Dev-mode login (``dev:<name>``) and the choice of login provider, without any network."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from api.adapters.wechat import (
    DevLoginProvider,
    InvalidCode,
    JsCode2SessionClient,
    RoutingLoginProvider,
    StaticLoginProvider,
    WeChatBusy,
    WeChatConfigError,
    WeChatSession,
    login_provider_for,
)
from api.bootstrap.settings import Settings


def no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request to {request.url.host}")


NO_NETWORK = httpx.MockTransport(no_network)


async def test_dev_codes_are_stable_and_distinct_per_name() -> None:
    dev = DevLoginProvider()
    alice = await dev.code_to_session("dev:alice")
    assert alice == await DevLoginProvider().code_to_session("dev:alice")
    bob = await dev.code_to_session("dev:bob")
    alice_cap = await dev.code_to_session("dev:Alice")
    assert len({alice.open_id, bob.open_id, alice_cap.open_id}) == 3
    assert alice.union_id is None


async def test_dev_open_id_formula() -> None:
    session = await DevLoginProvider().code_to_session("dev:reader_1.x-y")
    digest = hashlib.sha256(b"liudong-dev:reader_1.x-y").hexdigest()[:28]
    assert session.open_id == "dev-" + digest
    assert len(session.open_id) == 32


@pytest.mark.parametrize(
    "code",
    [
        "dev:",
        "dev:" + "a" * 65,
        "dev:a b",
        "dev:a/b",
        "dev:名字",
        "dev:alice\n",
        "dev:al:ice",
        "alice",
        "DEV:alice",
        "",
    ],
)
async def test_malformed_dev_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidCode) as caught:
        await DevLoginProvider().code_to_session(code)
    assert caught.value.code == "invalid_code"


async def test_longest_dev_name_is_accepted() -> None:
    session = await DevLoginProvider().code_to_session("dev:" + "a" * 64)
    assert session.open_id.startswith("dev-")


async def test_dev_login_is_refused_in_production() -> None:
    settings = Settings(env="production", wechat_appid="wxappid", wechat_secret="secret")
    provider = login_provider_for(settings, transport=NO_NETWORK)
    try:
        assert isinstance(provider, JsCode2SessionClient)
        with pytest.raises(InvalidCode, match="dev login is disabled in production"):
            await provider.code_to_session("dev:alice")
    finally:
        await provider.aclose()


async def test_routing_without_dev_refuses_dev_codes() -> None:
    provider = RoutingLoginProvider(wechat=StaticLoginProvider({}), dev=None)
    with pytest.raises(InvalidCode, match="dev login is disabled in production"):
        await provider.code_to_session("dev:alice")


@pytest.mark.parametrize(("appid", "secret"), [("", ""), ("wxappid", ""), ("", "secret")])
def test_production_needs_appid_and_secret(appid: str, secret: str) -> None:
    settings = Settings(env="production", wechat_appid=appid, wechat_secret=secret)
    with pytest.raises(WeChatConfigError) as caught:
        login_provider_for(settings, transport=NO_NETWORK)
    assert caught.value.code == "wechat_misconfigured"
    assert "LIUDONG_WECHAT_" in str(caught.value)


@pytest.mark.parametrize("env", ["development", "test"])
async def test_dev_mode_without_wechat_config(env: str) -> None:
    provider = login_provider_for(Settings(env=env))  # type: ignore[arg-type]
    try:
        assert (await provider.code_to_session("dev:alice")).open_id.startswith("dev-")
        with pytest.raises(InvalidCode, match="not configured"):
            await provider.code_to_session("081Kq4Ga1SMMfR0uOWHa1oMbEo0Kq4Gu")
    finally:
        await provider.aclose()


def test_dev_mode_with_half_the_wechat_config_is_an_error() -> None:
    with pytest.raises(WeChatConfigError, match="LIUDONG_WECHAT_SECRET"):
        login_provider_for(Settings(env="development", wechat_appid="wxappid"))


async def test_static_provider_codes_are_single_use() -> None:
    provider = StaticLoginProvider(
        {"c1": WeChatSession(open_id="o1"), "busy": WeChatBusy("busy", errcode=-1)}
    )
    assert (await provider.code_to_session("c1")).open_id == "o1"
    with pytest.raises(InvalidCode) as caught:
        await provider.code_to_session("c1")
    assert caught.value.errcode == 40163
    with pytest.raises(WeChatBusy):
        await provider.code_to_session("busy")
    with pytest.raises(InvalidCode):
        await provider.code_to_session("unknown")
    assert provider.calls == ["c1", "c1", "busy", "unknown"]
