"""The pieces of ``api.http.ws_protocol`` that stand in for asyncio's (``Gate`` for the write
buffer's ``Event``, ``ReceiveQueue`` for the received events' ``Queue``) and the frame
encoding of ``send_now``; the protocol itself runs under every e2e WebSocket test."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.http.ws_protocol import Gate, ReceiveQueue, text_frame

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
