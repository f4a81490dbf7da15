"""The content check on the WebSocket path: a Chat in front of the Chat.

``ModeratedChat(chat, moderator)`` is what the realtime gateway is given
(``api.bootstrap.realtime``): its ``handle`` checks the text of a ``SendMessage``
(``chat.send``) or ``SendRoomMessage`` (``room.send``) before passing the command on, so a
refused text raises ``ContentRejected`` (a ``DomainError``: the gateway answers an ``error``
frame with code ``content_rejected``) and nothing is recorded. The gateway calls ``handle``
in a worker thread, never on its event loop. Everything else is the wrapped Chat's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.adapters.moderation.moderator import Moderator
from domain import chat_commands as cc
from domain.moderation import Scene

__all__ = ["ModeratedChat"]


class ModeratedChat:
    """``moderator()`` is read per command (``None``: no check), so it may change at run
    time (tests swap the container's)."""

    def __init__(self, chat: Any, moderator: Callable[[], Moderator | None]) -> None:
        self.chat = chat
        self.moderator = moderator

    def handle(self, command: Any) -> Any:
        moderator = self.moderator()
        if moderator is not None:
            if isinstance(command, cc.SendMessage):
                moderator.check_texts(
                    command.sender_id,
                    {"text": command.text},
                    Scene.SOCIAL_LOG,
                    subject=f"conversation:{command.conversation_id}",
                )
            elif isinstance(command, cc.SendRoomMessage):
                moderator.check_texts(
                    command.sender_id,
                    {"text": command.text},
                    Scene.SOCIAL_LOG,
                    subject=f"room:{command.room_id}",
                )
        return self.chat.handle(command)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chat, name)
