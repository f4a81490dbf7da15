"""The pieces of ``api.http.ws_protocol`` that stand in for asyncio's (``Gate`` for the write
buffer's ``Event``, ``ReceiveQueue`` for the received events' ``Queue``) and the frame
encoding of ``send_now``; the protocol itself runs under every e2e WebSocket test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.http.ws_protocol import SEND_NOW, Gate, GatewayWebSocketProtocol, ReceiveQueue, text_frame

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
async def test_text_frame_is_one_unmasked_final_text_frame(size: int) -> None:
    text = ("读" * size)[:size]
    frame = _parse(text_frame(text))
    assert frame.opcode is Opcode.TEXT and frame.fin and not frame.rsv1
    assert bytes(frame.data).decode() == text


async def test_gate_waits_until_set_and_passes_at_once_when_set() -> None:
    gate = Gate()
    gate.set()
    assert gate.is_set() and await gate.wait() is True
    gate.clear()
    assert not gate.is_set()
    waiters = [asyncio.create_task(gate.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gate.set()
    assert await asyncio.gather(*waiters) == [True, True]


async def test_gate_waiter_cancelled_leaves_no_trace() -> None:
    gate = Gate()
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()  # nothing left to wake
    assert gate.is_set()


async def test_receive_queue_is_fifo_and_get_waits_for_a_put() -> None:
    queue = ReceiveQueue()
    assert queue.empty()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert not queue.empty()
    assert [await queue.get(), await queue.get()] == [1, 2]
    assert queue.empty()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(3)
    assert await getter == 3


async def test_receive_queue_refuses_a_second_receiver_and_survives_a_cancelled_one() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await queue.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    queue.put_nowait("after")
    assert await queue.get() == "after"


class FakeTransport:
    """What uvicorn's protocol uses of an asyncio transport; keeps what was written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


HANDSHAKE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_the_protocol_offers_send_now_while_send_would_not_wait() -> None:
    """One connection through ``GatewayWebSocketProtocol`` with an ASGI app: the scope has
    ``send_now``; it writes while the connection is open and under the high-water mark,
    and refuses (``False``, nothing written) when paused or after the close; frames sent
    by the client after the handshake still reach the app (the frame parser restarted)."""
    received: list[Any] = []
    scopes: list[Any] = []
    go_on = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        received.append(await receive())
        await go_on.wait()
        await send({"type": "websocket.close", "code": 1000})

    config = uvicorn.Config(app, ws=GatewayWebSocketProtocol, log_level="warning")
    config.load()
    protocol = GatewayWebSocketProtocol(config, ServerState(), {})
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(HANDSHAKE)
    assert protocol.request is None
    await _until(lambda: protocol.handshake_complete)
    assert protocol.response is None  # let go once accepted
    send_now = scopes[0]["extensions"][SEND_NOW]
    assert transport.written[0].startswith(b"HTTP/1.1 101")

    assert send_now(text_frame("one")) is True
    assert _parse(transport.written[-1]).data == b"one"
    protocol.pause_writing()
    assert send_now(text_frame("two")) is False
    protocol.resume_writing()
    assert send_now(text_frame("two")) is True

    protocol.data_received(Frame(Opcode.TEXT, b'{"type":"ping"}').serialize(mask=True))
    await _until(lambda: bool(received))
    assert received == [{"type": "websocket.receive", "text": '{"type":"ping"}'}]

    go_on.set()
    await _until(lambda: protocol.close_sent)
    before = len(transport.written)
    assert send_now(text_frame("late")) is False and len(transport.written) == before
    protocol.connection_lost(None)


async def test_the_protocol_keeps_its_state_in_slots_not_a_dict() -> None:
    """Every attribute uvicorn's protocol sets (at creation, at the handshake) is one of
    ``GatewayWebSocketProtocol.__slots__``: no instance dict per connection (one would be
    ~1.6 KB). Fails when a uvicorn upgrade adds one: add it to the slots."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    config = uvicorn.Config(app, ws=GatewayWebSocketProtocol, log_level="warning")
    config.load()
    protocol = GatewayWebSocketProtocol(config, ServerState(), {})
    protocol.connection_made(FakeTransport())  # type: ignore[arg-type]
    protocol.data_received(HANDSHAKE)
    await _until(lambda: protocol.handshake_complete)
    assert vars(protocol) == {}
    protocol.connection_lost(None)


async def _until(predicate: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)
