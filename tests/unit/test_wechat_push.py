"""WeChat message push: signatures, safe-mode decryption, bodies, replay window, dispatch.

Vectors
    - URL verification: WeChat's own example (Token ``AAAAA``, timestamp ``1714036504``,
      nonce ``1514711492`` → ``f464b24f…``) from the message push server configuration page,
      https://developers.weixin.qq.com/doc/store/API/basics/message_push.html.
    - Safe mode: the sample shipped with Tencent's WXBizMsgCrypt message encryption library
      (Token ``QDG6eK``, EncodingAESKey ``jWmYm7qr…``, appid ``wx5823bf96d3bd56c7``, a
      ``msg_signature``, an ``Encrypt`` and its decrypted XML), the same scheme as the
      mini-program's safe mode.
    - JSON safe mode: no official fixed vector was found, so the test encrypts with its own
      implementation of the documented layout (``_independent_encrypt``, written from the
      documentation with ``cryptography``'s primitives, not with the module's ``encrypt``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import struct

import msgspec
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from api.adapters.wechat_push import (
    PushForbidden,
    PushMalformed,
    PushMessage,
    PushVerifier,
    WeChatPushCrypto,
    dispatch,
    parse_body,
    push_signature,
)

# Tencent's WXBizMsgCrypt sample
SAMPLE_TOKEN = "QDG6eK"
SAMPLE_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
SAMPLE_APPID = "wx5823bf96d3bd56c7"
SAMPLE_MSG_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
SAMPLE_TIMESTAMP = "1409659813"
SAMPLE_NONCE = "1372623149"
SAMPLE_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Qczcd"
    "CUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4"
    "Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r"
    "+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx"
    "4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyP"
    "IGHBZZIs2pDBS8R07+qN+E7Q=="
)
SAMPLE_BODY = (
    f"<xml><ToUserName><![CDATA[{SAMPLE_APPID}]]></ToUserName>"
    f"<Encrypt><![CDATA[{SAMPLE_ENCRYPT}]]></Encrypt></xml>"
).encode()

TOKEN = "liudong-push-token"
KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")  # 43 characters
APPID = "wx1234567890abcdef"
NOW = 1_717_000_000


def verifier(
    token: str = TOKEN, key: str | None = KEY, appid: str = APPID, now: float = NOW
) -> PushVerifier:
    crypto = WeChatPushCrypto(key, appid) if key else None
    return PushVerifier(token, crypto, 300.0, clock=lambda: now)


def _independent_encrypt(key43: str, appid: str, message: bytes, random16: bytes) -> str:
    """The documented layout: base64(AES-256-CBC(random(16) + len(4, big-endian) + msg +
    appid)), key = base64(EncodingAESKey + "="), IV = key[:16], PKCS#7 to 32 bytes."""
    key = base64.b64decode(key43 + "=")
    plain = random16 + struct.pack(">I", len(message)) + message + appid.encode()
    padder = padding.PKCS7(256).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324


# -- the official vectors ----------------------------------------------------------------------


def test_url_verification_with_wechats_example() -> None:
    assert push_signature("AAAAA", "1714036504", "1514711492") == (
        "f464b24fc39322e44b38aa78f5edd27bd1441696"
    )
    query = {
        "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
        "echostr": "4375120948345356249",
        "timestamp": "1714036504",
        "nonce": "1514711492",
    }
    assert verifier("AAAAA", now=1714036504).verify_url(query) == "4375120948345356249"


def test_safe_mode_with_the_wxbizmsgcrypt_sample() -> None:
    query = {
        "msg_signature": SAMPLE_MSG_SIGNATURE,
        "timestamp": SAMPLE_TIMESTAMP,
        "nonce": SAMPLE_NONCE,
        "encrypt_type": "aes",
    }
    opened = verifier(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID, now=int(SAMPLE_TIMESTAMP) + 5).open(
        query, SAMPLE_BODY
    )
    assert opened.encrypted and opened.format == "xml"
    assert opened.fields == {
        "ToUserName": SAMPLE_APPID,
        "FromUserName": "mycreate",
        "CreateTime": "1409659813",
        "MsgType": "text",
        "Content": "hello",
        "MsgId": "4561255354251345929",
        "AgentID": "218",
    }
    assert opened.key == "text"


