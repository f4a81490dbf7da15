"""E2E over real HTTP: ``GET/POST /v1/wechat/push`` as WeChat calls it (URL verification, a
safe-mode JSON event, a plaintext XML message), its refusals and the handler registry."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from api.adapters.wechat_push import PushMessage, PushVerifier, WeChatPushCrypto
from tests.e2e.conftest import LiveServer

TOKEN = "e2e-push-token"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx00e2e0000000push"
PATH = "/v1/wechat/push"


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted((TOKEN, *parts))).encode()).hexdigest()  # noqa: S324


@contextlib.contextmanager
def push_configured(live_server: LiveServer) -> Iterator[list[tuple[PushMessage, Any]]]:
    """The live server with a push Token/EncodingAESKey and a ``wxa_media_check`` handler."""
    platform = live_server.container.wechat
    saved_push, saved_handlers = platform.push, platform.push_handlers
    seen: list[tuple[PushMessage, Any]] = []
    platform.push = PushVerifier(TOKEN, WeChatPushCrypto(KEY, APPID), 300.0)
    platform.push_handlers = {
        **saved_handlers,
        "wxa_media_check": lambda message, container: seen.append((message, container)),
    }
    try:
        yield seen
    finally:
        platform.push, platform.push_handlers = saved_push, saved_handlers


def test_unconfigured_push_is_404(live_server: LiveServer) -> None:
    with live_server.client() as http:
        response = http.get(
            PATH, params={"signature": "x", "timestamp": "1", "nonce": "1", "echostr": "e"}
        )
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_url_verification(live_server: LiveServer) -> None:
    now = str(int(time.time()))
    with push_configured(live_server), live_server.client() as http:
        ok = http.get(
            PATH,
            params={
                "signature": sign(now, "n1"),
                "timestamp": now,
                "nonce": "n1",
                "echostr": "4375120948345356249",
            },
        )
        assert ok.status_code == 200
        assert ok.text == "4375120948345356249"
        assert ok.headers["content-type"].startswith("text/plain")
        forged = http.get(
            PATH,
            params={"signature": sign(now, "n2"), "timestamp": now, "nonce": "n1", "echostr": "e"},
        )
        assert forged.status_code == 403 and forged.json()["code"] == "push_signature_invalid"
        old = str(int(time.time()) - 3600)
        replayed = http.get(
            PATH,
            params={"signature": sign(old, "n1"), "timestamp": old, "nonce": "n1", "echostr": "e"},
        )
        assert replayed.status_code == 403 and replayed.json()["code"] == "push_timestamp_expired"
        assert http.get(PATH, params={"echostr": "e"}).status_code == 400


def test_safe_mode_event_reaches_its_handler(live_server: LiveServer) -> None:
    event = {
        "ToUserName": "gh_1",
        "FromUserName": "oUser",
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": "wxa_media_check",
        "appid": APPID,
        "version": 2,
        "trace_id": "trace-1",
        "result": {"suggest": "risky", "label": 20002},
    }
    crypto = WeChatPushCrypto(KEY, APPID)
    encrypted = crypto.encrypt(msgspec.json.encode(event))
    now = str(int(time.time()))
    query = {
        "signature": sign(now, "77"),
        "timestamp": now,
        "nonce": "77",
        "openid": "oUser",
        "encrypt_type": "aes",
        "msg_signature": sign(now, "77", encrypted),
    }
    body = msgspec.json.encode({"ToUserName": "gh_1", "Encrypt": encrypted})
    with push_configured(live_server) as seen, live_server.client() as http:
        response = http.post(
            PATH, params=query, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
        assert response.text == "success"
        [(message, container)] = seen
        assert message.fields == event and message.encrypted
        assert container is live_server.container

        tampered = http.post(PATH, params={**query, "msg_signature": "0" * 40}, content=body)
        assert tampered.status_code == 403
        other = crypto.encrypt(msgspec.json.encode({"MsgType": "event", "Event": "whatever"}))
        unknown = http.post(
            PATH,
            params={**query, "msg_signature": sign(now, "77", other)},
            content=msgspec.json.encode({"ToUserName": "gh_1", "Encrypt": other}),
        )
        assert unknown.status_code == 200 and unknown.text == "success"  # acknowledged
        assert len(seen) == 1


def test_plaintext_xml_message_is_acknowledged(live_server: LiveServer) -> None:
    now = str(int(time.time()))
    xml = (
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]>"
        "</FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[你好]]></Content><MsgId>1</MsgId></xml>"
    ).encode()
    with push_configured(live_server), live_server.client() as http:
        response = http.post(
            PATH,
            params={"signature": sign(now, "5"), "timestamp": now, "nonce": "5"},
            content=xml,
            headers={"Content-Type": "text/xml"},
        )
        assert response.status_code == 200 and response.text == "success"
        garbage = http.post(
            PATH,
            params={"signature": sign(now, "5"), "timestamp": now, "nonce": "5"},
            content=b"not a push",
        )
        assert garbage.status_code == 400 and garbage.json()["code"] == "push_malformed"
