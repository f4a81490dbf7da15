"""Wires the realtime module (``realtime/``) into the app: one NATS connection per process,
the inbox relay, the WebSocket gateway, room presence and reader presence (online / offline,
``realtime.reader_presence``; a reader's peers come from ``InboxQueries.conversations``).

``realtime_lifespan`` runs after the container's lifespan (``api.http.app``): it connects to
``settings.nats_url`` (or the container's / an embedded nats-server), starts the pieces,
registers the relay as an item listener of the container's ``InboxProjection`` (it hands
the relay each committed page's items in memory), adds a ``nats``
readiness check, and puts the ``RealtimeNode`` in ``container.extras["realtime"]`` (and
``app.state.realtime``). With subscribe-message templates configured it also starts the
notifier (``api.adapters.subscribe.Notifier``): it asks this node's reader presence whether
a reader is online, and is woken by each committed inbox page. At shutdown it closes every
socket with 1001, tells the other nodes this one has left its rooms and has no reader
online, stops the relay (and the notifier) and drains the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import nats
from litestar import Litestar

from api.adapters.media.attach import AttachingChat
from api.adapters.moderation import ModeratedChat
from api.adapters.subscribe import Notifier
from api.bootstrap.container import Container
from api.bootstrap.embedded import EmbeddedNats
from projections.board import tracked_position
from projections.rooms import RoomQueries
from realtime.gateway import Gateway, GatewayConfig
from realtime.gateway.gateway import REPLACED_SUBJECT, REVOKED_SUBJECT
from realtime.presence import Presence
from realtime.reader_presence import ReaderPresence
from realtime.relay import Relay, RelayTracking

log = logging.getLogger(__name__)

INBOX_SOURCES = ("library", "chat")


class _InboxPages:
    """``realtime.relay.InboxPages`` over the container's inbox read model."""

    def __init__(self, container: Container) -> None:
        self.container = container

    def items_for_positions(self, source: str, first: int, last: int) -> list[dict[str, Any]]:
        return self.container.inbox.items_for_positions(source, first, last)

    def position(self, source: str) -> int:
        with self.container.pool.connection() as conn:
            return tracked_position(conn, "inbox", source)


class ConversationPeers:
    """``peers(reader_id)`` for the gateway: the readers ``reader_id`` has a conversation with,
    from the inbox read model (``InboxQueries.conversations``, pages of ``page``), at most
    ``limit`` of them (the most recently active)."""

    def __init__(self, container: Container, *, page: int = 500, limit: int = 5000) -> None:
        self.container = container
        self.page = page
        self.limit = limit

    def __call__(self, reader_id: UUID) -> list[UUID]:
        peers: list[UUID] = []
        cursor: str | None = None
        while len(peers) < self.limit:
            rows, cursor = self.container.inbox.conversations(
                reader_id, cursor=cursor, limit=self.page
            )
            peers.extend(UUID(str(row["peer_id"])) for row in rows)
            if cursor is None:
                break
        return peers[: self.limit]


@dataclass
class RealtimeNode:
    """This process's realtime pieces (one per app)."""

    node: str
    nc: Any
    gateway: Gateway
    presence: Presence
    readers: ReaderPresence
    relay: Relay
    rooms: RoomQueries
    notifier: Notifier | None = None
    stopping: bool = False
    nats_url: str = ""

    def readiness(self) -> dict[str, Any]:
        """The ``nats`` entry of ``/readyz``: ok while connected to NATS."""
        stats = self.relay.stats
        return {
            "ok": bool(self.nc.is_connected),
            "node": self.node,
            "sockets": self.gateway.local_count(),
            "readers_online": self.readers.online_count(),
            "relay": {
                "published": stats.published,
                "duplicates": stats.duplicates,
                "failures": stats.failures,
                "last_error": stats.last_error,
                "positions": dict(stats.positions or {}),
            },
        }


