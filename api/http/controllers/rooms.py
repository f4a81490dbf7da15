"""``/v1/rooms``: public chat rooms (created by operators: ``liudong rooms create``).

The list carries each room's live member count (presence over NATS, the same on every node);
history comes from the rooms read model (``projections.rooms``). Joining, leaving and sending
happen over the WebSocket (``room.join`` / ``room.leave`` / ``room.send``).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get

from api.bootstrap.realtime import realtime_of
from api.http.controllers.common import container_of
from api.http.errors import ApiError
from api.http.openapi import Code, contract
from api.http.params import Cursor, FromPath, PageSize, ViewerId, next_seq_cursor, seq_cursor
from api.http.schemas import NextCursor, Out, PictureOut, ReaderOut, reader_out
from domain.chat_commands import ROOM_NAME_PATTERN
from domain.chat_errors import RoomNotFound
from projections.rooms import RoomQueries

_NAME = re.compile(ROOM_NAME_PATTERN)


class RoomOut(Out, frozen=True):
    id: UUID
    name: str
    title: str
    members: int
    """Distinct readers in the room now, over all API nodes."""
    messages: int
    created_at: datetime
    last_message_at: datetime | None = None


class RoomMessageOut(Out, frozen=True):
    id: UUID
    room: str
    seq: int
    sender: ReaderOut
    text: str
    """``""`` for a picture alone."""
    at: datetime
    media: PictureOut | None = None


class RoomPage(Out, frozen=True):
    items: list[RoomOut]
    next_cursor: NextCursor


class RoomMessagePage(Out, frozen=True):
    items: list[RoomMessageOut]
    next_cursor: NextCursor


def _queries(request: Request[Any, Any, Any]) -> RoomQueries:
    container = container_of(request)
    node = realtime_of(container)
    return node.rooms if node is not None else RoomQueries(container.pool)


def _name_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(f"r:{name}".encode()).decode().rstrip("=")


def _name_of_cursor(cursor: str | None) -> str | None:
    """The room name a ``cursor`` of the rooms list continues after; 422 ``invalid_cursor``."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    prefix, _, name = raw.partition(":")
    if prefix != "r" or not _NAME.fullmatch(name):
        raise ApiError(422, "invalid_cursor", "cursor is not one this server issued")
    return name


def _members(request: Request[Any, Any, Any], name: str) -> int:
    node = realtime_of(container_of(request))
    return node.presence.count(name) if node is not None else 0


class RoomController(Controller):
    path = "/v1/rooms"
    tags = ["rooms"]

    @get(
        "/",
        operation_id="listRooms",
        sync_to_thread=True,
        opt=contract(Code(422, "invalid_cursor")),
    )
    def rooms(
        self, request: Request[Any, Any, Any], cursor: Cursor = None, limit: PageSize = 100
    ) -> RoomPage:
        """The rooms, by name, with their live member counts."""
        after = _name_of_cursor(cursor)
        every = sorted(_queries(request).rooms(), key=lambda r: str(r["name"]))  # bytewise
        rows = [r for r in every if after is None or r["name"] > after]
        more = len(rows) > limit
        rows = rows[:limit]
        return RoomPage(
            items=[
                RoomOut(
                    id=r["id"],
                    name=r["name"],
                    title=r["title"],
                    members=_members(request, r["name"]),
                    messages=r["last_seq"],
                    created_at=r["created_at"],
                    last_message_at=r["last_message_at"],
                )
                for r in rows
            ],
            next_cursor=_name_cursor(rows[-1]["name"]) if more else None,
        )

    @get(
        "/{name:str}/messages",
        operation_id="listRoomMessages",
        sync_to_thread=True,
        opt=contract(RoomNotFound, Code(422, "invalid_cursor")),
    )
    def messages(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        viewer_id: ViewerId,
        cursor: Cursor = None,
        limit: PageSize = 30,
    ) -> RoomMessagePage:
        """A room's history, newest first; ``next_cursor`` leads to the older messages.
        Public, like the rooms. 404 ``room_not_found``."""
        before = seq_cursor(cursor)
        queries = _queries(request)
        room = queries.room(name) if _NAME.fullmatch(name) else None
        if room is None:
            raise RoomNotFound
        rows, next_before = queries.messages(room["id"], before, limit)
        return RoomMessagePage(
            items=[
                RoomMessageOut(
                    id=r["message_id"],
                    room=name,
                    seq=r["seq"],
                    text=r["text"],
                    at=r["at"],
                    media=None if r.get("media") is None else PictureOut(**r["media"]),
                    sender=reader_out(r, "sender_"),
                )
                for r in rows
            ],
            next_cursor=next_seq_cursor(next_before),
        )


__all__ = ["RoomController", "RoomMessageOut", "RoomOut"]
