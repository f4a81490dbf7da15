"""Inbox items to one socket: live ones in order, gaps and resumes read from the inbox.

Order, gaps and duplicates (per socket)
    A session knows the last ``seq`` it queued (``last_seq``). A live item with
    ``seq <= last_seq`` is dropped (duplicate); ``last_seq + 1`` is queued; a higher ``seq``
    means something was missed (NATS is at-most-once between the stream and this node) and
    starts a replay from the inbox table, which is the source of truth.

Resume / replay
    ``resume{after}`` (or ``?after=`` on connect; without either, the socket starts at the
    reader's head given in ``hello``) sets ``last_seq = after`` and reads ``items(after)`` from
    the inbox in pages of ``replay_page``. Live items arriving meanwhile are held (by seq) and
    released after the database pages, skipping those already sent, then the socket is live.
    The replay waits for queue space (a slow reader slows it down; stuck for ``send_timeout``
    seconds, it is a slow consumer).

An ``after`` beyond the reader's inbox head
    The client saw seqs this inbox does not have (a rebuilt inbox renumbers). On connect
    (``?after=``) and on a ``resume`` frame alike, the socket is told with an ``error`` frame
    ``after_beyond_head`` (``after_beyond_head()``) and continues from the head: it stays open,
    streams the live items that follow, and the client may resume again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from realtime.gateway.config import GatewayConfig, GatewayStats
from realtime.gateway.ports import InboxFeed
from realtime.gateway.session import Session
from realtime.protocol import CloseCode, Error, encode_text
from realtime.relay import event_frame
from realtime.threads import in_thread

log = logging.getLogger(__name__)


def after_beyond_head(after: int, head: int, frame: str | None = None) -> str:
    """The ``error`` frame (text) for an ``after`` above the reader's inbox ``head``;
    ``frame``: the client frame that carried it (``resume``; none for the connect URL)."""
    return encode_text(
        Error(
            code="after_beyond_head",
            message=f"after={after} is beyond your inbox head {head}: "
            "resynchronise (GET /v1/inbox?after=0) and continue from head.",
            frame=frame,
        )
    )


class Replay:
    """Feeds sessions their inbox items (see the module doc). ``config()``: the gateway's
    current ``GatewayConfig``."""

    def __init__(
        self, inbox: InboxFeed, stats: GatewayStats, config: Callable[[], GatewayConfig]
    ) -> None:
        self.inbox = inbox
        self.stats = stats
        self.config = config

    def offer(self, session: Session, seq: int, text: str) -> None:
        """A live inbox item for ``session`` (see "Order, gaps and duplicates")."""
        if session.closed:
            return
        if seq <= session.last_seq:
            self.stats.duplicates_dropped += 1
            return
        if session.replaying:
            if len(session.held) >= self.config().max_held:
                session.held.clear()
                session.held_overflow = True
            session.held[seq] = text
            return
        if seq == session.last_seq + 1:
            if session.push(text):
                session.last_seq = seq
                self.stats.events_live += 1
            return
        self.stats.gap_replays += 1
        session.held[seq] = text
        self.start(session, session.last_seq)

    def offer_withheld(self, session: Session, seq: int) -> None:
        """A live inbox item for ``session`` published without its personal fields
        (``realtime.relay.WITHHELD``): it is committed in the inbox before it is published,
        so the socket reads it from there, in order, like a gap."""
        if session.closed or seq <= session.last_seq:
            return
        if session.replaying:
            session.held_overflow = True  # one more read of the inbox before going live
            return
        self.start(session, session.last_seq)

    def start(self, session: Session, after: int, *, resume: bool = False) -> None:
        """Replay ``session`` from ``after`` (a gap, a reconnect to NATS, a connect with
        ``?after=``), replacing a replay in progress. ``resume``: ``after`` comes from a
        ``resume`` frame; one beyond the inbox head is reported (module doc)."""
        if session.closed:
            return
        if session.replay_task is not None and not session.replay_task.done():
            session.replay_task.cancel()  # suspended at an await: it queues nothing more
        session.replaying = True
        session.last_seq = after
        session.replay_task = asyncio.create_task(
            self._run(session, check_head=resume), name=f"ws-replay-{session.id}"
        )

    async def _run(self, session: Session, *, check_head: bool) -> None:
        me = asyncio.current_task()
        page = self.config().replay_page
        idle_rounds = 0
        try:
            while not session.closed:
                items, head = await in_thread(
                    self.inbox.items, session.reader.id, session.last_seq, page
                )
                if check_head:
                    check_head = False
                    if head < session.last_seq:
                        await session.put_waiting(
                            after_beyond_head(session.last_seq, head, "resume"),
                            self.config().send_timeout,
                        )
                        session.last_seq = head
                        continue  # read again from the head: what was committed meanwhile
                for item in items:
                    seq = int(item["seq"])
                    if seq <= session.last_seq:
                        continue
                    session.held.pop(seq, None)
                    await session.put_waiting(
                        encode_text(event_frame(item)), self.config().send_timeout
                    )
                    session.last_seq = seq
                    self.stats.events_replayed += 1
                if len(items) >= page:
                    continue
                # the database has nothing newer: release the held live items in order
                while (text := session.held.pop(session.last_seq + 1, None)) is not None:
                    await session.put_waiting(text, self.config().send_timeout)
                    session.last_seq += 1
                    self.stats.events_live += 1
                for seq in [s for s in session.held if s <= session.last_seq]:
                    del session.held[seq]
                if not session.held and not session.held_overflow:
                    break  # caught up: from here on, live (no await since the check)
                session.held_overflow = False
                idle_rounds = 0 if items else idle_rounds + 1
                if idle_rounds > 50:  # held items the database does not show: give up on them
                    log.warning("gateway: %r held items beyond the inbox head; dropped", session)
                    session.held.clear()
                    break
                if not items:
                    await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway: replay of %r failed", session)
            session.close(CloseCode.INTERNAL_ERROR, "replay failed")
        finally:
            if session.replay_task is me:
                session.replaying = False
                session.replay_task = None


__all__ = ["Replay", "after_beyond_head"]
