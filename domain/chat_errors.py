"""Refusals of the Chat context, grafted onto the one ``DomainError`` tree (``domain.errors``).

::

    DomainError
    ├── NotFound
    │   ├── ConversationNotFound
    │   └── RoomNotFound
    ├── Forbidden
    │   └── NotAMember          (only the two members may send / read / hide in a conversation)
    ├── Conflict
    │   └── RoomAlreadyExists   (a room of that name exists with another title)
    └── Invalid
        ├── CannotChatWithSelf
        ├── InvalidMessage      (text not 1..2000 characters or blank, client_msg_id not 1..64)
        └── InvalidRoom         (room name not a slug, title not 1..100 characters)

As in ``domain.errors``: every class has a stable ``code``; the HTTP status comes from the
branch, in the API's one mapping.
"""

from __future__ import annotations

from domain.errors import Conflict, Forbidden, Invalid, NotFound


class ConversationNotFound(NotFound):
    """No such conversation."""

    code = "conversation_not_found"


class RoomNotFound(NotFound):
    """No such room."""

    code = "room_not_found"


class NotAMember(Forbidden):
    """Only the members of this conversation may do this."""

    code = "not_a_member"


class RoomAlreadyExists(Conflict):
    """A room with this name already exists with another title."""

    code = "room_already_exists"


class CannotChatWithSelf(Invalid):
    """A reader cannot open a conversation with themselves."""

    code = "cannot_chat_with_self"


class InvalidMessage(Invalid):
    """The message is not acceptable."""

    code = "invalid_message"


class InvalidRoom(Invalid):
    """The room name or title is not acceptable."""

    code = "invalid_room"
