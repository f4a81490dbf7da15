"""E2E of the realtime path over real WebSockets (``websockets`` client), a real NATS and the
real inbox: live delivery, resume after being offline, several devices, malformed frames,
heartbeat, authentication, chat over the socket, rooms with presence."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import httpx
import pytest
from click.testing import CliRunner

from api.cli import main as cli
from realtime.protocol import MAX_FRAME_BYTES
from tests.e2e.conftest import OPERATOR, LiveServer
from tests.e2e.realtime_helpers import (
    Ws,
    auth,
    login,
    open_conversation,
    wait_for_head,
)


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


async def test_the_lenders_socket_receives_loan_requested_live(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    lender_token, lender = await login(http)
    borrower_token, borrower = await login(http)
    ws = await Ws.open(live_server.url, lender_token)
    try:
        hello = await ws.recv_type("hello")
        assert hello["reader"]["id"] == lender["id"]
        assert hello["heartbeat"] > 0 and hello["max_frame_bytes"] == MAX_FRAME_BYTES
        r = await http.post(
            "/v1/books", json={"isbn": "9787536692930", "title": "三体"}, headers=auth(lender_token)
        )
        assert r.status_code == 201, r.text
        book = r.json()
        r = await http.post(
            f"/v1/books/{book['id']}/loans",
            json={"note": "想读", "contact": {"wechat_id": "wx-borrower"}},
            headers=auth(borrower_token),
        )
        assert r.status_code == 201, r.text
        event = await ws.recv_type("event")
        assert event["kind"] == "loan.requested"
        assert event["seq"] == hello["head"] + 1
        assert event["data"]["loan_id"] == r.json()["id"]
        assert event["data"]["borrower"]["id"] == borrower["id"]
        assert event["data"]["contact"] == {"wechat_id": "wx-borrower"}  # the lender sees it
    finally:
        await ws.close()


async def test_a_hundred_messages_sent_while_offline_arrive_once_in_order_on_resume(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, _a = await login(http)
    b_token, b = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    b_ws = await Ws.open(live_server.url, b_token)
    last_seen = (await b_ws.recv_type("hello"))["head"]
    await b_ws.close()  # B goes offline

    sender = await Ws.open(live_server.url, a_token)
    await sender.recv_type("hello")
    for i in range(100):
        await sender.send(
            {
                "type": "chat.send",
                "conversation_id": conversation,
                "text": f"message {i}",
                "client_msg_id": f"m{i}",
            }
        )
        ack = await sender.recv_type("ack")
        assert ack["client_msg_id"] == f"m{i}" and ack["seq"] == i + 1
    await sender.close()
    await wait_for_head(http, b_token, last_seen + 100)

    started = time.perf_counter()
    b_ws = await Ws.open(live_server.url, b_token, after=last_seen)
    hello = await b_ws.recv_type("hello")
    events = await b_ws.events(100)
    elapsed = time.perf_counter() - started
    print(f"\nresume of 100 items (connect ?after=): {elapsed * 1000:.1f} ms")
    try:
        assert hello["head"] == last_seen + 100
        assert [e["seq"] for e in events] == list(range(last_seen + 1, last_seen + 101))
        assert [e["data"]["text"] for e in events] == [f"message {i}" for i in range(100)]
        assert {e["kind"] for e in events} == {"chat.message"}
        # once: nothing more arrives, then the socket is live
        assert [f for f in await b_ws.quiet(0.5) if f["type"] == "event"] == []
        r = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"text": "live one", "client_msg_id": "live-1"},
            headers=auth(a_token),
        )
        assert r.status_code in (201, 202), r.text
        live = await b_ws.recv_type("event")
        assert live["seq"] == last_seen + 101 and live["data"]["text"] == "live one"

        # the same through a `resume` frame on an open socket: the gap again, once
        started = time.perf_counter()
        await b_ws.send({"type": "resume", "after": last_seen})
        again = await b_ws.events(101)
        elapsed = time.perf_counter() - started
        print(f"resume of 101 items (resume frame): {elapsed * 1000:.1f} ms")
        assert [e["seq"] for e in again] == list(range(last_seen + 1, last_seen + 102))
        assert [f for f in await b_ws.quiet(0.3) if f["type"] == "event"] == []
    finally:
        await b_ws.close()


async def test_a_resume_beyond_the_head_gets_an_error_and_the_socket_stays_live(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, _a = await login(http)
    b_token, b = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    b_ws = await Ws.open(live_server.url, b_token)
    try:
        head = (await b_ws.recv_type("hello"))["head"]
        await b_ws.send({"type": "resume", "after": head + 50})  # e.g. a rebuilt inbox
        error = await b_ws.recv_type("error")
        assert error["code"] == "after_beyond_head" and error["frame"] == "resume"
        assert f"after={head + 50} is beyond your inbox head" in error["message"]

        # the socket stays open and goes on live from the head
        r = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"text": "still here", "client_msg_id": "live-1"},
            headers=auth(a_token),
        )
        assert r.status_code in (201, 202), r.text
        live = await b_ws.recv_until(
            lambda f: f.get("type") == "event" and f["data"].get("text") == "still here"
        )
        assert live["seq"] > head

        # and the client may resume again, from a seq it really has
        await b_ws.send({"type": "resume", "after": 0})
        again = await b_ws.events(live["seq"])
        assert [e["seq"] for e in again] == list(range(1, live["seq"] + 1))
        assert [f for f in await b_ws.quiet(0.3) if f["type"] in ("event", "error")] == []
    finally:
        await b_ws.close()


async def test_two_devices_of_one_reader_both_receive(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, _a = await login(http)
    b_token, b = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    phone = await Ws.open(live_server.url, b_token)
    ticket = (await http.post("/v1/ws/tickets", headers=auth(b_token))).json()["ticket"]
    tablet = await Ws.open(live_server.url, None, ticket=ticket)  # a browser: ?ticket=
    try:
        head = (await phone.recv_type("hello"))["head"]
        assert (await tablet.recv_type("hello"))["head"] == head
        r = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"text": "你好", "client_msg_id": "c1"},
            headers=auth(a_token),
        )
        assert r.status_code in (201, 202), r.text
        on_phone = await phone.recv_type("event")
        on_tablet = await tablet.recv_type("event")
        assert on_phone == on_tablet
        assert on_phone["seq"] == head + 1 and on_phone["data"]["text"] == "你好"
    finally:
        await phone.close()
        await tablet.close()


async def test_malformed_frames_get_errors_and_nobody_else_notices(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    bad_token, _ = await login(http)
    good_token, _ = await login(http)
    bad = await Ws.open(live_server.url, bad_token)
    good = await Ws.open(live_server.url, good_token)
    try:
        await bad.recv_type("hello")
        await good.recv_type("hello")
        cases = [
            ("not json at all", "malformed_json"),
            (b"\x00\x01binary", "binary_not_supported"),
            ('{"type": "teleport"}', "unknown_type"),
            ('{"no_type": 1}', "unknown_type"),
            ('{"type": "resume", "after": "x"}', "invalid_frame"),
            (
                '{"type": "chat.send", "conversation_id": "nope", "text": "", "client_msg_id": ""}',
                "invalid_frame",
            ),
            ("[1, 2, 3]", "invalid_frame"),
        ]
        for raw, code in cases:
            await bad.send(raw)
            error = await bad.recv_type("error")
            assert error["code"] == code, (raw, error)
            await good.send({"type": "ping"})
            assert (await good.recv_type("pong")) == {"type": "pong"}
        await bad.send({"type": "ping"})
        assert (await bad.recv_type("pong")) == {"type": "pong"}  # still served

        await bad.send(json.dumps({"type": "ping", "pad": "x" * MAX_FRAME_BYTES}))
        error = await bad.recv_type("error")
        assert error["code"] == "frame_too_large"
        assert (await bad.closed())[0] == 1009

        await good.send({"type": "ping"})
        assert (await good.recv_type("pong")) == {"type": "pong"}
        assert (await http.get("/healthz")).status_code == 200
    finally:
        await good.close()


async def test_ping_is_answered_with_pong(live_server: LiveServer, http: httpx.AsyncClient) -> None:
    token, _ = await login(http)
    ws = await Ws.open(live_server.url, token)
    try:
        await ws.recv_type("hello")
        for _ in range(3):
            await ws.send({"type": "ping"})
            assert await ws.recv_type("pong") == {"type": "pong"}
    finally:
        await ws.close()


async def test_unauthorised_sockets_are_refused_with_4401(live_server: LiveServer) -> None:
    for token in (None, "not-a-token"):
        ws = await Ws.open(live_server.url, token)
        error = await ws.recv()
        assert error["type"] == "error"
        assert error["code"] == ("missing_token" if token is None else "invalid_token")
        assert (await ws.closed())[0] == 4401
    ws = await Ws.open(live_server.url, None, after="-3")
    assert (await ws.recv())["code"] == "invalid_after"
    assert (await ws.closed())[0] == 4400


async def test_a_logged_out_token_is_refused(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    token, _ = await login(http)
    assert (await http.post("/v1/auth/logout", headers=auth(token))).status_code == 204
    ws = await Ws.open(live_server.url, token)
    assert (await ws.recv())["code"] in ("token_revoked", "invalid_token")
    assert (await ws.closed())[0] == 4401


async def test_chat_send_and_read_over_the_socket(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    a_token, a = await login(http)
    b_token, b = await login(http)
    c_token, _c = await login(http)
    conversation = await open_conversation(http, a_token, b["id"])
    a_ws = await Ws.open(live_server.url, a_token)
    b_ws = await Ws.open(live_server.url, b_token)
    c_ws = await Ws.open(live_server.url, c_token)
    try:
        for ws in (a_ws, b_ws, c_ws):
            await ws.recv_type("hello")
        send = {
            "type": "chat.send",
            "conversation_id": conversation,
            "text": "hi",
            "client_msg_id": "k1",
        }
        await a_ws.send(send)
        ack = await a_ws.recv_type("ack")
        assert ack["conversation_id"] == conversation and ack["seq"] == 1 and ack["created"]
        event = await b_ws.recv_type("event")
        assert event["kind"] == "chat.message"
        assert event["data"]["message_id"] == ack["message_id"]
        assert event["data"]["sender"]["id"] == a["id"]

        await a_ws.send(send)  # a retry: same message, nothing new
        again = await a_ws.recv_type("ack")
        assert again["message_id"] == ack["message_id"] and again["created"] is False

        await c_ws.send({**send, "client_msg_id": "intruder"})
        refused = await c_ws.recv_type("error")
        assert refused["code"] == "not_a_member" and refused["client_msg_id"] == "intruder"

        await c_ws.send(
            {
                "type": "chat.send",
                "conversation_id": str(uuid4()),
                "text": "x",
                "client_msg_id": "k",
            }
        )
        assert (await c_ws.recv_type("error"))["code"] == "conversation_not_found"

        await b_ws.send(
            {"type": "read", "conversation_id": conversation, "up_to": 1, "client_msg_id": "r1"}
        )
        read_ack = await b_ws.recv_type("ack")
        assert read_ack["client_msg_id"] == "r1" and read_ack["seq"] == 1
        receipt = await a_ws.recv_until(
            lambda f: f.get("type") == "event" and f["kind"] == "chat.read"
        )
        assert receipt["data"]["reader_id"] == b["id"] and receipt["data"]["up_to"] == 1
    finally:
        for ws in (a_ws, b_ws, c_ws):
            await ws.close()


async def test_the_server_pings_and_closes_a_silent_socket(
    live_server: LiveServer, http: httpx.AsyncClient
) -> None:
    gateway = live_server.container.extras["realtime"].gateway
    saved = gateway.config
    gateway.config = replace(saved, heartbeat=0.5)
    try:
        token, _ = await login(http)
        silent = await Ws.open(live_server.url, token)
        silent.answer_pings = False
        alive = await Ws.open(live_server.url, token)
        assert (await silent.recv_type("hello"))["heartbeat"] == 0.5
        await alive.recv_type("hello")
        assert (await silent.recv_type("ping", timeout=2)) == {"type": "ping"}
        started = time.monotonic()
        # meanwhile the other one reads (and so answers pings) for several intervals
        (code, reason), _ = await asyncio.gather(silent.closed(timeout=5), alive.quiet(2.0))
        assert code == 4012 and reason == "heartbeat timeout"
        assert time.monotonic() - started < 3
        await alive.send({"type": "ping"})
        assert await alive.recv_type("pong") == {"type": "pong"}
        await alive.close()
    finally:
        gateway.config = saved


def _create_room(database_url: str, name: str, title: str) -> str:
    result = CliRunner().invoke(
        cli,
        ["rooms", "create", name, title],
        env={"DATABASE_URL": database_url, "LIUDONG_ENV": "test"},
    )
    assert result.exit_code == 0, result.output
    return result.output


async def test_rooms_join_broadcast_presence_and_history(
    live_server: LiveServer, http: httpx.AsyncClient, database_url: str
) -> None:
    name = f"room-{uuid4().hex[:8]}"
    assert "created room" in _create_room(database_url, name, "读书会")
    assert "already exists" in _create_room(database_url, name, "读书会")
    a_token, a = await login(http)
    b_token, b = await login(http)
    a_ws = await Ws.open(live_server.url, a_token)
    b_ws = await Ws.open(live_server.url, b_token)
    b_phone = await Ws.open(live_server.url, b_token)
    try:
        for ws in (a_ws, b_ws, b_phone):
            await ws.recv_type("hello")
        await a_ws.send({"type": "room.send", "room": name, "text": "hi", "client_msg_id": "x"})
        assert (await a_ws.recv_type("error"))["code"] == "not_in_room"
        await a_ws.send({"type": "room.join", "room": "no-such-room"})
        assert (await a_ws.recv_type("error"))["code"] == "room_not_found"

        await a_ws.send({"type": "room.join", "room": name})
        joined = await a_ws.recv_type("room.joined")
        assert joined == {"type": "room.joined", "room": name, "title": "读书会", "members": 1}
        await b_ws.send({"type": "room.join", "room": name})
        assert (await b_ws.recv_type("room.joined"))["members"] == 2
        notice = await a_ws.recv_type("room.presence")
        assert notice["members"] == 2 and notice["joined"]["id"] == b["id"]
        await b_phone.send({"type": "room.join", "room": name})  # same reader: still 2
        assert (await b_phone.recv_type("room.joined"))["members"] == 2

        r = await http.get("/v1/rooms")
        assert r.status_code == 200, r.text
        listed = {room["name"]: room for room in r.json()["items"]}
        assert listed[name]["members"] == 2 and listed[name]["title"] == "读书会"

        await b_ws.send(
            {"type": "room.send", "room": name, "text": "大家好", "client_msg_id": "m1"}
        )
        ack = await b_ws.recv_type("ack")
        assert ack["room"] == name and ack["seq"] == 1
        for ws in (a_ws, b_ws, b_phone):
            message = await ws.recv_type("room.message")
            assert message["text"] == "大家好" and message["sender"]["id"] == b["id"]
            assert message["message_id"] == ack["message_id"] and message["seq"] == 1

        await b_ws.send({"type": "room.leave", "room": name})
        assert (await b_ws.recv_type("room.left"))["members"] == 2  # b's phone is still there
        await b_phone.close()
        left = await a_ws.recv_type("room.presence")
        assert left["members"] == 1 and left["left"]["id"] == b["id"]

        deadline = time.monotonic() + 10
        while True:
            r = await http.get(f"/v1/rooms/{name}/messages", headers=auth(a_token))
            assert r.status_code == 200, r.text
            if r.json()["items"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        (item,) = r.json()["items"]
        assert item["text"] == "大家好" and item["sender"]["id"] == b["id"] and item["seq"] == 1
        missing = await http.get("/v1/rooms/no-such-room/messages", headers=auth(a_token))
        assert missing.status_code == 404 and missing.json()["code"] == "room_not_found"
        assert a["id"] != b["id"]
    finally:
        for ws in (a_ws, b_ws):
            await ws.close()

    listing = CliRunner().invoke(
        cli,
        ["rooms", "list", "--json", "--wait", "0.3"],
        env={
            "DATABASE_URL": database_url,
            "LIUDONG_ENV": "test",
            "NATS_URL": live_server.container.nats_url,
        },
    )
    assert listing.exit_code == 0, listing.output
    rows = [json.loads(line) for line in listing.output.splitlines() if line.startswith("{")]
    assert any(row["name"] == name and row["messages"] == 1 for row in rows)


async def test_readiness_includes_nats(live_server: LiveServer, http: httpx.AsyncClient) -> None:
    r = await http.get("/readyz", headers=OPERATOR)
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["nats"]["ok"] is True


async def test_a_slow_consumer_is_closed_with_4008_and_others_keep_being_served(
    live_server: LiveServer, http: httpx.AsyncClient, database_url: str, nats_url: str
) -> None:
    """A client that stops reading while its room floods: its server-side queue fills (after
    the kernel buffers: its receive buffer is pinned small) and it is closed with 4008; the
    server keeps serving another reader meanwhile."""
    import socket as sockets

    import nats
    from websockets.asyncio.client import connect

    from domain.chat import room_id_for
    from realtime.protocol import ReaderRef, RoomMessage, encode

    flooded, calm = f"flood-{uuid4().hex[:8]}", f"calm-{uuid4().hex[:8]}"
    _create_room(database_url, flooded, "flood")
    _create_room(database_url, calm, "calm")
    slow_token, slow_reader = await login(http)
    good_token, _ = await login(http)
    gateway = live_server.container.extras["realtime"].gateway
    saved = gateway.config
    good = await Ws.open(live_server.url, good_token)
    gateway.config = replace(saved, queue_size=32)
    raw = sockets.socket()
    raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 16 * 1024)
    host, port = live_server.url.removeprefix("http://").split(":")
    raw.connect((host, int(port)))
    conn = await connect(
        f"ws://{host}:{port}/v1/ws",
        sock=raw,
        compression=None,
        ping_interval=None,
        additional_headers=auth(slow_token),
        max_queue=4,
    )
    slow = Ws(conn)
    nc = await nats.connect(nats_url)
    try:
        for ws, room in ((slow, flooded), (good, calm)):
            await ws.recv_type("hello")
            await ws.send({"type": "room.join", "room": room})
            await ws.recv_type("room.joined")
        gateway.config = saved
        payload = encode(
            RoomMessage(
                room=flooded,
                message_id=uuid4(),
                sender=ReaderRef(id=slow_reader["id"]),
                text="书" * 2000,
                at=datetime.now(UTC),
                seq=1,
            )
        )
        for _ in range(1500):  # ~9 MB: more than the kernel buffers plus 32 queued frames
            await nc.publish(f"liudong.room.{room_id_for(flooded)}", payload)
        await nc.flush()
        code, reason = await slow.closed(timeout=30)
        assert (code, reason) == (4008, "slow consumer")
        await good.send({"type": "ping"})
        assert await good.recv_type("pong") == {"type": "pong"}
        await good.send(
            {"type": "room.send", "room": calm, "text": "still here", "client_msg_id": "s1"}
        )
        assert (await good.recv_type("room.message"))["text"] == "still here"
    finally:
        gateway.config = saved
        await nc.close()
        await good.close()
        await slow.close()


async def test_a_burst_of_room_messages_reaches_every_member_whole_and_in_order(
    live_server: LiveServer, http: httpx.AsyncClient, database_url: str, nats_url: str
) -> None:
    """Room messages that reach the node together (published at once on NATS, two rooms
    interleaved) are written to each socket in runs (one write per run of one room): a
    member of both rooms gets every message in the order published, a member of one room
    its room's messages in order."""
    import nats

    from domain.chat import room_id_for
    from realtime.protocol import ReaderRef, RoomMessage, encode

    first, second = f"burst-{uuid4().hex[:8]}", f"burst-{uuid4().hex[:8]}"
    _create_room(database_url, first, "first")
    _create_room(database_url, second, "second")
    both_token, sender = await login(http)
    one_token, _ = await login(http)
    both = await Ws.open(live_server.url, both_token)
    one = await Ws.open(live_server.url, one_token)
    nc = await nats.connect(nats_url)
    try:
        for ws, rooms in ((both, (first, second)), (one, (first,))):
            await ws.recv_type("hello")
            for room in rooms:
                await ws.send({"type": "room.join", "room": room})
                await ws.recv_type("room.joined")
        # runs of 1 to 4 messages of one room, alternating rooms: 150 messages
        published: list[tuple[str, int]] = []
        run = 0
        while len(published) < 150:
            room = (first, second)[run % 2]
            published += [(room, len(published) + k + 1) for k in range(run % 4 + 1)]
            run += 1
        for room, seq in published:
            message = RoomMessage(
                room=room,
                message_id=uuid4(),
                sender=ReaderRef(id=sender["id"]),
                text=f"m{seq}",
                at=datetime.now(UTC),
                seq=seq,
            )
            await nc.publish(f"liudong.room.{room_id_for(room)}", encode(message))
        await nc.flush()

        async def messages(ws: Ws, count: int) -> list[tuple[str, int]]:
            return [
                (frame["room"], frame["seq"])
                for frame in [await ws.recv_type("room.message") for _ in range(count)]
            ]

        in_first = [(room, seq) for room, seq in published if room == first]
        assert await messages(both, len(published)) == published
        assert await messages(one, len(in_first)) == in_first
    finally:
        await nc.close()
        await both.close()
        await one.close()
