"""The subscribe-message notifier: follows the inbox and sends one WeChat subscribe message
(``subscribeMessage.send``) per item to a reader who is away.

How it runs (an asyncio task on the app's event loop; the database work in worker threads)

1. **Follow** (``Outbox.follow``): the inbox items of the configured kinds made after the
   notifier's own tracking position (``notify_tracking``, per log) become rows of
   ``subscribe_notifications`` keyed by the item's origin ``(source, position, reader_id)``,
   inserted in the same transaction that moves the position. A crash before the commit
   repeats the page; after it, the page is done: every item is recorded exactly once.
2. **Send** each pending item whose time has come:

   - its reader has a live socket on any node (``is_online``: the cluster-wide reader
     presence, ``realtime.reader_presence``) → ``skipped`` / ``online`` (the socket
     delivered the item);
   - no openId (never logged in with WeChat here, or forgotten) → ``skipped`` /
     ``no_openid``;
   - ``Outbox.claim`` uses one grant of the item's template and marks the item ``sending``,
     in one transaction; no grant left → ``skipped`` / ``no_grant``;
   - one ``subscribeMessage.send`` (``send(body)``);
   - the outcome: ``sent``; errcode 43101 (the reader has no grant left at WeChat) →
     ``refused`` and the reader's grants of that template set to 0; a retryable error
     (busy, network, timeout, quota) → ``pending`` again after ``backoff × 2^(attempt-1)``
     seconds (at most an hour; a quota's ``retry_after`` if longer) with the grant given
     back, until ``max_attempts`` → ``failed``; any other error (a bad template id, page or
     value: retrying cannot help) → ``failed`` at once.

   An item is never sent twice: it is claimed (``sending``) in a committed transaction
   before the call, and an item found ``sending`` after ``2 × call timeout`` (its node died
   during the call) becomes ``failed``, not sent again — WeChat may have delivered it.
3. Rows done (sent, refused, skipped, failed) are deleted ``retention`` seconds later
   (``LIUDONG_NOTIFY_RETENTION``, 30 days), checked hourly: they hold nicknames and titles.
4. Forgotten readers: ``Reader.Forgotten`` (``FORGOTTEN_TOPIC``) on the library log deletes
   the reader's grants and unsent items in the follow step's transaction.

Several nodes may run a notifier: the tracking row is locked by the follow step and claims
use ``FOR UPDATE SKIP LOCKED``, so they share the work without sending an item twice.

Source (the request, errcodes 43101 / 47003 / 40037 / 41030):
https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prometheus_client import Counter

from api.adapters.subscribe.store import Claim, Outbox
from api.adapters.wechat import WeChatError, WeChatQuotaExceeded
from realtime.tasks import stop_task

__all__ = ["NO_GRANT_ERRCODE", "OUTCOMES", "Notifier", "NotifierStats"]

log = logging.getLogger(__name__)

NO_GRANT_ERRCODE = 43101
MAX_BACKOFF = 3600.0
PURGE_INTERVAL = 3600.0
"""Seconds between deletions of the rows older than ``retention``."""

Send = Callable[[dict[str, Any]], Awaitable[Any]]

OUTCOMES = Counter(
    "liudong_subscribe_messages",
    "Inbox items the subscribe-message notifier handled on this node, by outcome: sent, "
    "refused (43101), retried, failed, skipped_online, skipped_no_openid, skipped_no_grant.",
    ["outcome"],
)


@dataclass
class NotifierStats:
    recorded: int = 0
    sent: int = 0
    refused: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    last_error: str | None = None


class Notifier:
    """See the module docstring.

    ``send(body)``: one ``subscribeMessage.send`` with ``{"touser", "template_id", "page",
    "data", "miniprogram_state", "lang"}``, raising a ``WeChatError`` (or ``TimeoutError``);
    ``is_online(reader_id)``: whether the reader has a live socket on any node;
    ``open_id(reader_id)``: blocking (called in a thread), ``None`` when unknown.
    ``interval``: seconds between looks when nothing wakes it (``wake()``, thread-safe)."""

    def __init__(
        self,
        outbox: Outbox,
        send: Send,
        is_online: Callable[[UUID], bool],
        open_id: Callable[[UUID], str | None],
        *,
        sources: Sequence[str] = ("library", "chat"),
        max_attempts: int = 5,
        backoff: float = 30.0,
        interval: float = 1.0,
        call_timeout: float = 30.0,
        retention: float = 30 * 86400.0,
    ) -> None:
        self.outbox = outbox
        self.send = send
        self.is_online = is_online
        self.open_id = open_id
        self.sources = tuple(sources)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.interval = interval
        self.call_timeout = call_timeout
        self.retention = retention
        self._purged_at: float | None = None
        self.stats = NotifierStats()
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop it runs on (set by ``start``)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="subscribe-notifier")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def wake(self, *_: Any) -> None:
        """Look at once (new inbox items were committed); callable from any thread, and
        usable as an inbox item listener (``(source, first, last, items)``)."""
        loop = self.loop
        if self._task is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down…: try again later
                self.stats.last_error = repr(exc)
                log.warning("notifier: %r; retrying", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):  # not wait_for: see stop_task
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self) -> None:
        """One round: follow every source to the inbox's position, then send what is due."""
        await asyncio.to_thread(self.outbox.interrupted, 2 * self.call_timeout + 5)
        if self._purged_at is None or time.monotonic() - self._purged_at > PURGE_INTERVAL:
            self._purged_at = time.monotonic()
            await asyncio.to_thread(self.outbox.purge, self.retention)
        for source in self.sources:
            more = True
            while more:
                recorded, more = await asyncio.to_thread(self.outbox.follow, source)
                self.stats.recorded += recorded
        for _ in range(10):  # then look at the inbox again
            due = await asyncio.to_thread(self.outbox.due, 100)
            for row in due:
                await self._deliver((row["source"], int(row["position"]), row["reader_id"]))
            if len(due) < 100:
                break

    async def _deliver(self, key: tuple[str, int, UUID]) -> None:
        reader_id = key[2]
        if self.is_online(reader_id):
            await asyncio.to_thread(self.outbox.skip, key, "online")
            self.stats.skipped += 1
            OUTCOMES.labels("skipped_online").inc()
            return
        open_id = await asyncio.to_thread(self.open_id, reader_id)
        if not open_id:
            await asyncio.to_thread(self.outbox.skip, key, "no_openid")
            self.stats.skipped += 1
            OUTCOMES.labels("skipped_no_openid").inc()
            return
        claim = await asyncio.to_thread(self.outbox.claim, key)
        if claim is None:  # no grant left (or another node took it)
            self.stats.skipped += 1
            OUTCOMES.labels("skipped_no_grant").inc()
            return
        templates = self.outbox.templates
        body: dict[str, Any] = {
            "touser": open_id,
            "template_id": claim.template_id,
            "data": claim.data,
            "miniprogram_state": templates.miniprogram_state,
            "lang": templates.lang,
        }
        if claim.page:
            body["page"] = claim.page
        try:
            async with asyncio.timeout(self.call_timeout):
                await self.send(body)
        except (WeChatError, TimeoutError) as exc:
            await self._failed(claim, exc)
        except Exception as exc:  # noqa: BLE001 - a bug or an unexpected answer: give up on it
            log.exception("notifier: sending %s failed", claim.key)
            await asyncio.to_thread(self.outbox.failed, claim, repr(exc))
            self.stats.failed += 1
            OUTCOMES.labels("failed").inc()
        else:
            await asyncio.to_thread(self.outbox.sent, claim)
            self.stats.sent += 1
            OUTCOMES.labels("sent").inc()

    async def _failed(self, claim: Claim, exc: Exception) -> None:
        error = str(exc) or type(exc).__name__
        self.stats.last_error = error
        errcode = getattr(exc, "errcode", None)
        if errcode == NO_GRANT_ERRCODE:
            await asyncio.to_thread(self.outbox.refused, claim, error)
            self.stats.refused += 1
            OUTCOMES.labels("refused").inc()
            return
        retryable = isinstance(exc, TimeoutError) or getattr(exc, "retryable", False)
        if retryable and claim.attempts < self.max_attempts:
            delay = min(MAX_BACKOFF, self.backoff * 2 ** (claim.attempts - 1))
            if isinstance(exc, WeChatQuotaExceeded):
                delay = max(delay, float(exc.retry_after))
            log.info("notifier: %s not sent (%s); again in %.0f s", claim.key, error, delay)
            await asyncio.to_thread(self.outbox.retry, claim, error, delay)
            self.stats.retried += 1
            OUTCOMES.labels("retried").inc()
            return
        log.warning(
            "notifier: %s given up after %d attempt(s): %s", claim.key, claim.attempts, error
        )
        await asyncio.to_thread(self.outbox.failed, claim, error)
        self.stats.failed += 1
        OUTCOMES.labels("failed").inc()
