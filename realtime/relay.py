"""Inbox → NATS JetStream relay: every committed inbox item is published exactly once *in
effect* to ``liudong.inbox.<reader_id>`` (stream ``LIUDONG_INBOX``).

How nothing is lost between the database commit and NATS
    The inbox projection calls ``Relay.on_page(source, first, last, items)`` (in its own
    thread) after each committed page, with the items that page wrote when it knows them
    in memory (``InboxProjection.item_listeners``); otherwise (``items`` is ``None``) the
    relay reads them (``InboxPages.items_for_positions``). It hands them to its asyncio
    task with ``asyncio.run_coroutine_threadsafe``. The task publishes them to JetStream
    with the header ``Nats-Msg-Id: <reader_id>:<seq>`` and waits for every
    acknowledgement; only then does it advance ``relay_tracking(source, position)``
    (migration ``0006_relay``). On start, on
    NATS reconnect, after a failure, whenever a page does not follow the last relayed
    position, and when this node's inbox runner becomes the active one (looked at every
    ``interval`` seconds, in memory), it re-publishes from ``relay_tracking`` up to the
    inbox projection's own position (an idle relay sends no statement). Re-publishing is
    harmless: JetStream drops a message whose ``Nats-Msg-Id`` it has seen within its
    duplicate window (2 minutes), and the gateway drops any ``seq`` a socket has already had.

    So a crash after the commit and before the publish costs a delay, never an item; and the
    inbox table, not NATS, is what a client's resume reads.

Local delivery
    ``local(reader_id, seq, frame)`` (this node's ``Gateway.offer_local``) hears of
    each item a page handed over in memory the moment that page reaches the event loop,
    before it queues behind a busy relay and without the trip through nats-server: the
    sockets of this node get it at once, and the same item coming back from NATS is dropped
    as a duplicate (its ``seq``). ``frame()`` makes ``(event frame text, withheld)`` only
    for a reader with a socket here (most items have none). Other nodes, and pages read back
    from the database, go through NATS only.

Which node relays
    Every node runs a ``Relay``; pages only arrive on the node whose inbox runner holds the
    projection's advisory lock, and the periodic catch-up only runs where ``is_active()``
    (that runner is ``running``). A takeover is covered by the catch-up from
    ``relay_tracking``.

Errors: a failed publish (NATS down, timeout) is logged, retried with back-off from the
database, and never advances the tracking position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, Protocol
from uuid import UUID

from realtime.protocol import Event, encode
from realtime.tasks import stop_task
from realtime.threads import in_thread

log = logging.getLogger(__name__)

STREAM = "LIUDONG_INBOX"
SUBJECT_PREFIX = "liudong.inbox."
MSG_ID = "Nats-Msg-Id"
WITHHELD = "Liudong-Withheld"
"""Header of an inbox message published without its personal fields (``PERSONAL_ITEM_FIELDS``):
the gateway reads that item from the inbox instead (``docs/SECURITY.md``)."""
PERSONAL_ITEM_FIELDS: dict[str, tuple[str, ...]] = {"loan.requested": ("contact", "note")}
"""Fields of inbox items that never go to JetStream (its file store keeps messages for
``max_age``): the borrower's contact and note, for the lender's eyes only."""


def inbox_subject(reader_id: UUID | str) -> str:
    return f"{SUBJECT_PREFIX}{reader_id}"


def msg_id(reader_id: UUID | str, seq: int) -> str:
    """The JetStream de-duplication id of an inbox item: ``<reader_id>:<seq>``."""
    return f"{reader_id}:{seq}"


def parse_msg_id(value: str) -> tuple[str, int]:
    """``(reader_id, seq)`` of a ``Nats-Msg-Id``. Raises ``ValueError``."""
    reader, _, seq = value.rpartition(":")
    return reader, int(seq)


def withheld(item: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``item`` without its personal fields (``PERSONAL_ITEM_FIELDS``), and whether any
    was there to withhold."""
    fields = PERSONAL_ITEM_FIELDS.get(str(item.get("kind")))
    data = item.get("data") or {}
    if not fields or not any(name in data for name in fields):
        return item, False
    return {**item, "data": {k: v for k, v in data.items() if k not in fields}}, True