def start_notifier(container: Container, readers: ReaderPresence) -> Notifier | None:
    """The subscribe-message notifier, when templates are configured (else ``None``); not
    started (``await notifier.start()``)."""
    platform = container.wechat
    if platform is None or platform.outbox is None or platform.api is None:
        return None
    api = platform.api
    openids = platform.openids
    settings = container.settings

    async def send(body: dict[str, Any]) -> None:
        await api.acall(api.api.subscribe_send, body)

    return Notifier(
        platform.outbox,
        send,
        readers.is_online,
        lambda reader_id: openids.open_id(reader_id) if openids is not None else None,
        sources=INBOX_SOURCES,
        max_attempts=settings.notify_max_attempts,
        backoff=settings.notify_backoff,
        call_timeout=4 * settings.wechat_timeout + 5,
        retention=settings.notify_retention * 86400.0,
    )


def _inbox_runner_active(container: Container) -> bool:
    return any(
        r.projection.name == "inbox" and r.status.state == "running" for r in container.runners
    )


async def start_realtime(container: Container) -> RealtimeNode:
    """Connect to NATS and start relay, presence and gateway. Raises when NATS cannot be
    reached (the process should not serve without its fan-out)."""
    settings = container.settings
    url = settings.nats_url or container.nats_url
    if not url:
        embedded = EmbeddedNats(settings.data_dir)
        url = await asyncio.to_thread(embedded.start)
        container.embedded_nats = embedded
    container.nats_url = url
    node_id = uuid.uuid4().hex[:12]
    node: RealtimeNode | None = None

    async def reconnected() -> None:
        log.info("nats: reconnected; resynchronising sockets, presence and relay")
        if node is not None:
            container.sessions.cache.enable()
            node.gateway.resync()
            node.relay.request_catch_up()
            with contextlib.suppress(Exception):
                await node.presence.resync()
            with contextlib.suppress(Exception):
                await node.readers.resync()

    embedded_nats = container.embedded_nats
    watchdog: list[asyncio.Task[None]] = []

    async def disconnected() -> None:
        # revocations may be missed meanwhile: every token is looked up again
        container.sessions.cache.disable()
        if node is not None and not node.stopping:
            log.warning("nats: disconnected; reconnecting")
            if embedded_nats is not None and not any(not t.done() for t in watchdog):
                watchdog[:] = [asyncio.create_task(_revive_embedded(embedded_nats, nc, node))]

    async def error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    nc = await nats.connect(
        [server.strip() for server in url.split(",") if server.strip()],  # a cluster: a,b,c
        name=f"liudong-{node_id}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        reconnected_cb=reconnected,
        disconnected_cb=disconnected,
        error_cb=error,
    )
    presence = Presence(nc, node_id, interval=settings.presence_interval)
    readers = ReaderPresence(nc, node_id, interval=settings.presence_interval)
    gateway = Gateway(
        nc,
        container.inbox,
        # chat.send / room.send texts pass the content check first (error content_rejected),
        # then their picture is attached (only the sender's own uploads: media_not_owned)
        ModeratedChat(
            AttachingChat(container.chat, lambda: container.media),
            lambda: container.wechat and container.wechat.moderation,
        ),
        presence,
        directory=container.shelf.reader,
        config=GatewayConfig(
            heartbeat=settings.ws_heartbeat,
            queue_size=settings.ws_queue_size,
            frame_rate=settings.ws_frame_rate,
        ),
        readers=readers,
        peers=ConversationPeers(container),
        # chat.send / room.send per reader, in the same count as HTTP sends (per node)
        limits=lambda: container.rate_limits,
    )
    relay = Relay(
        nc,
        _InboxPages(container),
        RelayTracking(container.pool),
        INBOX_SOURCES,
        is_active=lambda: _inbox_runner_active(container),
    )
    relay.local = gateway.offer_local  # this node's sockets get items without the NATS trip
    await relay.start()
    await presence.start()
    await readers.start()
    await gateway.start()

    async def revoked(msg: Any) -> None:  # any node's logout, eviction, revocation, new login
        container.sessions.cache.forget(msg.data.decode(errors="replace").split())

    await nc.subscribe(REVOKED_SUBJECT, cb=revoked)
    await nc.subscribe(REPLACED_SUBJECT, cb=revoked)  # single device: replaced by a login
    container.sessions.cache.enable()  # from now on a revocation reaches the cache
    container.inbox_projection.item_listeners.append(relay.on_page)
    notifier = start_notifier(container, readers)
    if notifier is not None:
        await notifier.start()
        container.inbox_projection.item_listeners.append(notifier.wake)
    node = RealtimeNode(
        node=node_id,
        nc=nc,
        gateway=gateway,
        presence=presence,
        readers=readers,
        relay=relay,
        rooms=RoomQueries(container.pool),
        notifier=notifier,
        nats_url=url,
    )
    return node


