"""The frames of ``/v1/ws`` (and the NATS payloads between nodes): msgspec tagged unions.

Every frame is one JSON text message ``{"type": "<tag>", ...}`` of at most ``MAX_FRAME_BYTES``
(16 KiB, UTF-8). ``docs/REALTIME.md`` is the client-facing description; this module is the
source of truth.

Server → client (``ServerFrame``)::

    hello, event, ping, pong, ack, error,
    room.joined, room.left, room.message, room.media_removed, room.presence,
    presence, presence.state

Client → server (``ClientFrame``, decoded by the one ``decode_client_frame``)::

    resume, ping, pong, chat.send, read, room.join, room.leave, room.send, presence.query

Client frames forbid unknown fields (a typo is reported, not ignored); server frames only
ever gain fields with defaults, so clients must ignore fields they do not know.

Close codes (``CloseCode``) are part of the contract too.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from domain.chat_commands import ClientMsgId, MessageText, RoomName, Seq
from domain.media import MediaId

MAX_FRAME_BYTES = 16 * 1024
"""Largest accepted client frame, in bytes of UTF-8 (larger: ``error`` + close 1009)."""


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway uses (RFC 6455 §7.4: 4000–4999 are ours)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is shutting down: reconnect (to another node) after the back-off."""
    MESSAGE_TOO_BIG = 1009
    """A client frame was larger than ``MAX_FRAME_BYTES``."""
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """The session store was unavailable during authentication."""
    REPLACED = 4000
    """Too many sockets of one reader on one node: the oldest is closed."""
    SLOW_CONSUMER = 4008
    """The socket's outbound queue was full: the client read too slowly. Resume with the
    last ``seq`` seen; nothing is lost (the inbox keeps it)."""
    HEARTBEAT_TIMEOUT = 4012
    """Nothing received from the client for 1.5 heartbeat intervals (two missed pongs)."""
    BAD_REQUEST = 4400
    """The connect URL was unusable (e.g. ``after`` not a non-negative integer, or a session
    token in ``?token=``: ``token_in_url``)."""
    UNAUTHORIZED = 4401
    """Missing, invalid, expired or revoked token or ticket, or (``session_ended``) the
    socket's login session ended: log in again before reconnecting."""
    SESSION_REPLACED = 4409
    """(``session_replaced``, only with ``LIUDONG_SINGLE_DEVICE``) the reader logged in on
    another device, which ended this login session: do not reconnect with this token; say
    "logged in elsewhere" and offer to log in again."""


class Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """Base of every frame; the tag is the ``type`` field."""


# -- shared shapes ------------------------------------------------------------------------


class ReaderRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A reader as others see them (never an openId)."""

    id: UUID
    nickname: str = ""


# -- server → client ----------------------------------------------------------------------


class Hello(Frame, frozen=True, kw_only=True, tag="hello"):
    """First frame of every connection. ``head``: the reader's newest inbox ``seq`` (0 when
    empty); ``heartbeat``: seconds between server pings."""

    reader: ReaderRef
    head: int
    heartbeat: float
    max_frame_bytes: int


class Event(Frame, frozen=True, kw_only=True, tag="event"):
    """One inbox item. ``seq`` is gap-free per reader: 1, 2, 3…"""

    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]


class Ping(Frame, frozen=True, kw_only=True, tag="ping"):
    """Server heartbeat (answer with ``pong``), or a client's ping (answered with ``pong``)."""


class Pong(Frame, frozen=True, kw_only=True, tag="pong"):
    """Answer to a ``ping``."""


class Ack(Frame, frozen=True, kw_only=True, tag="ack"):
    """A ``chat.send`` / ``room.send`` was recorded (or was a retry of a recorded message:
    then ``created`` is false and the ids are the first send's). For a room, ``conversation_id``
    is the room's id and ``room`` its name. For a ``read`` with a ``client_msg_id``,
    ``message_id`` is absent and ``seq`` is the read position."""

    client_msg_id: str
    conversation_id: UUID
    seq: int
    message_id: UUID | None = None
    at: datetime | None = None
    created: bool | None = None
    room: str | None = None


