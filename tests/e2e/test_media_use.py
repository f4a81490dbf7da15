"""E2E over real HTTP and WebSocket: pictures used where they belong (issue 12, part 4) and
WeChat's image check taking a risky one down (part 5, against the fake WeChat on loopback).

- a chat image sent by one reader over the socket reaches the other reader's socket with its
  URL and thumbnail, and the history carries it; REST sends take ``media_id`` too;
- a room image reaches the room's sockets;
- only your own uploads can be attached (404 / 403 problem+json, WS ``error`` frames);
- covers and avatars take an uploaded picture;
- upload → mediaCheckAsync call → signed ``wxa_media_check`` push → 410, ``Media.Removed``,
  the other reader's socket gets a ``media.removed`` event, history shows a placeholder.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import msgspec
import pytest
from click.testing import CliRunner

from api.adapters.media.check import WeChatMediaCheck
from api.adapters.wechat_api import MemoryTokenStore, WeChatApi, WeChatApiThread
from api.adapters.wechat_push import PushVerifier, WeChatPushCrypto
from api.cli import main as cli
from domain.media import picture_id_for
from tests.e2e.conftest import OPERATOR, LiveServer
from tests.e2e.realtime_helpers import Ws, auth, login, open_conversation
from tests.media_helpers import phone_jpeg, unique_png
from tests.wechat_fake import running_fake_wechat

PUSH_TOKEN = "e2e-media-push-token"
PUSH_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


async def upload(http: httpx.AsyncClient, token: str, data: bytes, purpose: str) -> dict[str, Any]:
    response = await http.post(
        "/v1/media",
        content=data,
        params={"purpose": purpose},
        headers={**auth(token), "Content-Type": "image/png"},
    )
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def view_of(picture: dict[str, Any]) -> dict[str, Any]:
    media_id = picture["id"]
    return {
        "id": media_id,
        "url": f"/v1/media/{media_id}",
        "thumb_url": f"/v1/media/{media_id}/thumb",
        "width": picture["width"],
        "height": picture["height"],
        "removed": False,
    }


async def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_chat_image_reaches_the_other_readers_socket_with_url_and_thumbnail(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    ann_token, ann = await login(http)
    ben_token, ben = await login(http)
    conversation = await open_conversation(http, ann_token, ben["id"])
    picture = await upload(http, ann_token, unique_png(), "chat")
    ann_ws = await Ws.open(live_server.url, ann_token)
    ben_ws = await Ws.open(live_server.url, ben_token)
    try:
        await ann_ws.recv_type("hello")
        await ben_ws.recv_type("hello")
        await ann_ws.send(
            {
                "type": "chat.send",
                "conversation_id": conversation,
                "client_msg_id": "img-1",
                "media_id": picture["id"],
            }
        )
        ack = await ann_ws.recv_type("ack")
        assert ack["created"] is True
        event = await ben_ws.recv_until(
            lambda f: f.get("type") == "event" and f["kind"] == "chat.message"
        )
        data = event["data"]
        assert data["text"] == "" and data["sender"]["id"] == ann["id"]
        assert data["media"] == view_of(picture)
        # the URL and the thumbnail really serve the picture
        full = await http.get(data["media"]["url"])
        thumb = await http.get(data["media"]["thumb_url"])
        assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == picture["id"]
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"

        # text and picture together over REST; the history carries both
        second = await upload(http, ann_token, unique_png(), "chat")
        sent = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"text": "封面好看", "client_msg_id": "img-2", "media_id": second["id"]},
            headers=auth(ann_token),
        )
        assert sent.status_code == 201, sent.text
        assert sent.json()["media"] == view_of(second)
        history = await http.get(
            f"/v1/conversations/{conversation}/messages", headers=auth(ben_token)
        )
        assert history.status_code == 200
        items = history.json()["items"]
        assert [(m["text"], m["media"]) for m in items[:2]] == [
            ("封面好看", view_of(second)),
            ("", view_of(picture)),
        ]
        conversations = await http.get("/v1/conversations", headers=auth(ben_token))
        [row] = [c for c in conversations.json()["items"] if c["id"] == conversation]
        assert row["last_message"]["media"] == view_of(second)
    finally:
        await ann_ws.close()
        await ben_ws.close()


async def test_only_your_own_uploads_can_be_attached(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    ann_token, _ = await login(http)
    ben_token, ben = await login(http)
    conversation = await open_conversation(http, ann_token, ben["id"])
    bens = await upload(http, ben_token, unique_png(), "chat")
    for media_id, status, code in (
        (bens["id"], 403, "media_not_owned"),
        ("0" * 64, 404, "media_not_found"),
    ):
        refused = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"client_msg_id": f"x-{code}", "media_id": media_id},
            headers=auth(ann_token),
        )
        assert refused.status_code == status, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == code
    malformed = await http.post(
        f"/v1/conversations/{conversation}/messages",
        json={"client_msg_id": "x-bad", "media_id": "../etc/passwd"},
        headers=auth(ann_token),
    )
    assert malformed.status_code == 422
    empty = await http.post(
        f"/v1/conversations/{conversation}/messages",
        json={"client_msg_id": "x-empty"},
        headers=auth(ann_token),
    )
    assert empty.status_code == 422 and empty.json()["code"] == "invalid_message"

    ws = await Ws.open(live_server.url, ann_token)
    try:
        await ws.recv_type("hello")
        await ws.send(
            {
                "type": "chat.send",
                "conversation_id": conversation,
                "client_msg_id": "ws-x",
                "media_id": bens["id"],
            }
        )
        error = await ws.recv_type("error")
        assert (error["code"], error["client_msg_id"], error["frame"]) == (
            "media_not_owned",
            "ws-x",
            "chat.send",
        )
        await ws.send(
            {
                "type": "chat.send",
                "conversation_id": conversation,
                "client_msg_id": "ws-y",
                "media_id": "0" * 64,
            }
        )
        assert (await ws.recv_type("error"))["code"] == "media_not_found"
    finally:
        await ws.close()
    history = await http.get(f"/v1/conversations/{conversation}/messages", headers=auth(ben_token))
    assert history.json()["items"] == []


async def test_a_room_image_reaches_the_rooms_sockets(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    name = f"pics-{uuid4().hex[:8]}"
    created = CliRunner().invoke(
        cli,
        ["rooms", "create", name, "图片"],
        env={"DATABASE_URL": live_server.container.settings.database_url, "LIUDONG_ENV": "test"},
    )
    assert created.exit_code == 0, created.output
    ann_token, _ = await login(http)
    ben_token, _ = await login(http)
    picture = await upload(http, ann_token, unique_png(), "room")
    ann_ws = await Ws.open(live_server.url, ann_token)
    ben_ws = await Ws.open(live_server.url, ben_token)
    try:
        for ws in (ann_ws, ben_ws):
            await ws.recv_type("hello")
            await ws.send({"type": "room.join", "room": name})
            await ws.recv_type("room.joined")
        await ann_ws.send(
            {"type": "room.send", "room": name, "client_msg_id": "r1", "media_id": picture["id"]}
        )
        message = await ben_ws.recv_type("room.message")
        assert message["text"] == "" and message["media"] == view_of(picture)

        async def shown() -> Any:
            r = await http.get(f"/v1/rooms/{name}/messages")
            return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None

        [row] = await wait_for(shown)
        assert row["media"] == view_of(picture)
    finally:
        await ann_ws.close()
        await ben_ws.close()


async def test_covers_and_avatars_take_an_uploaded_picture(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    token, me = await login(http)
    cover = await upload(http, token, unique_png(), "cover")
    published = await http.post(
        "/v1/books",
        json={"isbn": "9787536692930", "title": "三体", "cover_media_id": cover["id"]},
        headers=auth(token),
    )
    assert published.status_code == 201, published.text
    book = published.json()
    assert book["cover_url"].endswith(f"/v1/media/{cover['id']}")
    assert book["cover"]["id"] == cover["id"]
    assert book["cover"]["thumb_url"] == book["cover_url"] + "/thumb"
    revised = await http.patch(
        f"/v1/books/{book['id']}", json={"cover_media_id": ""}, headers=auth(token)
    )
    assert revised.status_code == 200, revised.text
    assert (revised.json()["cover_url"], revised.json()["cover"]) == ("", None)

    other_token, _ = await login(http)
    theirs = await upload(http, other_token, unique_png(), "avatar")
    refused = await http.patch(
        "/v1/me", json={"avatar_media_id": theirs["id"]}, headers=auth(token)
    )
    assert refused.status_code == 403 and refused.json()["code"] == "media_not_owned"
    avatar = await upload(http, token, unique_png(), "avatar")
    changed = await http.patch(
        "/v1/me", json={"avatar_media_id": avatar["id"]}, headers=auth(token)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["avatar_url"].endswith(f"/v1/media/{avatar['id']}")
    assert changed.json()["id"] == me["id"]


# -- WeChat's image check, against the fake WeChat -----------------------------------------------


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted((PUSH_TOKEN, *parts))).encode()).hexdigest()  # noqa: S324


@contextlib.contextmanager
def wechat_media_check(live_server: LiveServer) -> Iterator[Any]:
    """The live server with the image check on, against the fake WeChat, pictures at the
    server's own public URL, and message push configured."""
    container = live_server.container
    platform = container.wechat
    store = container.media
    with running_fake_wechat() as fake:
        api = WeChatApi(
            fake.appid,
            fake.secret,
            store=MemoryTokenStore(),
            base_url=fake.base_url,
            timeout=0.5,
            backoff=(0.01,),
        )
        runner = WeChatApiThread(api)
        saved = (platform.media_check, platform.push, store.config)
        platform.media_check = WeChatMediaCheck(runner, platform.openids.open_id, timeout=3.0)
        platform.push = PushVerifier(PUSH_TOKEN, WeChatPushCrypto(PUSH_KEY, fake.appid), 300.0)
        store.config = dataclasses.replace(store.config, base_url=live_server.url)
        try:
            yield fake
        finally:
            platform.media_check, platform.push, store.config = saved
            closing = threading.Thread(target=runner.close)  # it blocks: not on the loop
            closing.start()
            closing.join(10)


