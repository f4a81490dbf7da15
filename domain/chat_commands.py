"""Commands of the Chat context and the result of a send: immutable msgspec Structs.

The REST controllers and the WebSocket gateway (``chat.send``, ``read``) build the same types,
adding the authenticated actor (``reader_id`` / ``sender_id``); ``domain.chat.Chat.handle``
executes them. The limits below are the contract's limits: a decoded body that breaks them is
a 422 at the API; the aggregates check the same limits again (``InvalidMessage``,
``InvalidRoom``) because a Struct built in code is not validated.

Each Struct declares ``frozen=True, kw_only=True`` itself: msgspec does not inherit
``kw_only`` from a base class.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from domain.commands import NO_NUL, Command, Recorded
from domain.media import MediaRef

MAX_TEXT_LENGTH = 2000
"""A message's text is 1..2000 characters (Unicode code points, as ``len(str)``)."""
MAX_CLIENT_MSG_ID_LENGTH = 64
ROOM_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
"""A room's stable slug: lower-case ASCII letters, digits and ``-``, 1..64 characters."""
MAX_ROOM_TITLE_LENGTH = 100

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=NO_NUL)]
MessageText = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH, pattern=NO_NUL)]
"""A message's text: empty only when the message carries a picture."""
ClientMsgId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_CLIENT_MSG_ID_LENGTH, pattern=NO_NUL)
]
RoomName = Annotated[str, msgspec.Meta(pattern=ROOM_NAME_PATTERN)]
RoomTitle = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_ROOM_TITLE_LENGTH, pattern=NO_NUL)
]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class OpenConversation(Command, frozen=True, kw_only=True):
    """Open (or find) the one-to-one conversation of ``reader_id`` and ``peer_id``.
    ``loan_id`` is the loan whose request opened it, if any (kept only when it is new)."""

    reader_id: UUID
    peer_id: UUID
    loan_id: UUID | None = None


class SendMessage(Command, frozen=True, kw_only=True):
    """Send ``text``, a picture (``media``), or both in a conversation. A retry with the
    same ``client_msg_id`` by the same sender returns the first message and records
    nothing. ``media`` must be a picture the sender uploaded: the API checks it and fills
    its size in before the command reaches ``Chat`` (``domain.media``)."""

    conversation_id: UUID
    sender_id: UUID
    text: MessageText = ""
    client_msg_id: ClientMsgId
    media: MediaRef | None = None


class MarkRead(Command, frozen=True, kw_only=True):
    """``reader_id`` has read the conversation's messages up to ``seq`` ``up_to``."""

    conversation_id: UUID
    reader_id: UUID
    up_to: Seq


class HideMessage(Command, frozen=True, kw_only=True):
    """Hide one message of a conversation for ``reader_id`` only."""

    conversation_id: UUID
    reader_id: UUID
    message_id: UUID


class CreateRoom(Command, frozen=True, kw_only=True):
    """Create a public room (an operator's command; the API / CLI authorises it)."""

    name: RoomName
    title: RoomTitle


class SendRoomMessage(Command, frozen=True, kw_only=True):
    """Send ``text``, a picture (``media``), or both in a public room; same
    de-duplication and picture rules as ``SendMessage``."""

    room_id: UUID
    sender_id: UUID
    text: MessageText = ""
    client_msg_id: ClientMsgId
    media: MediaRef | None = None


class MessageRecorded(Recorded, frozen=True, kw_only=True):
    """The message a send stands for.

    ``id`` and ``conversation_id`` are both the conversation's (or room's) id. ``seq`` is the
    message's number in its conversation (1, 2, 3…), ``at`` the server's UTC timestamp of the
    message. ``created`` is ``False`` when the send was a retry of a message already recorded
    (then ``position`` is ``None``: nothing new was written).
    """

    conversation_id: UUID
    message_id: UUID
    seq: int
    created: bool
    at: datetime
    media: dict[str, Any] | None = None
    """The picture this send recorded (``{"id", "width", "height"}``), when ``created``."""
