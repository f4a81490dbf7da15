"""The gateway's per-socket rules with in-memory fakes (no network): order, duplicates, gaps
filled from the inbox, resume while live items arrive, slow consumers, bad frames."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.chat import room_id_for
from realtime.gateway import Gateway, GatewayConfig, Session
from realtime.gateway.rooms import RUN_BYTES, Rooms
from realtime.presence import Presence
from realtime.protocol import Event, ReaderRef, encode_text

pytestmark = pytest.mark.asyncio(loop_scope="function")

AT = datetime(2026, 1, 1, tzinfo=UTC)


class FakeSocket:
    """A socket whose peer reads everything at once, or (``stuck``) nothing after hello."""

    def __init__(self, stuck: bool = False) -> None:
        self.incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.stuck = stuck
        self.changed = asyncio.Event()

    async def receive(self) -> str | bytes | None:
        return await self.incoming.get()

    async def send(self, text: str) -> None:
        if self.stuck and self.sent:
            await asyncio.Event().wait()  # never drains
        self.sent.append(json.loads(text))
        self.changed.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.incoming.put_nowait(None)
        self.changed.set()

    def events(self) -> list[int]:
        return [f["seq"] for f in self.sent if f["type"] == "event"]

    async def wait_for(self, predicate: Any, timeout: float = 2.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


class FakeInbox:
    def __init__(self) -> None:
        self.items_by_reader: dict[UUID, list[dict[str, Any]]] = {}
        self.delay = 0.0

    def add(self, reader: UUID, count: int) -> list[int]:
        feed = self.items_by_reader.setdefault(reader, [])
        new = []
        for _ in range(count):
            seq = len(feed) + 1
            feed.append({"seq": seq, "kind": "test", "at": AT, "data": {"n": seq}})
            new.append(seq)
        return new

    def items(self, reader_id: UUID, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        if self.delay:
            import time

            time.sleep(self.delay)
        feed = self.items_by_reader.get(reader_id, [])
        return [i for i in feed if i["seq"] > after][:limit], len(feed)

    def head(self, reader_id: UUID) -> int:
        return len(self.items_by_reader.get(reader_id, []))


class FakeNats:
    async def publish(self, subject: str, payload: bytes) -> None:
        pass


def frame(seq: int) -> str:
    return encode_text(Event(seq=seq, kind="test", at=AT, data={"n": seq}))


async def start(
    inbox: FakeInbox, socket: FakeSocket, reader: UUID, after: int | None = None, **config: Any
) -> tuple[Gateway, Session, asyncio.Task[None]]:
    gateway = Gateway(
        FakeNats(),
        inbox,
        chat=None,
        presence=Presence(FakeNats(), "n1"),  # type: ignore[arg-type]
        config=GatewayConfig(**config),
    )
    task = asyncio.create_task(gateway.serve(socket, reader, after))
    await socket.wait_for(lambda: any(f["type"] == "hello" for f in socket.sent))
    (session,) = gateway.sessions[str(reader)]
    await asyncio.wait_for(_until(lambda: not session.replaying), 2)
    return gateway, session, task


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.001)


async def test_live_items_are_sent_in_order_and_duplicates_dropped() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    inbox.add(reader, 3)
    gateway, session, task = await start(inbox, socket, reader)
    inbox.add(reader, 2)
    for seq in (4, 4, 3, 5, 5):
        gateway.offer(session, seq, frame(seq))
    await socket.wait_for(lambda: socket.events() == [4, 5])
    assert gateway.stats.duplicates_dropped == 3
    socket.incoming.put_nowait(None)
    await task


async def test_a_gap_is_filled_from_the_inbox_in_order() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    gateway, session, task = await start(inbox, socket, reader)
    inbox.add(reader, 5)
    gateway.offer(session, 1, frame(1))
    gateway.offer(session, 4, frame(4))  # 2 and 3 never came over NATS
    gateway.offer(session, 5, frame(5))
    await socket.wait_for(lambda: socket.events() == [1, 2, 3, 4, 5])
    assert gateway.stats.gap_replays == 1
    socket.incoming.put_nowait(None)
    await task


async def test_resume_replays_then_releases_held_live_items_once() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    inbox.add(reader, 250)
    inbox.delay = 0.01
    gateway, session, task = await start(inbox, socket, reader, replay_page=100)
    inbox.add(reader, 3)  # 251..253 committed
    socket.incoming.put_nowait(json.dumps({"type": "resume", "after": 10}))
    await _until(lambda: session.replaying)
    for seq in (251, 253, 252, 251):  # live copies arrive during the replay, out of order
        gateway.offer(session, seq, frame(seq))
    await socket.wait_for(lambda: socket.events()[-1:] == [253])
    assert socket.events() == list(range(11, 254))
    socket.incoming.put_nowait(None)
    await task


async def test_connect_with_after_replays_the_gap_before_live() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    inbox.add(reader, 7)
    gateway, session, task = await start(inbox, socket, reader, after=2)
    assert socket.sent[0]["type"] == "hello" and socket.sent[0]["head"] == 7
    await socket.wait_for(lambda: socket.events() == [3, 4, 5, 6, 7])
    inbox.add(reader, 1)
    gateway.offer(session, 8, frame(8))
    await socket.wait_for(lambda: socket.events()[-1] == 8)
    socket.incoming.put_nowait(None)
    await task


async def test_a_slow_consumer_is_closed_with_4008_and_memory_stays_bounded() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket(stuck=True)
    gateway, session, task = await start(inbox, socket, reader, queue_size=16)
    for seq in range(1, 1000):
        gateway.offer(session, seq, frame(seq))
        assert len(session.queue) <= 16
    await asyncio.wait_for(task, 7)
    assert socket.closed == (4008, "slow consumer")
    assert gateway.stats.closed_by_code.get(4008) == 1
    assert gateway.sessions == {}


async def test_bad_frames_are_answered_and_the_session_goes_on() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    gateway, session, task = await start(inbox, socket, reader)
    for raw in ("{", b"\x00", '{"type": "x"}', '{"type": "ping", "extra": 1}'):
        socket.incoming.put_nowait(raw)
    socket.incoming.put_nowait('{"type": "ping"}')
    await socket.wait_for(lambda: socket.sent[-1] == {"type": "pong"})
    codes = [f["code"] for f in socket.sent if f["type"] == "error"]
    assert codes == ["malformed_json", "binary_not_supported", "unknown_type", "invalid_frame"]
    socket.incoming.put_nowait("x" * 20_000)
    await asyncio.wait_for(task, 2)
    assert socket.sent[-1]["code"] == "frame_too_large"
    assert socket.closed == (1009, "frame too large")


async def test_the_oldest_socket_is_replaced_beyond_the_per_reader_limit() -> None:
    reader, inbox = uuid4(), FakeInbox()
    first, second = FakeSocket(), FakeSocket()
    gateway, _session, task1 = await start(inbox, first, reader, max_sockets_per_reader=1)
    task2 = asyncio.create_task(gateway.serve(second, reader))
    await asyncio.wait_for(task1, 2)
    assert first.closed == (4000, "too many connections of this reader")
    await second.wait_for(lambda: bool(second.sent))
    second.incoming.put_nowait(None)
    await task2


async def test_an_after_beyond_the_head_is_reported_and_the_socket_starts_at_the_head() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    inbox.add(reader, 3)
    gateway, session, task = await start(inbox, socket, reader, after=9)
    assert [f["type"] for f in socket.sent] == ["hello", "error"]
    assert socket.sent[1]["code"] == "after_beyond_head"
    assert session.last_seq == 3
    inbox.add(reader, 1)
    gateway.offer(session, 4, frame(4))
    await socket.wait_for(lambda: socket.events() == [4])
    socket.incoming.put_nowait(None)
    await task


async def test_a_resume_beyond_the_head_is_reported_and_the_socket_goes_on_from_the_head() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    inbox.add(reader, 3)
    gateway, session, task = await start(inbox, socket, reader)
    socket.incoming.put_nowait(json.dumps({"type": "resume", "after": 9}))
    await socket.wait_for(lambda: any(f["type"] == "error" for f in socket.sent))
    (error,) = [f for f in socket.sent if f["type"] == "error"]
    assert error["code"] == "after_beyond_head" and error["frame"] == "resume"
    assert "after=9" in error["message"] and "head 3" in error["message"]
    await _until(lambda: not session.replaying)
    assert session.last_seq == 3 and socket.closed is None  # open, at the head
    inbox.add(reader, 1)
    gateway.offer(session, 4, frame(4))  # live again
    await socket.wait_for(lambda: socket.events() == [4])
    socket.incoming.put_nowait(json.dumps({"type": "resume", "after": 2}))  # and may resume
    await socket.wait_for(lambda: socket.events() == [4, 3, 4])
    socket.incoming.put_nowait(None)
    await task


class CommitDuringFirstRead(FakeInbox):
    """Item 4 is committed (and offered live) just after the first read of a resume."""

    def __init__(self, reader: UUID) -> None:
        super().__init__()
        self.add(reader, 3)
        self.commit: Any = None  # set by the test: runs on the loop
        self.loop = asyncio.get_running_loop()

    def items(self, reader_id: UUID, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        found = super().items(reader_id, after, limit)
        if self.commit is not None and after == 9:
            commit, self.commit = self.commit, None
            self.loop.call_soon_threadsafe(commit)
            import time

            time.sleep(0.05)  # the live copy arrives while this read is on its way back
        return found


async def test_an_item_committed_while_a_resume_beyond_the_head_is_checked_is_sent() -> None:
    reader, socket = uuid4(), FakeSocket()
    inbox = CommitDuringFirstRead(reader)
    gateway, session, task = await start(inbox, socket, reader)

    def commit() -> None:
        inbox.add(reader, 1)
        gateway.offer(session, 4, frame(4))  # 4 <= after: dropped as a duplicate

    inbox.commit = commit
    socket.incoming.put_nowait(json.dumps({"type": "resume", "after": 9}))
    await socket.wait_for(lambda: socket.events() == [4])  # re-read from the head
    assert [f["code"] for f in socket.sent if f["type"] == "error"] == ["after_beyond_head"]
    socket.incoming.put_nowait(None)
    await task


class GatedSocket(FakeSocket):
    """A socket whose sends after the first wait until ``gate`` opens (a full transport)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(self, text: str) -> None:
        if self.sent and not self.gate.is_set():
            await self.gate.wait()
        await super().send(text)