def test_the_sample_is_refused_for_another_appid_and_when_tampered() -> None:
    query = {
        "msg_signature": SAMPLE_MSG_SIGNATURE,
        "timestamp": SAMPLE_TIMESTAMP,
        "nonce": SAMPLE_NONCE,
        "encrypt_type": "aes",
    }
    at = int(SAMPLE_TIMESTAMP)
    with pytest.raises(PushMalformed, match="another mini-program"):
        verifier(SAMPLE_TOKEN, SAMPLE_KEY, "wxsomeoneelse", now=at).open(query, SAMPLE_BODY)
    with pytest.raises(PushForbidden):
        verifier(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID, now=at).open(
            {**query, "nonce": "1372623148"}, SAMPLE_BODY
        )
    with pytest.raises(PushForbidden) as caught:  # a replay, years later
        verifier(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID, now=NOW).open(query, SAMPLE_BODY)
    assert caught.value.code == "push_timestamp_expired" and caught.value.status == 403


# -- JSON safe mode, plaintext mode --------------------------------------------------------------


def _encrypted_push(
    event: dict[str, object],
    *,
    timestamp: int = NOW,
    json_body: bool = True,
    key: str = KEY,
    appid: str = APPID,
) -> tuple[dict[str, str], bytes]:
    inner = msgspec.json.encode(event)
    encrypted = _independent_encrypt(key, appid, inner, b"0123456789abcdef")
    nonce = "98765"
    query = {
        "signature": _sha1(TOKEN, str(timestamp), nonce),
        "timestamp": str(timestamp),
        "nonce": nonce,
        "openid": "oUser",
        "encrypt_type": "aes",
        "msg_signature": _sha1(TOKEN, str(timestamp), nonce, encrypted),
    }
    if json_body:
        body = msgspec.json.encode({"ToUserName": "gh_abc", "Encrypt": encrypted})
    else:
        body = f"<xml><ToUserName>gh_abc</ToUserName><Encrypt>{encrypted}</Encrypt></xml>".encode()
    return query, body


MEDIA_EVENT = {
    "ToUserName": "gh_38cc49f9733b",
    "FromUserName": "oH1fu0FdHqpToe2T6gBj0WyB8iS1",
    "CreateTime": 1626959646,
    "MsgType": "event",
    "Event": "wxa_media_check",
    "appid": APPID,
    "trace_id": "60f96f1d-3845297a-1976a3ae",
    "version": 2,
    "result": {"suggest": "pass", "label": 100},
}


@pytest.mark.parametrize("json_body", [True, False])
def test_safe_mode_json_event(json_body: bool) -> None:
    query, body = _encrypted_push(MEDIA_EVENT, json_body=json_body)
    opened = verifier().open(query, body)
    assert opened.fields == MEDIA_EVENT and opened.format == "json" and opened.encrypted
    assert (opened.msg_type, opened.event, opened.key) == (
        "event",
        "wxa_media_check",
        "wxa_media_check",
    )


def test_encrypt_matches_the_independent_implementation() -> None:
    crypto = WeChatPushCrypto(KEY, APPID)
    mine = crypto.encrypt(b'{"a":1}', b"0123456789abcdef")
    assert mine == _independent_encrypt(KEY, APPID, b'{"a":1}', b"0123456789abcdef")
    assert crypto.decrypt(crypto.encrypt("消息".encode())) == "消息".encode()


def test_plaintext_mode_json_and_xml() -> None:
    nonce = "42"
    query = {"signature": _sha1(TOKEN, str(NOW), nonce), "timestamp": str(NOW), "nonce": nonce}
    demo = msgspec.json.encode({"MsgType": "event", "Event": "debug_demo"})
    opened = verifier(key=None).open(query, demo)
    assert (opened.key, opened.encrypted) == ("debug_demo", False)
    xml = (
        b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><MsgType><![CDATA[event]]></MsgType>"
        b"<Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>"
        b"<List><TemplateId>t1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString>"
        b"</List><List><TemplateId>t2</TemplateId><SubscribeStatusString>reject"
        b"</SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>"
    )
    opened = verifier().open(query, xml)
    assert opened.format == "xml" and opened.key == "subscribe_msg_popup_event"
    assert opened.fields["SubscribeMsgPopupEvent"]["List"] == [
        {"TemplateId": "t1", "SubscribeStatusString": "accept"},
        {"TemplateId": "t2", "SubscribeStatusString": "reject"},
    ]


