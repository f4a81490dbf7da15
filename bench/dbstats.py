"""What a server asks of PostgreSQL: transactions and SQL statements, counted on the server.

- **Transactions**: ``xact_commit`` and ``xact_rollback`` of the bench's own database in
  ``pg_stat_database``, read from a connection to the maintenance database (so the reads
  are not counted). A backend reports its counters when it goes idle, at most once a
  second: a count over a window is exact to within about a second of traffic at each end.
- **Statements**: ``sum(calls)`` of ``pg_stat_statements`` for the bench's database, when
  the extension can be created and is loaded (``shared_preload_libraries``); its own reads
  are subtracted. It counts every statement a client sends (``BEGIN`` and ``COMMIT``
  included, ``track_utility`` being on by default), at once.
- Where ``pg_stat_statements`` is not loaded, ``CountingProxy`` counts the same thing on the
  wire: a TCP proxy in front of PostgreSQL that counts the ``Query`` ('Q', simple protocol)
  and ``Execute`` ('E', extended protocol, pipelines included) messages clients send, and
  the transactions that end (read from the server's ``ReadyForQuery`` messages), at once. A
  server is then started a second time, through the proxy, for the counts (the proxy costs
  CPU: timings are never taken through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class DbCounters:
    """Transactions (always) and statements (when ``pg_stat_statements`` is loaded) of the
    database of ``database_url``; ``server_url`` is its server's maintenance database."""

    def __init__(self, server_url: str, database_url: str) -> None:
        self.dbname = str(conninfo_to_dict(database_url).get("dbname"))
        self._admin = psycopg.connect(server_url, autocommit=True)
        self._db = psycopg.connect(database_url, autocommit=True)
        self._reads = 0
        self.statements_unavailable: str | None = None
        try:
            self._db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self._db.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
        except psycopg.Error as exc:
            self.statements_unavailable = (
                f"pg_stat_statements unavailable on this server ({str(exc).strip()[:160]})"
            )

    def transactions(self) -> tuple[int, int]:
        """``(xact_commit, xact_rollback)`` of the database so far."""
        row = self._admin.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            (self.dbname,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def statements(self) -> int | None:
        """Statements run in the database so far (``pg_stat_statements``), not counting
        these reads; None when unavailable."""
        if self.statements_unavailable:
            return None
        row = self._db.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        assert row is not None
        count = int(row[0]) - self._reads
        self._reads += 1
        return count

    def snapshot(self) -> Snapshot:
        return Snapshot(self.transactions(), self.statements())

    def close(self) -> None:
        self._admin.close()
        self._db.close()

    def __enter__(self) -> DbCounters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Snapshot:
    def __init__(self, xacts: tuple[int, int], statements: int | None) -> None:
        self.xacts = xacts
        self.statements = statements

    def since(self, before: Snapshot) -> dict[str, Any]:
        commits = self.xacts[0] - before.xacts[0]
        rollbacks = self.xacts[1] - before.xacts[1]
        statements = (
            None
            if self.statements is None or before.statements is None
            else self.statements - before.statements
        )
        return {"commits": commits, "rollbacks": rollbacks, "statements": statements}


# -- counting on the wire ---------------------------------------------------------------------

_ENCRYPTION = {80877103, 80877104}  # SSLRequest, GSSENCRequest


class _Stream:
    """Splits one direction of a PostgreSQL connection, after its startup message, into
    messages: ``on_message(kind, status)`` (``status``: ReadyForQuery's, else None)."""

    def __init__(self, on_message: Any) -> None:
        self.on_message = on_message
        self.header = bytearray()
        self.skip = 0  # bytes of the current message's body still to pass
        self.peek = False  # the next body byte is wanted (ReadyForQuery's status)

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.skip:
                if self.peek:
                    self.peek = False
                    self.on_message(0x5A, view[0])
                taken = min(self.skip, len(view))
                self.skip -= taken
                view = view[taken:]
                continue
            need = 5 - len(self.header)
            self.header += view[:need]
            view = view[need:]
            if len(self.header) < 5:
                return
            kind = self.header[0]
            (length,) = struct.unpack("!i", self.header[1:5])
            self.skip = length - 4
            if kind == 0x5A and self.skip:  # 'Z' ReadyForQuery: wait for its status
                self.peek = True
            else:
                self.on_message(kind, None)
            self.header.clear()


class _Connection:
    """Counts one connection's statements (frontend 'Q' Query and 'E' Execute messages) and
    transactions (backend side: a ReadyForQuery back to idle ends a transaction block, or an
    implicit transaction when commands completed since the last one)."""

    def __init__(self, proxy: CountingProxy) -> None:
        self.proxy = proxy
        self.status = 0x49  # 'I'
        self.completed = False
        self.client = _Stream(self._frontend)
        self.server = _Stream(self._backend)

    def _frontend(self, kind: int, _: int | None) -> None:
        if kind in (0x51, 0x45):  # 'Q', 'E'
            self.proxy.statements += 1

    def _backend(self, kind: int, status: int | None) -> None:
        if kind == 0x43:  # 'C' CommandComplete
            self.completed = True
        elif kind == 0x5A and status is not None:  # 'Z' ReadyForQuery
            if status == 0x49 and (self.status != 0x49 or self.completed):
                self.proxy.transactions += 1
            self.status = status
            self.completed = False


class CountingProxy:
    """A TCP proxy to PostgreSQL (``upstream_url``) that counts the statements clients send
    (``statements``) and the transactions they end (``transactions``), in a thread of its
    own. ``url`` is ``upstream_url`` through it. It refuses SSL (clients that require it
    cannot connect), so that the protocol can be read."""

    def __init__(self, upstream_url: str) -> None:
        kw = conninfo_to_dict(upstream_url)
        self.upstream_host = str(kw.get("host") or "localhost")
        self.upstream_port = int(kw.get("port") or 5432)
        self._kw = kw
        self.statements = 0
        self.transactions = 0
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return make_conninfo(**{**self._kw, "host": "127.0.0.1", "port": str(self.port)})

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream_host.startswith("/"):
            path = f"{self.upstream_host}/.s.PGSQL.{self.upstream_port}"
            return await asyncio.open_unix_connection(path)
        return await asyncio.open_connection(self.upstream_host, self.upstream_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # at stop(): no noise
            await self._proxy(reader, writer)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            # Refuse SSL and GSS encryption ourselves (as a proxy without TLS does): the
            # client goes on in plain text, which can be read.
            while True:
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                if code not in _ENCRYPTION:
                    break
                writer.write(b"N")
            up_reader, up_writer = await self._upstream()
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            return
        up_writer.write(head)
        counted = _Connection(self)
        counted.client.skip = length - 8  # the rest of the startup (or cancel) message

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, stream: _Stream
        ) -> None:
            try:
                while data := await src.read(65536):
                    stream.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(
            pump(reader, up_writer, counted.client),
            pump(up_reader, writer, counted.server),
            return_exceptions=True,
        )

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(serve())

    def start(self) -> CountingProxy:
        self._thread = threading.Thread(target=self._run, name="pg-counting-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("counting proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