async def test_a_send_that_waits_keeps_the_order_and_later_frames_queue_behind_it() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), GatedSocket()
    gateway, session, task = await start(inbox, socket, reader)
    inbox.add(reader, 21)
    for seq in range(1, 21):
        gateway.offer(session, seq, frame(seq))
    assert session.writer is not None  # the first send waits: a writer task finishes it
    assert len(session.queue) == 19 and socket.events() == []
    socket.gate.set()
    await socket.wait_for(lambda: socket.events() == list(range(1, 21)))
    await _until(lambda: session.writer is None)
    gateway.offer(session, 21, frame(21))  # idle again: written at once, in the caller's step
    assert socket.events()[-1] == 21 and session.writer is None
    socket.incoming.put_nowait(None)
    await task


async def test_a_socket_closed_while_a_send_waits_is_closed_and_its_session_ends() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), GatedSocket()
    gateway, session, task = await start(inbox, socket, reader)
    gateway.offer(session, 1, frame(1))
    assert session.writer is not None
    gateway.close(session, 4000, "replaced")
    await asyncio.wait_for(task, 7)
    assert socket.closed == (4000, "replaced") and socket.events() == []
    assert gateway.sessions == {}


async def test_one_sweep_pings_every_socket_and_closes_the_silent_one_with_4012() -> None:
    inbox = FakeInbox()
    silent, chatty = FakeSocket(), FakeSocket()
    gateway, _, silent_task = await start(inbox, silent, uuid4(), heartbeat=0.2)
    chatty_task = asyncio.create_task(gateway.serve(chatty, uuid4()))
    await chatty.wait_for(lambda: any(f["type"] == "hello" for f in chatty.sent))

    async def answer_pings() -> None:
        answered = 0
        while True:
            await chatty.wait_for(lambda n=answered: chatty.sent.count({"type": "ping"}) > n)
            answered += 1
            chatty.incoming.put_nowait('{"type": "pong"}')

    answering = asyncio.create_task(answer_pings())
    await asyncio.wait_for(silent_task, 3)
    assert {"type": "ping"} in silent.sent
    assert silent.closed == (4012, "heartbeat timeout")
    assert chatty.closed is None and chatty.sent.count({"type": "ping"}) >= 2
    assert gateway._sweep is not None  # still sweeping for the other socket
    answering.cancel()
    chatty.incoming.put_nowait(None)
    await chatty_task
    assert gateway.stats.closed_by_code == {4012: 1, 1000: 1}


class Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.subject = "liudong.sessions.revoked"


async def test_a_revoked_session_gets_session_ended_and_4401_and_other_sessions_stay() -> None:
    reader, inbox = uuid4(), FakeInbox()
    ended, stays = FakeSocket(), FakeSocket()
    gateway = Gateway(
        FakeNats(),
        inbox,
        chat=None,
        presence=Presence(FakeNats(), "n1"),  # type: ignore[arg-type]
    )
    t1 = asyncio.create_task(gateway.serve(ended, reader, auth_id="s-old"))
    t2 = asyncio.create_task(gateway.serve(stays, reader, auth_id="s-new"))
    for s in (ended, stays):
        await s.wait_for(lambda s=s: any(f["type"] == "hello" for f in s.sent))
    await gateway._on_revoked(Msg(b"s-other s-old"))  # as a revocation arrives from NATS
    await asyncio.wait_for(t1, 2)
    assert ended.sent[-1]["type"] == "error" and ended.sent[-1]["code"] == "session_ended"
    assert ended.closed == (4401, "session_ended")
    assert stays.closed is None
    stays.incoming.put_nowait(None)
    await t2


async def test_a_replaced_session_gets_session_replaced_and_4409() -> None:
    reader, inbox = uuid4(), FakeInbox()
    replaced, stays = FakeSocket(), FakeSocket()
    gateway = Gateway(
        FakeNats(),
        inbox,
        chat=None,
        presence=Presence(FakeNats(), "n1"),  # type: ignore[arg-type]
    )
    t1 = asyncio.create_task(gateway.serve(replaced, reader, auth_id="s-phone"))
    t2 = asyncio.create_task(gateway.serve(stays, reader, auth_id="s-tablet"))
    for s in (replaced, stays):
        await s.wait_for(lambda s=s: any(f["type"] == "hello" for f in s.sent))
    await gateway._on_replaced(Msg(b"s-phone"))  # as liudong.sessions.replaced arrives
    await asyncio.wait_for(t1, 2)
    assert replaced.sent[-1]["type"] == "error"
    assert replaced.sent[-1]["code"] == "session_replaced"
    assert replaced.closed == (4409, "session_replaced")
    assert stays.closed is None
    stays.incoming.put_nowait(None)
    await t2


