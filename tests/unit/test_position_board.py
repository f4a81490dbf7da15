"""``PositionBoard``: a waiter is woken by its own position, polls the database only while no
runner of this process holds the projection (and goes back to polling when it lets go)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from projections.board import PositionBoard


class CountingPoll:
    """A ``poll`` callable: the database's position, and how often it was asked."""

    def __init__(self, position: int = 0) -> None:
        self.position = position
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.position


def waiting(board: PositionBoard, position: int, poll: CountingPoll | None, timeout: float = 5.0):
    """Start ``board.wait`` in a thread; returns (thread, result list)."""
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(board.wait("shelf", "library", position, timeout, poll))
    )
    thread.start()
    return thread, result


def test_a_known_position_returns_at_once_without_polling() -> None:
    board = PositionBoard()
    board.publish("shelf", "library", 7)
    poll = CountingPoll()
    assert board.wait("shelf", "library", 7, 1.0, poll)
    assert board.wait("shelf", "library", 3, 1.0, poll)
    assert poll.calls == 0


def test_publish_wakes_the_waiters_it_satisfies_only() -> None:
    board = PositionBoard()
    board.hold("shelf")
    low, low_result = waiting(board, 5, None)
    high, high_result = waiting(board, 9, None)
    board.publish("shelf", "library", 6)
    low.join(2.0)
    assert low_result == [True]
    assert high.is_alive() and not high_result
    board.publish("shelf", "library", 9)
    high.join(2.0)
    assert high_result == [True]


def test_positions_never_go_back_and_are_kept_per_projection_and_source() -> None:
    board = PositionBoard()
    board.publish("shelf", "library", 10)
    board.publish("shelf", "library", 4)
    board.publish("inbox", "chat", 2)
    assert board.known("shelf", "library") == 10
    assert board.known("inbox", "chat") == 2
    assert board.known("inbox", "library") == 0


def test_no_database_poll_while_a_local_runner_holds_the_projection() -> None:
    board = PositionBoard()
    board.hold("shelf")
    poll = CountingPoll()
    thread, result = waiting(board, 3, poll)
    time.sleep(0.4)  # 8 polls without a local runner
    board.publish("shelf", "library", 3)
    thread.join(2.0)
    assert result == [True]
    assert poll.calls == 0


def test_without_a_local_runner_the_waiter_polls_the_database() -> None:
    board = PositionBoard()
    poll = CountingPoll()
    thread, result = waiting(board, 3, poll)
    time.sleep(0.2)
    assert thread.is_alive() and poll.calls >= 1
    poll.position = 4  # another process's runner got there
    thread.join(2.0)
    assert result == [True]
    assert board.known("shelf", "library") == 4  # what was polled is on the board


def test_a_runner_letting_go_sends_its_waiters_back_to_polling() -> None:
    board = PositionBoard()
    board.hold("shelf")
    poll = CountingPoll()
    thread, result = waiting(board, 3, poll)
    time.sleep(0.2)
    assert poll.calls == 0
    board.release("shelf")  # failover: another process takes the projection over
    poll.position = 3
    thread.join(2.0)
    assert result == [True]
    assert poll.calls >= 1
    assert not board.held("shelf")


def test_holders_are_counted() -> None:
    board = PositionBoard()
    board.hold("shelf")
    board.hold("shelf")
    board.release("shelf")
    assert board.held("shelf")
    board.release("shelf")
    assert not board.held("shelf")


def test_timeout_returns_false() -> None:
    board = PositionBoard()
    board.hold("shelf")
    assert not board.wait("shelf", "library", 1, 0.1, CountingPoll())
    assert not board.wait("shelf", "library", 1, 0.1)


# -- wait_async: the same board awaited on an event loop, woken from other threads ----------------


class AsyncCountingPoll(CountingPoll):
    """``CountingPoll`` for ``wait_async``: a coroutine function."""

    async def __call__(self) -> int:  # type: ignore[override]
        self.calls += 1
        return self.position


def publish_later(board: PositionBoard, position: int, delay: float, source: str = "library"):
    """Publish from another thread (as a runner or the position listener does)."""
    timer = threading.Timer(delay, board.publish, ("shelf", source, position))
    timer.start()
    return timer


async def test_async_a_known_position_returns_at_once_without_polling() -> None:
    board = PositionBoard()
    board.publish("shelf", "library", 7)
    poll = AsyncCountingPoll()
    assert await board.wait_async("shelf", "library", 7, 1.0, poll)
    assert poll.calls == 0


async def test_async_publish_from_a_thread_wakes_only_the_waiters_it_satisfies() -> None:
    board = PositionBoard()
    board.hold("shelf")
    low = asyncio.ensure_future(board.wait_async("shelf", "library", 5, 5.0))
    high = asyncio.ensure_future(board.wait_async("shelf", "library", 9, 5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    publish_later(board, 6, 0.05).join()
    assert await asyncio.wait_for(low, 2.0) is True
    assert time.monotonic() - started < 1.0  # woken, not found by a safety poll
    await asyncio.sleep(0.1)
    assert not high.done()
    publish_later(board, 9, 0.0).join()
    assert await asyncio.wait_for(high, 2.0) is True
    assert not board._waiters  # every waiter took itself off the board


async def test_async_no_database_poll_while_a_local_runner_holds_the_projection() -> None:
    board = PositionBoard()
    board.hold("shelf")
    poll = AsyncCountingPoll()
    waiter = asyncio.ensure_future(board.wait_async("shelf", "library", 3, 5.0, poll))
    await asyncio.sleep(0.4)  # 8 polls without a local runner
    publish_later(board, 3, 0.0)
    assert await asyncio.wait_for(waiter, 2.0) is True
    assert poll.calls == 0


async def test_async_without_a_local_runner_the_waiter_polls_the_database() -> None:
    board = PositionBoard()
    poll = AsyncCountingPoll()
    waiter = asyncio.ensure_future(board.wait_async("shelf", "library", 3, 5.0, poll))
    await asyncio.sleep(0.2)
    assert not waiter.done() and poll.calls >= 1
    poll.position = 4  # another process's runner got there
    assert await asyncio.wait_for(waiter, 2.0) is True
    assert board.known("shelf", "library") == 4


async def test_async_a_runner_letting_go_sends_its_waiters_back_to_polling() -> None:
    board = PositionBoard()
    board.hold("shelf")
    poll = AsyncCountingPoll()
    waiter = asyncio.ensure_future(board.wait_async("shelf", "library", 3, 5.0, poll))
    await asyncio.sleep(0.2)
    assert poll.calls == 0
    poll.position = 3
    threading.Thread(target=board.release, args=("shelf",)).start()
    assert await asyncio.wait_for(waiter, 0.8) is True  # before the 1 s safety poll
    assert poll.calls >= 1


async def test_async_timeout_returns_false_and_leaves_no_waiter() -> None:
    board = PositionBoard()
    board.hold("shelf")
    started = time.monotonic()
    assert not await board.wait_async("shelf", "library", 1, 0.1, AsyncCountingPoll())
    assert not await board.wait_async("shelf", "library", 1, 0.1)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert not board._waiters


async def test_async_a_cancelled_waiter_leaves_the_board() -> None:
    board = PositionBoard()
    board.hold("shelf")
    waiter = asyncio.ensure_future(board.wait_async("shelf", "library", 3, 5.0))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert not board._waiters
    board.publish("shelf", "library", 3)  # nobody to wake: no error
