"""WeChat message push (消息推送): WeChat calling us with the mini-program's events.

The mini-program's "message push" server configuration (开发管理 → 开发设置 → 消息推送) names
our URL (``https://<domain>/v1/wechat/push``), a Token (``LIUDONG_WECHAT_PUSH_TOKEN``), an
EncodingAESKey (``LIUDONG_WECHAT_PUSH_AES_KEY``), the encryption mode (plaintext, compatible
or safe: safe is recommended) and the data format (JSON or XML). Sources: the mini-program's
message push guide
https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.html,
WeChat's message push server configuration and signature example
https://developers.weixin.qq.com/doc/store/API/basics/message_push.html and the encryption
scheme (消息加解密, the same as WXBizMsgCrypt's).

URL verification (``GET``)
    ``signature = sha1("".join(sorted([token, timestamp, nonce])))``; when it matches, the
    answer is ``echostr`` as it came.

A push (``POST``)
    Plaintext mode: the query's ``signature`` as above; the body is the message (JSON or
    XML). Safe mode (``encrypt_type=aes``): the body is ``{"ToUserName", "Encrypt"}`` (or
    ``<xml><ToUserName/><Encrypt/></xml>``) and the query's ``msg_signature`` is
    ``sha1("".join(sorted([token, timestamp, nonce, Encrypt])))``. ``Encrypt`` is
    ``base64(AES-256-CBC(random(16 B) + msg_len(4 B, network order) + msg + appid))`` with
    ``AESKey = base64_decode(EncodingAESKey + "=")`` (32 bytes), the IV its first 16 bytes,
    PKCS#7 padding to a multiple of 32 bytes. The appid at the end must be ours
    (``LIUDONG_WECHAT_APPID``, when set). AES is ``cryptography``'s; XML is read with
    ``defusedxml`` (no entities, no external references).

    Replay protection: a ``timestamp`` more than ``window`` seconds (300) from now is
    refused (403), as is a wrong signature (403).

Dispatch
    ``PushMessage.key`` is the ``Event`` of an event (``MsgType`` ``event``), else the
    ``MsgType``. ``dispatch(handlers, message, context)`` calls ``handlers[key](message,
    context)``; a message nobody handles is logged and acknowledged (``success``) like any
    other, so WeChat does not retry it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from xml.etree.ElementTree import Element

import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException

__all__ = [
    "PushError",
    "PushForbidden",
    "PushHandler",
    "PushMalformed",
    "PushMessage",
    "PushSettings",
    "PushVerifier",
    "WeChatPushCrypto",
    "dispatch",
    "push_signature",
]

log = logging.getLogger(__name__)

BLOCK = 32  # WeChat pads to a multiple of 32 bytes (PKCS#7 with k = 32)
MAX_BODY = 64 * 1024


class PushSettings(Protocol):
    @property
    def wechat_push_token(self) -> str: ...
    @property
    def wechat_push_aes_key(self) -> str: ...
    @property
    def wechat_push_window(self) -> float: ...
    @property
    def wechat_appid(self) -> str: ...


class PushError(Exception):
    """A push we refuse. ``status`` and ``code`` for the HTTP answer."""

    status = 400
    code = "push_malformed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class PushMalformed(PushError):
    """Missing parameters, a body that is neither JSON nor XML, ciphertext that does not
    decrypt to the documented layout, another mini-program's appid."""


class PushForbidden(PushError):
    """A wrong signature (``push_signature_invalid``) or a timestamp outside the window
    (``push_timestamp_expired``)."""

    status = 403
    code = "push_signature_invalid"


def push_signature(token: str, *parts: str) -> str:
    """WeChat's signature: SHA-1 of the sorted strings joined."""
    return hashlib.sha1("".join(sorted((token, *parts))).encode()).hexdigest()  # noqa: S324


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