async def test_an_expired_session_is_ended_by_the_heartbeat_sweep_at_its_expiry() -> None:
    import time

    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    gateway = Gateway(
        FakeNats(),
        inbox,
        chat=None,
        presence=Presence(FakeNats(), "n1"),  # type: ignore[arg-type]
        config=GatewayConfig(heartbeat=30),
    )
    started = time.monotonic()
    task = asyncio.create_task(
        gateway.serve(socket, reader, auth_id="s", expires_at=time.time() + 0.3)
    )
    await asyncio.wait_for(task, 2)  # long before the first ping (30 s)
    assert 0.25 < time.monotonic() - started < 1.0
    assert [f["type"] for f in socket.sent][-1] == "error"
    assert socket.sent[-1]["code"] == "session_ended"
    assert socket.closed == (4401, "session_ended")


async def test_frames_over_the_socket_rate_get_rate_limited_with_retry_after() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    _gateway, _session, task = await start(inbox, socket, reader, frame_rate="3/minute")
    for _ in range(5):
        socket.incoming.put_nowait('{"type": "ping"}')
    await socket.wait_for(lambda: len([f for f in socket.sent if f["type"] != "hello"]) == 5)
    answers = [f for f in socket.sent if f["type"] != "hello"]
    assert [f["type"] for f in answers] == ["pong"] * 3 + ["error"] * 2
    assert {f["code"] for f in answers[3:]} == {"rate_limited"}
    assert all(1 <= f["retry_after"] <= 60 for f in answers[3:])
    assert socket.closed is None  # refused frames, not a closed socket
    socket.incoming.put_nowait(None)
    await task


class InboxMsg:
    """A message from the inbox subject as the relay publishes it."""

    def __init__(self, reader: UUID, seq: int, data: bytes, withheld: bool) -> None:
        from realtime.relay import MSG_ID, SUBJECT_PREFIX, WITHHELD, msg_id

        self.subject = SUBJECT_PREFIX + str(reader)
        self.data = data
        self.headers = {MSG_ID: msg_id(str(reader), seq)}
        if withheld:
            self.headers[WITHHELD] = "1"


async def test_a_withheld_item_is_read_from_the_inbox_whole_and_in_order() -> None:
    reader, inbox, socket = uuid4(), FakeInbox(), FakeSocket()
    gateway, _session, task = await start(inbox, socket, reader)
    inbox.add(reader, 3)
    inbox.items_by_reader[reader][1]["data"] = {"n": 2, "contact": {"phone": "139"}}
    await gateway._on_inbox(InboxMsg(reader, 1, frame(1).encode(), withheld=False))
    # seq 2 came over NATS without its personal fields: the inbox has them
    await gateway._on_inbox(InboxMsg(reader, 2, b'{"stripped": true}', withheld=True))
    await gateway._on_inbox(InboxMsg(reader, 3, frame(3).encode(), withheld=False))
    await socket.wait_for(lambda: socket.events() == [1, 2, 3])
    (second,) = [f for f in socket.sent if f.get("seq") == 2]
    assert second["data"]["contact"] == {"phone": "139"}
    assert not any("stripped" in json.dumps(f) for f in socket.sent)
    # an old withheld copy changes nothing
    await gateway._on_inbox(InboxMsg(reader, 2, b"{}", withheld=True))
    assert socket.events() == [1, 2, 3]
    socket.incoming.put_nowait(None)
    await task


