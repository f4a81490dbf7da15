"""Bench peer: a Litestar app doing a plain eventsourcing 9.5 ``Application.save()`` of a new
aggregate per request.

    DATABASE_URL=... python -m uvicorn bench.peers.es_save:app

``POST /save`` (a JSON body, decoded by Litestar/msgspec) creates a new ``Item`` aggregate
(its ``Created`` event carries the note and 300 characters) and saves it with a plain
``Application`` on eventsourcing's PostgreSQL persistence (its defaults: default insert
mode, i.e. ``LOCK TABLE … IN EXCLUSIVE MODE`` + ``NOTIFY`` + ``INSERT`` in one transaction;
a pool of 5 + 10 overflow connections), in Litestar's thread pool (eventsourcing is
synchronous), and answers ``{"id", "position"}`` (the notification id). ``GET /ready``
answers once the application is built. What the event store alone costs behind the same web
stack: the reference the ``commands`` scenario compares Liudong with.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from litestar import Litestar, get, post
from psycopg.conninfo import conninfo_to_dict


class Item(Aggregate):
    def __init__(self, note: str, data: str) -> None:
        self.note = note
        self.data = data


class BenchSave(Application[UUID]):
    name = "BenchSave"  # table benchsave_events
    env: ClassVar[dict[str, str]] = {"ORIGINATOR_ID_TYPE": "uuid"}


def _env(database_url: str) -> dict[str, str]:
    kw = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(kw.get("dbname", "postgres")),
        "POSTGRES_HOST": str(kw.get("host", "localhost")),
        "POSTGRES_PORT": str(kw.get("port", "5432")),
        "POSTGRES_USER": str(kw.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(kw.get("password", "")),
        "CREATE_TABLE": "y",
    }


application = BenchSave(env=_env(os.environ.get("DATABASE_URL", "")))
DATA = "x" * 300


class Body(msgspec.Struct):
    note: str | None = None


@post("/save", status_code=201, sync_to_thread=True)
def save(data: Body) -> dict[str, Any]:
    item = Item(note=data.note or "", data=DATA)
    recordings = application.save(item)
    return {"id": str(item.id), "position": recordings[-1].notification.id}


@get("/ready")
async def ready() -> str:
    return "ok"


app = Litestar([save, ready], on_shutdown=[application.close], openapi_config=None)