class Error(Frame, frozen=True, kw_only=True, tag="error"):
    """Something the client sent was refused; the connection stays open unless a close
    follows. ``code`` is stable (domain codes such as ``not_a_member`` included);
    ``client_msg_id`` echoes the refused send's, ``frame`` names the refused frame type."""

    code: str
    message: str
    client_msg_id: str | None = None
    frame: str | None = None
    retry_after: int | None = None
    """With ``rate_limited``: seconds until the socket may send that frame again."""


class RoomJoined(Frame, frozen=True, kw_only=True, tag="room.joined"):
    """This socket is now in ``room``; ``members``: distinct readers in it, all nodes."""

    room: str
    title: str
    members: int


class RoomLeft(Frame, frozen=True, kw_only=True, tag="room.left"):
    """This socket left ``room``."""

    room: str
    members: int


class Picture(msgspec.Struct, frozen=True, kw_only=True):
    """A picture in a message (``domain.media.picture_view``): ``url`` / ``thumb_url`` are
    paths on the API's origin; ``null`` with ``removed`` once it was taken down."""

    id: str
    url: str | None
    thumb_url: str | None
    width: int
    height: int
    removed: bool = False


class RoomMessage(Frame, frozen=True, kw_only=True, tag="room.message"):
    """A message in a room this socket joined (also sent to the sender's sockets);
    ``text`` is ``""`` for a picture alone."""

    room: str
    message_id: UUID
    sender: ReaderRef
    text: str
    at: datetime
    seq: int
    media: Picture | None = None


class RoomMediaRemoved(Frame, frozen=True, kw_only=True, tag="room.media_removed"):
    """A picture shown in this room's messages ``message_ids`` was taken down (WeChat's
    image check found it risky): show a placeholder instead."""

    room: str
    media_id: str
    message_ids: list[UUID]
    reason: str


class RoomPresence(Frame, frozen=True, kw_only=True, tag="room.presence"):
    """The member count of a joined room changed: ``joined`` or ``left`` names who (absent
    when a node vanished and took several members with it)."""

    room: str
    members: int
    joined: ReaderRef | None = None
    left: ReaderRef | None = None


class PresenceChanged(Frame, frozen=True, kw_only=True, tag="presence"):
    """A reader you have a conversation with came online (their first socket on any node
    opened) or went offline (their last socket closed, or their node vanished). ``at``: when
    the server saw the change (UTC)."""

    reader: ReaderRef
    online: bool
    at: datetime


class ReaderOnline(msgspec.Struct, frozen=True, kw_only=True):
    """One reader's presence in a ``presence.state``."""

    id: UUID
    online: bool


class PresenceStates(Frame, frozen=True, kw_only=True, tag="presence.state"):
    """The answer to a ``presence.query``: ``readers`` for the asked ids that are your
    conversation peers (in the order asked, each once), ``unknown`` for the others (not a
    peer, yourself, or no such reader): the server does not tell. ``client_msg_id`` echoes
    the query's."""

    readers: list[ReaderOnline]
    unknown: list[UUID]
    client_msg_id: str | None = None


ServerFrame = (
    Hello
    | Event
    | Ping
    | Pong
    | Ack
    | Error
    | RoomJoined
    | RoomLeft
    | RoomMessage
    | RoomMediaRemoved
    | RoomPresence
    | PresenceChanged
    | PresenceStates
)


# -- client → server ----------------------------------------------------------------------