async def post_push(http: httpx.AsyncClient, appid: str, event: dict[str, Any]) -> httpx.Response:
    crypto = WeChatPushCrypto(PUSH_KEY, appid)
    encrypted = crypto.encrypt(msgspec.json.encode(event))
    now, nonce = str(int(time.time())), uuid4().hex[:8]
    query = {
        "signature": sign(now, nonce),
        "timestamp": now,
        "nonce": nonce,
        "openid": "o_wechat_platform",
        "encrypt_type": "aes",
        "msg_signature": sign(now, nonce, encrypted),
    }
    return await http.post(
        "/v1/wechat/push",
        params=query,
        content=msgspec.json.encode({"ToUserName": "gh_liudong", "Encrypt": encrypted}),
        headers={"Content-Type": "application/json"},
    )


async def test_a_risky_picture_is_taken_down_everywhere(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    ann_token, ann = await login(http)
    ben_token, ben = await login(http)
    container = live_server.container
    open_id = f"o-ann-{uuid4().hex[:8]}"
    container.wechat.openids.remember(UUID(ann["id"]), open_id)
    conversation = await open_conversation(http, ann_token, ben["id"])
    with wechat_media_check(live_server) as fake:
        data = phone_jpeg(320, 240)
        response = await http.post(
            "/v1/media",
            content=data,
            params={"purpose": "chat"},
            headers={**auth(ann_token), "Content-Type": "image/jpeg"},
        )
        assert response.status_code == 201, response.text
        picture = response.json()
        [(trace_id, body)] = list(fake.media_checks.items())
        assert body["media_type"] == 2 and body["version"] == 2
        assert body["openid"] == open_id and body["scene"] == 4
        assert body["media_url"] == f"{live_server.url}/v1/media/{picture['id']}"
        assert (await http.get(body["media_url"])).status_code == 200  # WeChat can fetch it
        again = await http.post(
            "/v1/media",
            content=data,
            headers={**auth(ann_token), "Content-Type": "image/jpeg"},
        )
        assert again.status_code == 200 and len(fake.media_checks) == 1  # submitted once

        sent = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"text": "看", "client_msg_id": "risky-1", "media_id": picture["id"]},
            headers=auth(ann_token),
        )
        assert sent.status_code == 201, sent.text
        book = await http.post(
            "/v1/books",
            json={"isbn": "9787536692930", "title": "三体", "cover_media_id": picture["id"]},
            headers=auth(ann_token),
        )
        assert book.status_code == 201, book.text
        assert book.json()["cover"]["id"] == picture["id"]
        avatar = await http.patch(
            "/v1/me", json={"avatar_media_id": picture["id"]}, headers=auth(ann_token)
        )
        assert avatar.status_code == 200, avatar.text
        assert avatar.json()["avatar_url"].endswith(picture["id"])
        room = f"risky-{uuid4().hex[:8]}"
        created = CliRunner().invoke(
            cli,
            ["rooms", "create", room, "风险"],
            env={"DATABASE_URL": container.settings.database_url, "LIUDONG_ENV": "test"},
        )
        assert created.exit_code == 0, created.output
        ann_ws = await Ws.open(live_server.url, ann_token)
        ben_ws = await Ws.open(live_server.url, ben_token)
        try:
            hello = await ben_ws.recv_type("hello")
            await ann_ws.recv_type("hello")
            for ws in (ann_ws, ben_ws):
                await ws.send({"type": "room.join", "room": room})
                await ws.recv_type("room.joined")
            await ann_ws.send(
                {
                    "type": "room.send",
                    "room": room,
                    "client_msg_id": "rr",
                    "media_id": picture["id"],
                }
            )
            room_message = await ben_ws.recv_type("room.message")

            async def in_room_history() -> Any:
                r = await http.get(f"/v1/rooms/{room}/messages")
                return r.json()["items"]

            await wait_for(in_room_history)
            pushed = await post_push(http, fake.appid, fake.media_check_push(trace_id, "risky"))
            assert pushed.status_code == 200 and pushed.text == "success"

            event = await ben_ws.recv_until(
                lambda f: f.get("type") == "event" and f["kind"] == "media.removed"
            )
            assert event["seq"] > hello["head"]
            assert event["data"]["media_id"] == picture["id"]
            assert event["data"]["reason"] == "risky"
            assert event["data"]["messages"] == [
                {"conversation_id": conversation, "message_id": sent.json()["id"]}
            ]
            # the room's notice and the inbox event travel apart: either may come first
            notice = await ben_ws.take_type("room.media_removed")
            assert notice == {
                "type": "room.media_removed",
                "room": room,
                "media_id": picture["id"],
                "message_ids": [room_message["message_id"]],
                "reason": "risky",
            }
        finally:
            await ann_ws.close()
            await ben_ws.close()

        [in_room] = (await http.get(f"/v1/rooms/{room}/messages")).json()["items"]
        assert in_room["media"]["removed"] is True and in_room["media"]["url"] is None

        async def cover_cleared() -> Any:
            r = await http.get(f"/v1/books/{book.json()['id']}")
            return r.json() if r.json()["cover_url"] == "" else None

        assert (await wait_for(cover_cleared))["cover"] is None

        async def avatar_cleared() -> Any:
            r = await http.get("/v1/me", headers=auth(ann_token))
            return r.json()["avatar_url"] == ""

        await wait_for(avatar_cleared)

        gone = await http.get(f"/v1/media/{picture['id']}")
        assert gone.status_code == 410 and gone.json()["code"] == "media_removed"
        assert (await http.get(f"/v1/media/{picture['id']}/thumb")).status_code == 410
        removed = list(container.library.repository.event_store.get(picture_id_for(picture["id"])))
        assert [type(e).__name__ for e in removed] == ["Removed"]
        history = await http.get(
            f"/v1/conversations/{conversation}/messages", headers=auth(ben_token)
        )
        [message] = history.json()["items"]
        assert message["text"] == "看"
        assert message["media"] == {
            "id": picture["id"],
            "url": None,
            "thumb_url": None,
            "width": picture["width"],
            "height": picture["height"],
            "removed": True,
        }
        # a repeated push changes nothing; the same bytes cannot come back
        assert (
            await post_push(http, fake.appid, fake.media_check_push(trace_id))
        ).status_code == 200
        reupload = await http.post(
            "/v1/media", content=data, headers={**auth(ann_token), "Content-Type": "image/jpeg"}
        )
        assert reupload.status_code == 410 and reupload.json()["code"] == "media_removed"


async def test_a_passing_picture_stays_and_the_local_checker_submits_nothing(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    token, reader = await login(http)
    live_server.container.wechat.openids.remember(UUID(reader["id"]), f"o-{uuid4().hex[:8]}")
    with wechat_media_check(live_server) as fake:
        picture = await upload(http, token, unique_png(), "cover")
        [(trace_id, body)] = list(fake.media_checks.items())
        assert body["scene"] == 3  # a cover: forum
        pushed = await post_push(http, fake.appid, fake.media_check_push(trace_id, "pass", 100))
        assert pushed.status_code == 200
        assert live_server.container.media.check_status(picture["id"]) == "pass"
        assert (await http.get(f"/v1/media/{picture['id']}")).status_code == 200
    assert live_server.container.wechat.media_check is None  # the local checker: pictures pass
    other = await upload(http, token, unique_png(), "chat")
    assert live_server.container.media.check_status(other["id"]) is None
    readiness = await http.get("/readyz", headers=OPERATOR)
    assert readiness.status_code == 200
