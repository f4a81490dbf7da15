"""The composition root: builds every adapter once at start-up, closes them at shutdown.

Nothing connects at import time; ``Container.build(settings)`` does the work, and tests build
the same container with their own settings.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from api.adapters.catalog import Catalog
from api.adapters.media import MediaStore
from api.adapters.ratelimit import RateLimits
from api.adapters.sessions import SessionCache, SessionStore
from api.adapters.wechat import LoginProvider, login_provider_for
from api.bootstrap.db import (
    DatabaseTimeouts,
    FailFast,
    eventsourcing_env,
    library_cache_env,
    make_pool,
)
from api.bootstrap.embedded import EmbeddedNats
from api.bootstrap.group_commit import group_commit
from api.bootstrap.media import media_store_for
from api.bootstrap.runtime import resolve_database_url
from api.bootstrap.settings import Settings
from api.bootstrap.wechat import WeChatPlatform
from domain.chat import Chat
from domain.commands import Recorded
from domain.library import Library
from projections.board import PositionBoard, PositionListener, tracked_position
from projections.inbox import InboxProjection, InboxQueries
from projections.rooms import RoomsProjection
from projections.runner import Ownership, ReadModelRunner
from projections.shelf import ShelfProjection, ShelfQueries
from projections.source import Source

log = logging.getLogger(__name__)


COMMAND_THREADS = 16
"""Commands (the async handlers' blocking halves) run at once per process
(``api.http.controllers.common.run_command``). Without group commit 6 did best (more only
queued on the log's table lock); with it, concurrent saves share a transaction and 16 did
better than 6 at 64 clients (225–256 vs 186 commands/s, ``docs/BENCHMARKS.md``)."""


class ReadModelLag(RuntimeError):
    """The read models did not reach a command's position within the consistency timeout."""


@dataclass
class Container:
    settings: Settings
    database_url: str
    pool: ConnectionPool
    library: Library
    shelf: ShelfQueries
    sessions: SessionStore
    catalog: Catalog
    login: LoginProvider
    board: PositionBoard
    chat: Chat
    inbox: InboxQueries
    runners: list[ReadModelRunner] = field(default_factory=list)
    inbox_projection: InboxProjection = field(default_factory=InboxProjection)
    nats_url: str | None = None
    embedded_nats: EmbeddedNats | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    media: MediaStore | None = None  # pictures (api.adapters.media); None only in tests
    wechat: WeChatPlatform | None = None
    """The WeChat platform: openIds, the content check (``api.bootstrap.wechat``)."""
    rate_limits: RateLimits = field(default_factory=lambda: RateLimits({}))  # per node
    read_pool: ConnectionPool | None = None
    ownership: Ownership | None = None
    positions: PositionListener | None = None
    """Autocommit connections for single-statement reads (``shelf``, ``inbox``, session
    lookups); ``pool`` for everything that writes or needs a transaction."""
    command_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(COMMAND_THREADS)
    )
    """How many async command handlers run their blocking half at once
    (``api.http.controllers.common.run_command``)."""

    @classmethod
    def build(cls, settings: Settings) -> Container:
        """Connect everything; start the projection runners when ``run_projections``."""
        database_url = resolve_database_url(settings)
        timeouts = DatabaseTimeouts(
            connect=settings.db_connect_timeout,
            pool=settings.db_pool_timeout,
            statement=settings.db_statement_timeout,
        )
        wechat = WeChatPlatform.start(settings, database_url)  # production: a refused AppID stops
        pool = make_pool(database_url, size=settings.db_pool_size, timeouts=timeouts)
        # single-statement reads (read models, session lookups): autocommit, one round trip
        read_pool = make_pool(
            database_url,
            size=settings.db_pool_size,
            name="liudong-read",
            timeouts=timeouts,
            autocommit=True,
        )
        wechat.attach(pool)
        # the breaker below checks the connections it hands out (pre_ping=False)
        es_env = eventsourcing_env(database_url, pool_size=5, timeouts=timeouts, pre_ping=False)
        library = Library(env=es_env | library_cache_env())
        chat = Chat(env=dict(es_env))
        # an outage fails a command at once, not after eventsourcing's 10 retries
        breaker = FailFast(wait=timeouts.pool)
        for app in (library, chat):
            breaker.guard(app.recorder.datastore.pool)  # type: ignore[attr-defined]
            if settings.group_commit:  # concurrent saves share one transaction (one lock, commit)
                group_commit(app)
        board = PositionBoard()
        container = cls(
            settings=settings,
            database_url=database_url,
            pool=pool,
            read_pool=read_pool,
            library=library,
            shelf=ShelfQueries(read_pool),
            # enabled by the realtime wiring once revocations are heard (api.bootstrap.realtime)
            sessions=SessionStore(
                pool, cache=SessionCache(settings.session_cache_ttl), read_pool=read_pool
            ),
            catalog=Catalog(pool),
            login=login_provider_for(settings),
            board=board,
            chat=chat,
            inbox=InboxQueries(read_pool),
            wechat=wechat,
        )
        container.media = media_store_for(settings, pool)
        container.rate_limits = RateLimits(
            {
                "login_address": settings.rate_login_address,
                "login_code": settings.rate_login_code,
                "loan_requests": settings.rate_loan_requests,
                "chat_sends": settings.rate_chat_sends,
                "room_sends": settings.rate_room_sends,
            }
        )
        # the process's one LISTEN connection: positions for the board, NOTIFYs of the logs
        # for the runners (PositionListener's docstring)
        container.positions = PositionListener(database_url, board)
        if settings.run_projections:
            apps: dict[str, Any] = {"library": library, "chat": chat}
            for projection, names in (
                (ShelfProjection(), ("library",)),
                (container.inbox_projection, ("library", "chat")),
                (RoomsProjection(), ("chat",)),
            ):
                sources = {name: Source(name, apps[name]) for name in names}
                runner = ReadModelRunner(
                    projection, database_url, sources, board=board, listen=False
                )
                for name, source in sources.items():
                    container.positions.follow(source.channel, partial(runner.wake, name))
                container.runners.append(runner)
            # one process of those sharing the database runs them (serve --workers N)
            container.ownership = Ownership(database_url, container.runners)
            container.ownership.start()
        # every process hears every committed position (read-your-writes without polling)
        container.positions.start()
        return container

    async def aclose(self) -> None:
        if self.ownership is not None:
            self.ownership.stop()
        if self.positions is not None:
            self.positions.stop()
        for runner in self.runners:
            runner.stop()
        await self.login.aclose()
        if self.media is not None:
            self.media.close()
        if self.wechat is not None:  # (its close blocks: not on the event loop's thread)
            await asyncio.to_thread(self.wechat.close)
        self.library.close()
        self.chat.close()
        self.pool.close()
        if self.read_pool is not None:
            self.read_pool.close()
        if self.embedded_nats is not None:
            self.embedded_nats.stop()

    # -- read-your-writes -------------------------------------------------------------------

    def wait_for_shelf(self, recorded: Recorded) -> None:
        """Block until the shelf read model includes ``recorded`` (its log position).

        Raises ``ReadModelLag`` after ``settings.consistency_timeout`` seconds."""
        self.wait_for("shelf", "library", recorded)

    def wait_for(self, projection: str, source: str, recorded: Recorded) -> None:
        """Block until ``projection`` has processed the ``source`` log ("library" or
        "chat") up to ``recorded.position`` (nothing to wait for when it is ``None``).

        Raises ``ReadModelLag`` after ``settings.consistency_timeout`` seconds."""
        if recorded.position is None:
            return
        if not self.board.wait(
            projection,
            source,
            recorded.position,
            self.settings.consistency_timeout,
            lambda: self._tracked(projection, source),
        ):
            raise _lag(projection, source, recorded.position)

    async def wait_for_shelf_async(self, recorded: Recorded) -> None:
        """``wait_for_shelf`` awaited on the event loop (no thread held while waiting).

        Raises ``ReadModelLag`` after ``settings.consistency_timeout`` seconds."""
        await self.wait_for_async("shelf", "library", recorded)

    async def wait_for_async(self, projection: str, source: str, recorded: Recorded) -> None:
        """``wait_for`` awaited on the event loop: the board wakes it when a runner or the
        position listener publishes the position; its rare database polls run in a worker
        thread.

        Raises ``ReadModelLag`` after ``settings.consistency_timeout`` seconds."""
        if recorded.position is None:
            return

        async def poll() -> int:  # in the handlers' executor (``api.http.app``)
            return await asyncio.get_running_loop().run_in_executor(
                None, self._tracked, projection, source
            )

        if not await self.board.wait_async(
            projection, source, recorded.position, self.settings.consistency_timeout, poll
        ):
            raise _lag(projection, source, recorded.position)

    def _tracked(self, projection: str, source: str) -> int:
        """``projection``'s committed position in ``source`` (one read)."""
        with (self.read_pool or self.pool).connection() as conn:
            return tracked_position(conn, projection, source)

    def check_database(self) -> None:
        """Raises ``psycopg.Error`` when the database does not answer."""
        with self.pool.connection(timeout=self.settings.db_pool_timeout) as conn:
            conn.execute("SELECT 1")


def _lag(projection: str, source: str, position: int) -> ReadModelLag:
    return ReadModelLag(f"{projection} has not reached {source} position {position}")


__all__ = ["Container", "ReadModelLag", "psycopg"]
