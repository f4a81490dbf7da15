"""Bench peer: a Litestar + uvicorn async app doing one ``INSERT`` per request.

    DATABASE_URL=... PEER_POOL_SIZE=16 python -m uvicorn bench.peers.litestar_insert:app

``POST /insert`` (a JSON body, decoded by Litestar/msgspec) inserts one 300-byte row into
``bench_peer_insert`` through a psycopg ``AsyncConnectionPool`` (autocommit: one
transaction, one statement) and answers ``{"id": ..., "note": ...}`` as JSON. ``GET
/ready`` answers once the pool is open. What a request costs when an async Python web
stack does the least a durable command can do.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, get, post
from psycopg_pool import AsyncConnectionPool

PAYLOAD = os.urandom(300)
pool = AsyncConnectionPool(
    os.environ.get("DATABASE_URL", ""),
    min_size=int(os.environ.get("PEER_POOL_SIZE", "16")),
    max_size=int(os.environ.get("PEER_POOL_SIZE", "16")),
    kwargs={"autocommit": True},
    open=False,
)


class Body(msgspec.Struct):
    note: str | None = None


@post("/insert", status_code=201)
async def insert(data: Body) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO bench_peer_insert (originator_id, payload) VALUES (%s, %s) RETURNING id",
            (uuid.uuid4(), PAYLOAD),
        )
        row = await cur.fetchone()
    assert row is not None
    return {"id": row[0], "note": data.note}


@get("/ready")
async def ready() -> str:
    return "ok"


@asynccontextmanager
async def lifespan(_: Litestar) -> AsyncIterator[None]:
    await pool.open(wait=True)
    try:
        yield
    finally:
        await pool.close()


app = Litestar([insert, ready], lifespan=[lifespan], openapi_config=None)