class ClientFrame(Frame, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of client frames (unknown fields are an error)."""


class Resume(ClientFrame, frozen=True, kw_only=True, tag="resume"):
    """Send me every inbox item with ``seq > after``, then live ones."""

    after: Seq


class ClientPing(ClientFrame, frozen=True, kw_only=True, tag="ping"):
    """Answered with ``pong``."""


class ClientPong(ClientFrame, frozen=True, kw_only=True, tag="pong"):
    """Answer to a server ``ping``."""


class ChatSend(ClientFrame, frozen=True, kw_only=True, tag="chat.send"):
    """Send a message in a conversation (retry with the same ``client_msg_id``): a text, a
    picture (``media_id``: one you uploaded, ``POST /v1/media``) or both."""

    conversation_id: UUID
    text: MessageText = ""
    client_msg_id: ClientMsgId
    media_id: MediaId | None = None


class Read(ClientFrame, frozen=True, kw_only=True, tag="read"):
    """Read receipt: I have read the conversation up to message ``seq`` ``up_to``. With a
    ``client_msg_id`` it is acknowledged with an ``ack``."""

    conversation_id: UUID
    up_to: Seq
    client_msg_id: ClientMsgId | None = None


class RoomJoin(ClientFrame, frozen=True, kw_only=True, tag="room.join"):
    room: RoomName


class RoomLeave(ClientFrame, frozen=True, kw_only=True, tag="room.leave"):
    room: RoomName


class RoomSend(ClientFrame, frozen=True, kw_only=True, tag="room.send"):
    """Send a message in a joined room: a text, a picture (``media_id``) or both."""

    room: RoomName
    text: MessageText = ""
    client_msg_id: ClientMsgId
    media_id: MediaId | None = None


MAX_PRESENCE_QUERY = 100
"""Reader ids in one ``presence.query``."""

ReaderIds = Annotated[list[UUID], msgspec.Meta(max_length=MAX_PRESENCE_QUERY)]


class PresenceQuery(ClientFrame, frozen=True, kw_only=True, tag="presence.query"):
    """Are these readers online? (at most ``MAX_PRESENCE_QUERY``). Answered with
    ``presence.state``; only conversation peers are answered."""

    reader_ids: ReaderIds
    client_msg_id: ClientMsgId | None = None


AnyClientFrame = (
    Resume
    | ClientPing
    | ClientPong
    | ChatSend
    | Read
    | RoomJoin
    | RoomLeave
    | RoomSend
    | PresenceQuery
)


# -- NATS payloads between nodes ------------------------------------------------------------


class PresenceState(msgspec.Struct, frozen=True, kw_only=True):
    """One node's members of one room (``liudong.presence.<room>``), published on every change
    and every ``interval`` seconds; other nodes forget it after ``3 × interval``. ``members``
    empty: the node has nobody there (or is shutting down)."""

    node: str
    room: str
    members: list[ReaderRef]
    interval: float


class PresenceSync(msgspec.Struct, frozen=True, kw_only=True):
    """``liudong.presence.sync``: a node that just started asks the others for their state."""

    node: str


class ReaderPresenceMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Reader presence between nodes, all on the one subject ``liudong.readers.presence`` (one
    subscription per node, so a node's messages are seen in the order it published them)."""

    node: str


class ReaderChanged(ReaderPresenceMessage, frozen=True, kw_only=True, tag="change"):
    """``reader``'s first socket on ``node`` opened (``online``) or their last one there
    closed. ``interval``: the node's heartbeat, so receivers know when to expire it."""

    reader: UUID
    online: bool
    at: datetime
    interval: float


class ReadersBeat(ReaderPresenceMessage, frozen=True, kw_only=True, tag="beat"):
    """Heartbeat: (a part of) the readers online on ``node``, every ``interval`` seconds and
    in answer to a ``sync``. Receivers forget a reader of ``node`` after ``3 × interval``
    without a beat listing it or a ``change``."""

    readers: list[UUID]
    interval: float


class ReadersSync(ReaderPresenceMessage, frozen=True, kw_only=True, tag="sync"):
    """A node that just started (or reconnected) asks the others for their beats."""


class ReadersGone(ReaderPresenceMessage, frozen=True, kw_only=True, tag="gone"):
    """``node`` is shutting down: its readers are offline there now."""


AnyReaderPresenceMessage = ReaderChanged | ReadersBeat | ReadersSync | ReadersGone


# -- encoding / decoding --------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(AnyClientFrame)
_any_decoder = msgspec.json.Decoder()
presence_state_decoder = msgspec.json.Decoder(PresenceState)


class PresenceOrigin(msgspec.Struct, frozen=True):
    """Just the ``node`` of a ``PresenceState`` (a node skips its own without decoding the
    member list)."""

    node: str


presence_origin_decoder = msgspec.json.Decoder(PresenceOrigin)
presence_sync_decoder = msgspec.json.Decoder(PresenceSync)
reader_presence_decoder = msgspec.json.Decoder(AnyReaderPresenceMessage)
server_frame_decoder = msgspec.json.Decoder(ServerFrame)
"""For clients written in Python (tests, the delivery probe)."""


def encode(value: Any) -> bytes:
    """JSON bytes of a frame or payload."""
    return _encoder.encode(value)


def encode_text(value: Any) -> str:
    """JSON text of a frame (what a WebSocket text message carries)."""
    return _encoder.encode(value).decode()


class FrameError(ValueError):
    """A client frame was refused. ``code``: ``malformed_json`` | ``unknown_type`` |
    ``invalid_frame`` | ``frame_too_large`` | ``binary_not_supported``; ``frame``: the
    ``type`` it claimed, when readable."""

    def __init__(self, code: str, message: str, frame: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame = frame


def decode_client_frame(data: str | bytes) -> AnyClientFrame:
    """Decode one client WebSocket message.

    ``data`` is the text of a text message; ``bytes`` stands for a binary message, which the
    protocol does not use. Raises ``FrameError``."""
    if isinstance(data, bytes):
        raise FrameError("binary_not_supported", "Send frames as JSON text, not binary.")
    if len(data) > MAX_FRAME_BYTES // 4 and len(data.encode()) > MAX_FRAME_BYTES:
        raise FrameError("frame_too_large", f"A frame has at most {MAX_FRAME_BYTES} bytes.")
    try:
        frame: AnyClientFrame = _client_decoder.decode(data)
        return frame
    except msgspec.ValidationError as exc:
        detail = str(exc)
        claimed = _claimed_type(data)
        if "`$.type`" in detail or "field `type`" in detail:
            return _raise_unknown(claimed)
        raise FrameError("invalid_frame", detail, claimed) from None
    except msgspec.DecodeError:
        raise FrameError("malformed_json", "A frame is one JSON object.") from None


def _raise_unknown(claimed: str | None) -> AnyClientFrame:
    if claimed is None:
        raise FrameError("unknown_type", "A frame is a JSON object with a string `type`.")
    raise FrameError("unknown_type", f"Unknown frame type {claimed!r}.", claimed[:64])


def _claimed_type(data: str) -> str | None:
    try:
        value = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return str(value["type"])[:64]
    return None


__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_PRESENCE_QUERY",
    "Ack",
    "AnyReaderPresenceMessage",
    "AnyClientFrame",
    "ChatSend",
    "ClientPing",
    "ClientPong",
    "CloseCode",
    "Error",
    "Event",
    "FrameError",
    "Hello",
    "Ping",
    "Pong",
    "PresenceChanged",
    "PresenceOrigin",
    "PresenceQuery",
    "PresenceState",
    "PresenceStates",
    "PresenceSync",
    "Read",
    "ReaderChanged",
    "ReaderOnline",
    "ReaderPresenceMessage",
    "ReaderRef",
    "ReadersBeat",
    "ReadersGone",
    "ReadersSync",
    "Resume",
    "RoomJoin",
    "RoomJoined",
    "RoomLeave",
    "RoomLeft",
    "RoomMediaRemoved",
    "RoomMessage",
    "Picture",
    "RoomPresence",
    "RoomSend",
    "ServerFrame",
    "decode_client_frame",
    "encode",
    "encode_text",
    "presence_origin_decoder",
    "presence_state_decoder",
    "presence_sync_decoder",
    "reader_presence_decoder",
    "server_frame_decoder",
]