class WeChatPushCrypto:
    """Safe mode's AES-256-CBC (see the module docstring). ``encoding_aes_key``: the 43
    characters of the EncodingAESKey. ``appid``: checked at the end of each message (``""``:
    not checked)."""

    def __init__(self, encoding_aes_key: str, appid: str = "") -> None:
        key = encoding_aes_key.strip()
        try:
            raw = base64.b64decode(key + "=", validate=True) if len(key) == 43 else b""
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "LIUDONG_WECHAT_PUSH_AES_KEY must be the 43-character EncodingAESKey of the "
                "message push configuration"
            )
        self._key = raw
        self.appid = appid

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside ``encrypted`` (base64). Raises ``PushMalformed``."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PushMalformed("Encrypt is not base64") from exc
        if not data or len(data) % 16:
            raise PushMalformed("Encrypt is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise PushMalformed("Encrypt does not decrypt (wrong EncodingAESKey?)")
        content = plain[16:-pad]
        if len(content) < 4:
            raise PushMalformed("the decrypted message is too short")
        length = int.from_bytes(content[:4], "big")
        if length > len(content) - 4:
            raise PushMalformed("the decrypted message is shorter than its length says")
        message, appid = content[4 : 4 + length], content[4 + length :]
        if self.appid and appid.decode(errors="replace") != self.appid:
            raise PushMalformed("the push is for another mini-program (appid)")
        return message

    def encrypt(self, message: bytes, random16: bytes | None = None) -> str:
        """``Encrypt`` of ``message`` (replies, tests)."""
        random16 = random16 if random16 is not None else os.urandom(16)
        plain = random16 + len(message).to_bytes(4, "big") + message + self.appid.encode()
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class PushMessage:
    """A verified (and decrypted) push: its ``fields`` (XML elements or JSON members as they
    came), the body ``format`` and whether it was ``encrypted``."""

    fields: dict[str, Any]
    format: Literal["json", "xml"]
    encrypted: bool = False

    @property
    def msg_type(self) -> str:
        return str(self.fields.get("MsgType") or "")

    @property
    def event(self) -> str:
        return str(self.fields.get("Event") or "")

    @property
    def key(self) -> str:
        """What handlers are registered by: the ``Event``, else the ``MsgType``."""
        return self.event if self.msg_type == "event" and self.event else self.msg_type


def _element_value(element: Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    value: dict[str, Any] = {}
    for child in children:
        item = _element_value(child)
        if child.tag in value:
            previous = value[child.tag]
            value[child.tag] = [*previous, item] if isinstance(previous, list) else [previous, item]
        else:
            value[child.tag] = item
    return value


def parse_body(body: bytes) -> tuple[dict[str, Any], Literal["json", "xml"]]:
    """A JSON object or an ``<xml>`` document → its fields. Raises ``PushMalformed``."""
    text = body.strip()
    if text.startswith(b"{"):
        try:
            fields = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise PushMalformed("the body is not valid JSON") from exc
        if not isinstance(fields, dict):
            raise PushMalformed("the body is not a JSON object")
        return fields, "json"
    if text.startswith(b"<"):
        try:
            root = SafeElementTree.fromstring(text, forbid_dtd=True)
        except (SafeElementTree.ParseError, DefusedXmlException) as exc:
            raise PushMalformed(f"the body is not acceptable XML ({type(exc).__name__})") from exc
        fields = _element_value(root)
        return (fields if isinstance(fields, dict) else {}), "xml"
    raise PushMalformed("the body is neither JSON nor XML")


# --------------------------------------------------------------------------- verification


@dataclass
class PushVerifier:
    """Checks and opens pushes (see the module docstring). ``clock``: for tests."""

    token: str
    crypto: WeChatPushCrypto | None = None
    window: float = 300.0
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: PushSettings) -> PushVerifier | None:
        """``None`` when ``LIUDONG_WECHAT_PUSH_TOKEN`` is unset (the endpoint is off). Raises
        ``ValueError`` for an EncodingAESKey that is not one."""
        if not settings.wechat_push_token:
            return None
        crypto = (
            WeChatPushCrypto(settings.wechat_push_aes_key, settings.wechat_appid)
            if settings.wechat_push_aes_key
            else None
        )
        return cls(settings.wechat_push_token, crypto, settings.wechat_push_window)

    def _fresh(self, timestamp: str) -> None:
        try:
            when = int(timestamp)
        except ValueError as exc:
            raise PushMalformed("timestamp is not an integer") from exc
        if abs(self.clock() - when) > self.window:
            raise PushForbidden(
                f"timestamp is more than {self.window:.0f} s away from now (a replay?)",
                "push_timestamp_expired",
            )

    def verify_url(self, query: Mapping[str, str]) -> str:
        """The ``echostr`` to answer the URL verification ``GET``. Raises ``PushError``."""
        signature, timestamp, nonce, echostr = (
            _required(query, name) for name in ("signature", "timestamp", "nonce", "echostr")
        )
        if not _same(push_signature(self.token, timestamp, nonce), signature):
            raise PushForbidden("signature does not match the configured token")
        self._fresh(timestamp)
        return echostr

    def open(self, query: Mapping[str, str], body: bytes) -> PushMessage:
        """Verify a ``POST`` and return its message (decrypted in safe mode). Raises
        ``PushError``."""
        if len(body) > MAX_BODY:
            raise PushMalformed("the body is too large")
        timestamp, nonce = _required(query, "timestamp"), _required(query, "nonce")
        fields, fmt = parse_body(body)
        encrypted = fields.get("Encrypt")
        if query.get("encrypt_type", "").lower() == "aes" or encrypted is not None:
            if not isinstance(encrypted, str) or not encrypted:
                raise PushMalformed("safe mode without Encrypt")
            msg_signature = _required(query, "msg_signature")
            if not _same(push_signature(self.token, timestamp, nonce, encrypted), msg_signature):
                raise PushForbidden("msg_signature does not match the configured token")
            self._fresh(timestamp)
            if self.crypto is None:
                raise PushMalformed(
                    "an encrypted push, but LIUDONG_WECHAT_PUSH_AES_KEY is unset",
                    "push_undecryptable",
                )
            inner, inner_format = parse_body(self.crypto.decrypt(encrypted))
            return PushMessage(inner, inner_format, encrypted=True)
        signature = _required(query, "signature")
        if not _same(push_signature(self.token, timestamp, nonce), signature):
            raise PushForbidden("signature does not match the configured token")
        self._fresh(timestamp)
        return PushMessage(fields, fmt)


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise PushMalformed(f"the query has no {name}")
    return str(value)


# --------------------------------------------------------------------------- dispatch

PushHandler = Callable[[PushMessage, Any], None]
"""``handler(message, context)``: ``context`` is the container. Runs in a worker thread."""


def dispatch(handlers: Mapping[str, PushHandler], message: PushMessage, context: Any) -> bool:
    """Run the handler of ``message.key``; False (and a log line) when there is none."""
    handler = handlers.get(message.key)
    if handler is None:
        log.info(
            "wechat push: no handler for %r (MsgType %r); acknowledged",
            message.key,
            message.msg_type,
        )
        return False
    handler(message, context)
    return True