async def _revive_embedded(embedded: EmbeddedNats, nc: Any, node: RealtimeNode) -> None:
    """While this node is cut off from the embedded nats-server, make sure one runs on the
    recorded port: the node that started it may have stopped (or it died). Under the data
    folder's lock one node starts it, the others find it; nats-py's reconnect (every
    ``reconnect_time_wait`` s, to the same URL) then finds it."""
    while not nc.is_connected and not nc.is_closed and not node.stopping:
        try:
            url = await asyncio.to_thread(embedded.ensure_running)
        except Exception as exc:  # EmbeddedError, OSError: try again
            log.warning("nats: could not restart the embedded server: %s", exc)
        else:
            if url != node.nats_url:
                log.error("nats: the embedded server moved to %s; restart this node", url)
        await asyncio.sleep(1.0)


async def stop_realtime(container: Container, node: RealtimeNode) -> None:
    node.stopping = True
    container.sessions.cache.disable()
    with contextlib.suppress(ValueError):
        container.inbox_projection.item_listeners.remove(node.relay.on_page)
    node.relay.local = None
    if node.notifier is not None:
        with contextlib.suppress(ValueError):
            container.inbox_projection.item_listeners.remove(node.notifier.wake)
        await node.notifier.stop()
    await node.gateway.stop()
    await node.readers.stop()
    await node.presence.stop()
    await node.relay.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(node.nc.drain(), 5)
    if not node.nc.is_closed:
        with contextlib.suppress(Exception):
            await node.nc.close()


@contextlib.asynccontextmanager
async def realtime_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Litestar lifespan: after the container's (it needs ``app.state.container``)."""
    container: Container = app.state.container
    node = await start_realtime(container)
    container.extras["realtime"] = node
    container.extras.setdefault("readiness_checks", {})["nats"] = node.readiness
    app.state.realtime = node
    try:
        yield
    finally:
        container.extras.get("readiness_checks", {}).pop("nats", None)
        container.extras.pop("realtime", None)
        await stop_realtime(container, node)


async def publish_revoked(
    container: Container, session_ids: Iterable[str], *, replaced: bool = False
) -> None:
    """Login sessions ended (logout, revocation, eviction): close their sockets on this node
    at once and tell every other node on NATS (``liudong.sessions.revoked``; with
    ``replaced``, a login on another device ended them: ``liudong.sessions.replaced``, the
    sockets get ``session_replaced`` and 4409). A NATS failure is logged, not raised: the
    sessions are revoked in the database anyway, and sockets on other nodes would then end
    at their expiry check only."""
    ids = [i for i in session_ids if i]
    node = realtime_of(container)
    if not ids or node is None:
        return
    node.gateway.end_sessions(ids, replaced=replaced)
    subject = REPLACED_SUBJECT if replaced else REVOKED_SUBJECT
    try:
        await node.nc.publish(subject, " ".join(ids).encode())
        await asyncio.wait_for(node.nc.flush(), 1)
    except Exception as exc:
        log.warning("realtime: could not publish %d session revocation(s): %r", len(ids), exc)


def realtime_of(container: Container) -> RealtimeNode | None:
    """The running ``RealtimeNode`` of ``container``, if any."""
    node = container.extras.get("realtime")
    return node if isinstance(node, RealtimeNode) else None


__all__ = [
    "ConversationPeers",
    "publish_revoked",
    "RealtimeNode",
    "realtime_lifespan",
    "realtime_of",
    "start_realtime",
    "stop_realtime",
]