# -- refusals --------------------------------------------------------------------------------------


def test_timestamps_outside_the_window_are_refused() -> None:
    for skew in (-301, 301, -10_000):
        query, body = _encrypted_push(MEDIA_EVENT, timestamp=NOW + skew)
        with pytest.raises(PushForbidden) as caught:
            verifier().open(query, body)
        assert caught.value.code == "push_timestamp_expired"
    query, body = _encrypted_push(MEDIA_EVENT, timestamp=NOW - 299)
    assert verifier().open(query, body).key == "wxa_media_check"
    old = {
        "signature": _sha1(TOKEN, str(NOW - 301), "n"),
        "timestamp": str(NOW - 301),
        "nonce": "n",
        "echostr": "e",
    }
    with pytest.raises(PushForbidden):
        verifier().verify_url(old)


def test_wrong_signatures_are_refused() -> None:
    query, body = _encrypted_push(MEDIA_EVENT)
    with pytest.raises(PushForbidden, match="msg_signature"):
        verifier().open({**query, "msg_signature": "0" * 40}, body)
    with pytest.raises(PushForbidden):
        verifier(token="another-token").open(query, body)
    with pytest.raises(PushForbidden):
        verifier().verify_url(
            {"signature": "x", "timestamp": str(NOW), "nonce": "n", "echostr": "e"}
        )
    plain = {"signature": "0" * 40, "timestamp": str(NOW), "nonce": "n"}
    with pytest.raises(PushForbidden):
        verifier().open(plain, b'{"MsgType": "text"}')


def test_malformed_pushes_are_refused() -> None:
    query, body = _encrypted_push(MEDIA_EVENT)
    with pytest.raises(PushMalformed, match="no nonce"):
        verifier().open({k: v for k, v in query.items() if k != "nonce"}, body)
    with pytest.raises(PushMalformed, match="does not decrypt"):
        other = base64.b64encode(bytes(range(1, 33))).decode().rstrip("=")
        verifier(key=other).open(query, body)
    with pytest.raises(PushMalformed, match="LIUDONG_WECHAT_PUSH_AES_KEY"):
        verifier(key=None).open(query, body)
    with pytest.raises(PushMalformed, match="another mini-program"):
        q, b = _encrypted_push(MEDIA_EVENT, appid="wxother")
        verifier().open(q, b)
    for garbage in (b"", b"hello", b"{not json", b"[1, 2]", b"<xml><a></xml>"):
        with pytest.raises(PushMalformed):
            parse_body(garbage)


def test_xml_entities_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>'
    )
    with pytest.raises(PushMalformed, match="XML"):
        parse_body(bomb)
    external = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>'
    with pytest.raises(PushMalformed):
        parse_body(external)


@pytest.mark.parametrize("key", ["", "short", KEY + "A", "!" * 43])
def test_an_encoding_aes_key_must_be_43_base64_characters(key: str) -> None:
    with pytest.raises(ValueError, match="43-character"):
        WeChatPushCrypto(key)


# -- dispatch --------------------------------------------------------------------------------------


def test_dispatch_by_event(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, object]] = []
    handlers = {"wxa_media_check": lambda message, context: seen.append((message.key, context))}
    message = PushMessage(dict(MEDIA_EVENT), "json")
    assert dispatch(handlers, message, "the container") is True
    assert seen == [("wxa_media_check", "the container")]
    caplog.set_level(logging.INFO)
    unknown = PushMessage({"MsgType": "event", "Event": "something_new"}, "json")
    assert dispatch(handlers, unknown, None) is False
    assert "no handler for 'something_new'" in caplog.text