def event_text(item: dict[str, Any]) -> str:
    """The ``event`` frame of an inbox item as the text a socket is sent (what the gateway
    makes of the published message's data)."""
    return encode(event_frame(item)).decode()


def local_frame(item: dict[str, Any]) -> tuple[str, bool]:
    """``(event frame text, withheld)`` of an inbox item for this node's sockets: the text
    is of the item as published (without its personal fields when ``withheld``)."""
    public, personal = withheld(item)
    return event_text(public), personal


def event_frame(item: dict[str, Any]) -> Event:
    """The ``event`` frame of an inbox item ``{"seq", "kind", "at", "data", ...}``."""
    at = item["at"]
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return Event(seq=int(item["seq"]), kind=str(item["kind"]), at=at, data=item.get("data") or {})


reader_key = lru_cache(maxsize=1 << 16)(str)
"""``str(reader_id)``, remembered: the relay names each item's reader (NATS subject, message
id, local delivery), and ``UUID.__str__`` (Python code) was 2 % of the server's GIL time
under the ``commands`` load. A few MB at most (65,536 ids)."""


class InboxPages(Protocol):
    """What the relay reads from the inbox read model."""

    def items_for_positions(self, source: str, first: int, last: int) -> list[dict[str, Any]]:
        """Items ``{"reader_id", "seq", "kind", "at", "data"}`` made by the events of
        ``source`` at log positions ``first..last`` (inclusive), in position then seq order."""
        ...

    def position(self, source: str) -> int:
        """How far the inbox projection has committed ``source``."""
        ...


class RelayTracking:
    """``relay_tracking`` rows, through a psycopg ``ConnectionPool``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def load(self, source: str) -> int:
        """The relayed position of ``source`` (0 when it has none)."""
        return self.find(source) or 0

    def find(self, source: str) -> int | None:
        """The relayed position of ``source``, or ``None`` when the relay never ran on it."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT position FROM relay_tracking WHERE source = %s", (source,)
            ).fetchone()
        if row is None:
            return None
        return int(row["position"] if isinstance(row, dict) else row[0])

    def save(self, source: str, position: int) -> None:
        """Advance (never move back) the relayed position of ``source``."""
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO relay_tracking (source, position) VALUES (%s, %s) "
                "ON CONFLICT (source) DO UPDATE SET "
                "position = GREATEST(relay_tracking.position, excluded.position), "
                "updated_at = now()",
                (source, position),
            )


@dataclass(frozen=True)
class _Page:
    source: str
    first: int
    last: int
    items: Sequence[dict[str, Any]] | None  # None: read them from the database


_CATCH_UP = object()


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    pages: int = 0
    catch_ups: int = 0
    failures: int = 0
    last_error: str | None = None
    positions: dict[str, int] | None = None


