"""The node's heartbeat: one timer that pings the sockets and closes the silent ones.

Heartbeat
    The server sends ``ping`` every ``heartbeat`` seconds (25); any frame from the client
    counts as a sign of life, and a socket silent for 1.5 intervals (it missed two pings) is
    closed with 4012. Clients answer ``ping`` with ``pong`` and may send ``ping`` (answered
    with ``pong``). One timer per node sweeps the sockets whose ping is due (at most
    ``heartbeat / 10`` seconds late), instead of a task and a timer per socket. (uvicorn's
    own protocol-level pings are off: ``liudong serve`` runs it with ``ws_ping_interval=None``.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from realtime.gateway.ports import Shared
from realtime.gateway.session import Session
from realtime.protocol import CloseCode, Ping, encode_text

EXPIRY_GRAIN = 0.05
"""Seconds an expired login session's sockets may stay open past its expiry."""


class Heartbeat:
    """The heartbeat sweep of one node. ``sessions()``: the node's sessions now;
    ``interval()``: the current ``GatewayConfig.heartbeat``."""

    def __init__(
        self, sessions: Callable[[], list[Session]], interval: Callable[[], float]
    ) -> None:
        self.sessions = sessions
        self.interval = interval
        self.timer: asyncio.TimerHandle | None = None  # the node's heartbeat timer
        self.due = 0.0  # loop time the timer fires at
        self.stopped = False
        self.ping = Shared(encode_text(Ping()))  # one frame for every socket

    def add(self, session: Session) -> None:
        """A new socket: its first ping is due one interval from now (or the sweep comes
        when its login session expires, if sooner)."""
        session.next_ping = asyncio.get_running_loop().time() + self.interval()
        self.schedule(session.next_ping)
        if session.expires_at is not None:
            self.schedule(self._expiry(session), grain=EXPIRY_GRAIN)

    @staticmethod
    def _expiry(session: Session) -> float:
        """The loop time the session's login session expires (inf: never)."""
        if session.expires_at is None:
            return float("inf")
        return asyncio.get_running_loop().time() + (session.expires_at - time.time())

    def schedule(self, when: float, grain: float | None = None) -> None:
        """Make the node's heartbeat timer fire by ``when`` (loop time) plus the grain
        (a tenth of the interval for pings, ``EXPIRY_GRAIN`` for an expiry)."""
        if self.stopped:
            return
        if grain is None:
            grain = max(0.01, self.interval() / 10)
        if self.timer is not None:
            if self.due <= when + grain:
                return
            self.timer.cancel()
        self.due = when + grain
        self.timer = asyncio.get_running_loop().call_at(self.due, self._sweep)

    def stop(self) -> None:
        """Ping nobody any more (the node is shutting down)."""
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _sweep(self) -> None:
        """Every socket whose ping is due gets one, or is closed with 4012 if nothing came
        from it for 1.5 intervals; a socket whose login session expired gets ``error``
        ``session_ended`` and 4401 (the sweep is scheduled for the earliest expiry too)."""
        self.timer = None
        if self.stopped:
            return
        now = asyncio.get_running_loop().time()
        interval = self.interval()
        silent_since = time.monotonic() - 1.5 * interval
        soonest = float("inf")
        expiring = float("inf")
        wall = time.time()
        for session in self.sessions():
            if session.closed:
                continue
            if session.expires_at is not None:
                if session.expires_at <= wall:
                    session.end_session()  # the login session expired: error + 4401
                    continue
                expiring = min(expiring, now + (session.expires_at - wall))
            if session.next_ping <= now:
                if session.last_received < silent_since:
                    session.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                    continue
                session.push(self.ping)
                session.next_ping = now + interval
            soonest = min(soonest, session.next_ping)
        if soonest != float("inf"):
            self.schedule(soonest)
        if expiring != float("inf"):
            self.schedule(expiring, grain=EXPIRY_GRAIN)


__all__ = ["Heartbeat"]