class DirectFakeSocket(FakeSocket):
    """A ``DirectSocket`` whose transport takes every write (``writes``: each ``send_now``'s
    frame as given), or none once ``full``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[Any] = []
        self.full = False

    def send_now(self, frame: Any) -> bool:
        if self.full:
            return False
        self.writes.append(frame)
        return True


class RoomMsg:
    def __init__(self, room: str, text: str) -> None:
        self.subject = f"liudong.room.{room_id_for(room)}"
        self.data = text.encode()


async def _rooms_with_members(*sockets: DirectFakeSocket, queue_size: int = 256) -> Any:
    rooms = Rooms(FakeNats(), chat=None, presence=Presence(FakeNats(), "n1"))  # type: ignore[arg-type]
    rooms._titles["lobby"] = "Lobby"
    sessions = []
    for socket in sockets:
        session = Session(ReaderRef(id=uuid4()), socket, queue_size)  # type: ignore[arg-type]
        await rooms.join(session, "lobby")
        sessions.append(session)
    for socket in sockets:
        socket.writes.clear()
    return rooms, sessions


async def test_room_messages_arriving_together_go_to_each_socket_in_one_write() -> None:
    one, two = DirectFakeSocket(), DirectFakeSocket()
    rooms, _ = await _rooms_with_members(one, two)
    for n in range(3):  # as nats-py hands a burst over: one callback after the other
        await rooms.on_message(RoomMsg("lobby", f'{{"n":{n}}}'))
    assert one.writes == [] and two.writes == []  # written at the loop's next iteration
    await asyncio.sleep(0)
    (run,) = one.writes
    assert two.writes == [run] and run.texts == ['{"n":0}', '{"n":1}', '{"n":2}']
    await rooms.on_message(RoomMsg("lobby", '{"n":3}'))  # alone: one frame, as before
    await asyncio.sleep(0)
    assert [w.text for w in one.writes[1:]] == ['{"n":3}']


async def test_a_burst_over_run_bytes_goes_out_in_several_runs_in_order() -> None:
    socket = DirectFakeSocket()
    rooms, _ = await _rooms_with_members(socket)
    texts = [f'{{"n":{n},"pad":"{"x" * 20_000}"}}' for n in range(5)]  # ~20 KB each
    for text in texts:
        await rooms.on_message(RoomMsg("lobby", text))
    await asyncio.sleep(0)
    runs = [write.texts for write in socket.writes]
    assert runs == [texts[:3], texts[3:]]  # at most RUN_BYTES (64 KB) in one write
    assert all(sum(len(t) for t in run) <= RUN_BYTES for run in runs)


async def test_a_frame_broadcast_after_room_messages_arrived_goes_out_after_them() -> None:
    one, two = DirectFakeSocket(), DirectFakeSocket()
    rooms, _ = await _rooms_with_members(one, two)
    await rooms.on_message(RoomMsg("lobby", '{"n":0}'))
    await rooms.on_message(RoomMsg("lobby", '{"n":1}'))
    rooms.on_presence_change("lobby", 3, [ReaderRef(id=uuid4())], [])
    assert [type(w).__name__ for w in one.writes] == ["SharedRun", "Shared"]
    assert json.loads(one.writes[1].text)["type"] == "room.presence"
    await asyncio.sleep(0)
    assert len(one.writes) == 2  # nothing written twice


async def test_a_run_for_a_full_transport_queues_frame_by_frame_and_overflow_closes_4008() -> None:
    socket = DirectFakeSocket()
    rooms, (session,) = await _rooms_with_members(socket, queue_size=3)
    socket.full = socket.stuck = True  # over the high-water mark: send() waits
    socket.sent.append({"type": "hello"})
    for n in range(4):
        await rooms.on_message(RoomMsg("lobby", f'{{"n":{n}}}'))
    await asyncio.sleep(0)
    # the first frame's send waits in a writer task, the rest queue behind it, in order
    assert session.writer is not None and not session.closed
    assert list(session.queue) == ['{"n":1}', '{"n":2}', '{"n":3}']
    for n in range(4, 6):  # one more than the queue holds
        await rooms.on_message(RoomMsg("lobby", f'{{"n":{n}}}'))
    await asyncio.sleep(0)
    assert session.closed and session.close_code == 4008