class Relay:
    """See the module docstring. ``nc``: a connected nats-py client."""

    def __init__(
        self,
        nc: Any,
        inbox: InboxPages,
        tracking: RelayTracking,
        sources: Sequence[str],
        *,
        is_active: Callable[[], bool] = lambda: True,
        interval: float = 5.0,
        chunk: int = 1000,
        publish_timeout: float = 10.0,
        max_age: float = 3600.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.inbox = inbox
        self.tracking = tracking
        self.sources = tuple(sources)
        self.is_active = is_active
        self.interval = interval
        self.chunk = chunk
        self.publish_timeout = publish_timeout
        self.max_age = max_age
        self.stats = RelayStats(positions={})
        self._positions: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=10_000)
        self._task: asyncio.Task[None] | None = None
        self._overflowed = False
        self._was_active = False  # is_active() when last looked at
        self.local: Callable[[str, int, Callable[[], tuple[str, bool]]], None] | None = None
        """``(reader_id, seq, frame)`` of each item handed over in memory, on the event loop;
        ``frame()`` makes its ``(event frame text, withheld)`` (see "Local delivery")."""

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Create (or update) the stream, load the positions, start the task."""
        await ensure_stream(self.js, max_age=self.max_age)
        for source in self.sources:
            found = await in_thread(self.tracking.find, source)
            if found is None:
                # First run on this database: what the inbox already holds predates the relay
                # (sockets read it from the inbox on resume), so start from the inbox's
                # position instead of publishing its whole history.
                found = await in_thread(self.inbox.position, source)
                await in_thread(self.tracking.save, source, found)
            self._positions[source] = found
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="inbox-relay")
        self.request_catch_up()

    async def stop(self) -> None:
        self._loop = None
        task, self._task = self._task, None
        await stop_task(task)

    def request_catch_up(self) -> None:
        """Re-publish from ``relay_tracking`` soon (call on the event loop)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CATCH_UP)

    # -- the projection's listener (its thread) -------------------------------------------------

    def on_page(
        self, source: str, first: int, last: int, items: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """``InboxProjection`` listener: page ``first..last`` of ``source`` committed.

        ``items``: every item that page made (``InboxPages.items_for_positions``' shape and
        order), as the projection committed them; ``None``: read them from the database."""
        loop = self._loop
        if loop is None or loop.is_closed() or source not in self.sources:
            return
        if items is None:
            try:
                items = self.inbox.items_for_positions(source, first, last)
            except Exception as exc:  # the task re-reads them
                log.warning(
                    "relay: could not read inbox page %s %s..%s: %s", source, first, last, exc
                )
                items = None
        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            asyncio.run_coroutine_threadsafe(self._offer(_Page(source, first, last, items)), loop)

    async def _offer(self, page: _Page) -> None:
        local = self.local
        if local is not None and page.items:
            try:
                for item in page.items:
                    local(
                        reader_key(item["reader_id"]), int(item["seq"]), partial(local_frame, item)
                    )
            except Exception:  # the NATS copy still comes
                log.exception("relay: local delivery of %s..%s failed", page.first, page.last)
        try:
            self._queue.put_nowait(page)
        except asyncio.QueueFull:  # NATS down for long: the catch-up will read them back
            self._overflowed = True

    # -- the task -----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with asyncio.timeout(self.interval):  # not wait_for: see stop_task
                    job = await self._queue.get()
            except TimeoutError:
                if not self._due():
                    continue
                job = _CATCH_UP
            try:
                if job is _CATCH_UP or self._overflowed:
                    self._overflowed = False
                    if self.is_active():
                        await self._catch_up()
                    if job is _CATCH_UP:
                        continue
                pages, catch_up = self._drain(job)
                # pages come from this node's active runner, and a page after a gap reads
                # the gap from the database: no takeover catch-up needed any more
                self._was_active = True
                await self._pages(pages)
                if catch_up and self.is_active():
                    await self._catch_up()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("relay: %s; re-publishing from the database in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._overflowed = True  # drop nothing: the next round reads the database

    def _due(self) -> bool:
        """A periodic look (no statement): re-publish from the database only after a
        failure or an overflow, or when this node's inbox runner has just become active
        (a takeover: the previous holder may have left items unrelayed)."""
        active = self.is_active()
        became_active, self._was_active = active and not self._was_active, active
        return self._overflowed or became_active

    def _drain(self, first: _Page) -> tuple[list[_Page], bool]:
        """``first`` and the pages queued behind it (up to a catch-up request: True)."""
        pages = [first]
        while len(pages) < self.chunk:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if job is _CATCH_UP:
                return pages, True
            pages.append(job)
        return pages, False

    async def _pages(self, pages: Sequence[_Page]) -> None:
        """Publish the items of the consecutive ``pages`` (in order) together, wait for
        every acknowledgement, then advance the tracking once per source: a busy inbox's
        pages do not each wait for the previous one's acks and tracking write."""
        items: list[dict[str, Any]] = []
        reached: dict[str, int] = {}

        async def flush() -> None:
            await self._publish(items)
            for source, position in reached.items():
                await self._advance(source, position)
            items.clear()
            reached.clear()

        for page in pages:
            position = reached.get(page.source) or self._positions.get(page.source, 0)
            if page.last <= position:
                continue
            self.stats.pages += 1
            if page.items is None or page.first > position + 1:
                # a gap (another node relayed, or failed to, before us; or ids with holes)
                await flush()
                await self._catch_up_source(page.source, upto=page.last)
                continue
            items.extend(page.items)
            reached[page.source] = page.last
        await flush()

    async def _catch_up(self) -> None:
        self._was_active = True  # read from the database just now: nothing left behind
        self.stats.catch_ups += 1
        for source in self.sources:
            await self._catch_up_source(source)

    async def _catch_up_source(self, source: str, upto: int | None = None) -> None:
        stored = await in_thread(self.tracking.load, source)
        position = max(self._positions.get(source, 0), stored)
        self._positions[source] = position
        target = upto if upto is not None else await in_thread(self.inbox.position, source)
        while position < target:
            end = min(position + self.chunk, target)
            items = await in_thread(self.inbox.items_for_positions, source, position + 1, end)
            await self._publish(items)
            await self._advance(source, end)
            position = end

    async def _advance(self, source: str, position: int) -> None:
        self._positions[source] = max(self._positions.get(source, 0), position)
        assert self.stats.positions is not None
        self.stats.positions[source] = self._positions[source]
        await in_thread(self.tracking.save, source, position)

    async def _publish(self, items: Sequence[dict[str, Any]]) -> None:
        """Publish ``items`` in order and wait for every JetStream acknowledgement."""
        if not items:
            return
        futures: list[asyncio.Future[Any]] = []
        try:
            for item in items:
                reader = reader_key(item["reader_id"])
                seq = int(item["seq"])
                public, personal = withheld(item)
                headers = {MSG_ID: msg_id(reader, seq)}
                if personal:
                    headers[WITHHELD] = "1"
                futures.append(
                    await self.js.publish_async(
                        inbox_subject(reader), encode(event_frame(public)), headers=headers
                    )
                )
            async with asyncio.timeout(self.publish_timeout):
                acks = await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        duplicates = sum(1 for ack in acks if getattr(ack, "duplicate", False))
        self.stats.duplicates += duplicates
        self.stats.published += len(acks) - duplicates


async def erase_reader_messages(js: Any, reader_id: Any, readers: Iterable[Any]) -> int:
    """Erasure (``DELETE /v1/me``): on the inbox subjects of ``readers`` (the forgotten
    reader and those they dealt with), delete every message of the stream that is the
    forgotten reader's or shows their id (their name, their messages' text). JetStream's
    ``STREAM.MSG.DELETE`` without ``no_erase`` overwrites the message in the file store.
    Returns how many were erased; raises what the JetStream API raises."""
    from nats.js.errors import NotFoundError

    needle = str(reader_id).encode()
    erased = 0
    for reader in dict.fromkeys(str(r) for r in readers):
        subject = inbox_subject(reader)
        seq = 1
        while True:
            try:
                msg = await js.get_msg(STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            if reader == str(reader_id) or needle in (msg.data or b""):
                await js.delete_msg(STREAM, msg.seq)
                erased += 1
            seq = int(msg.seq) + 1
    return erased


async def ensure_stream(js: Any, *, max_age: float = 3600.0) -> None:
    """Create the ``LIUDONG_INBOX`` stream, or update it to this configuration.

    File storage, subjects ``liudong.inbox.*``, messages kept ``max_age`` seconds (the inbox
    table is the history; the stream is the fan-out), duplicate window 2 minutes."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    config = StreamConfig(
        name=STREAM,
        subjects=[SUBJECT_PREFIX + "*"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_bytes=1 << 30,
        duplicate_window=120.0,
    )
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:  # another node created it meanwhile
            pass
    with contextlib.suppress(BadRequestError):
        await js.update_stream(config)


__all__ = [
    "MSG_ID",
    "PERSONAL_ITEM_FIELDS",
    "WITHHELD",
    "withheld",
    "STREAM",
    "SUBJECT_PREFIX",
    "InboxPages",
    "Relay",
    "RelayTracking",
    "ensure_stream",
    "erase_reader_messages",
    "event_frame",
    "event_text",
    "inbox_subject",
    "msg_id",
    "parse_msg_id",
]
