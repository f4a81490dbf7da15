"""Realistic Chat traffic for projection tests: every Chat event type and the awkward cases
the read models must handle (hiding the last message, hiding twice or an unknown id, a
retry beyond the de-duplication window, reads that move backwards, pictures alone and with a
text, a hidden last message with a picture)."""

from __future__ import annotations

from uuid import UUID, uuid4

from domain import chat_commands as cc
from domain.chat import Chat, Conversation, Room
from domain.media import MediaRef


def picture(tag: str, i: int) -> MediaRef:
    """A picture reference (the domain does not look it up)."""
    return MediaRef(id=f"{abs(hash((tag, i))):064x}"[-64:], width=640 + i, height=480)


def conversation(chat: Chat, a: UUID, b: UUID, tag: str, loan_id: UUID | None = None) -> UUID:
    """A conversation of ``a`` and ``b`` with messages, reads and hides (about 25 events).
    Returns its id."""
    cid = chat.handle(cc.OpenConversation(reader_id=a, peer_id=b, loan_id=loan_id)).id
    sent = []
    for i in range(6):
        sender = a if i % 3 else b
        sent.append(
            chat.send(
                cc.SendMessage(
                    conversation_id=cid,
                    sender_id=sender,
                    text="" if i == 5 else f"{tag} 消息 {i}",  # 5: a picture alone
                    client_msg_id=f"{tag}-{i}",
                    media=picture(tag, i) if i in (2, 4, 5) else None,
                )
            )
        )
    chat.handle(cc.MarkRead(conversation_id=cid, reader_id=b, up_to=2))
    chat.handle(cc.HideMessage(conversation_id=cid, reader_id=b, message_id=sent[-1].message_id))
    chat.handle(cc.HideMessage(conversation_id=cid, reader_id=a, message_id=sent[-1].message_id))
    # the last message again for b (already hidden), an older one, an unknown id
    chat.handle(cc.HideMessage(conversation_id=cid, reader_id=b, message_id=sent[-1].message_id))
    chat.handle(cc.HideMessage(conversation_id=cid, reader_id=b, message_id=sent[1].message_id))
    chat.handle(cc.HideMessage(conversation_id=cid, reader_id=a, message_id=uuid4()))
    chat.send(cc.SendMessage(conversation_id=cid, sender_id=a, text="again", client_msg_id="z"))
    chat.handle(cc.MarkRead(conversation_id=cid, reader_id=b, up_to=99))
    chat.handle(cc.MarkRead(conversation_id=cid, reader_id=a, up_to=3))
    chat.send(cc.SendMessage(conversation_id=cid, sender_id=b, text="after", client_msg_id="y"))
    # b hides everything a sent, then the newest: no visible message of a is left for b
    for message in sent:
        chat.handle(cc.HideMessage(conversation_id=cid, reader_id=b, message_id=message.message_id))
    return cid


def retry_beyond_window(chat: Chat, a: UUID, b: UUID, tag: str) -> None:
    """A second ``MessageSent`` with the same message id (the first must stand), in a
    conversation and in a room."""
    cid = chat.handle(cc.OpenConversation(reader_id=a, peer_id=b)).id
    room = chat.handle(cc.CreateRoom(name=f"r-{uuid4().hex[:12]}", title=f"{tag} 房间")).id
    saved = Conversation.dedupe_window, Room.dedupe_window
    Conversation.dedupe_window = Room.dedupe_window = 1
    try:
        for text, client in (("x", "m1"), ("y", "m2"), ("x again", "m1")):
            chat.send(
                cc.SendMessage(conversation_id=cid, sender_id=a, text=text, client_msg_id=client)
            )
            chat.send(
                cc.SendRoomMessage(room_id=room, sender_id=b, text=text, client_msg_id=client)
            )
    finally:
        Conversation.dedupe_window, Room.dedupe_window = saved


def chat_story(chat: Chat, readers: list[UUID], tag: str) -> None:
    """Conversations among ``readers`` (at least 3), a room with messages, retries."""
    a, b, c = readers[:3]
    conversation(chat, a, b, f"{tag}-ab", loan_id=uuid4())
    conversation(chat, c, a, f"{tag}-ca")
    retry_beyond_window(chat, b, c, tag)
    room = chat.handle(cc.CreateRoom(name=f"s-{uuid4().hex[:12]}", title=f"{tag} 大厅")).id
    for i, sender in enumerate(readers):
        chat.send(
            cc.SendRoomMessage(
                room_id=room,
                sender_id=sender,
                text=f"hi {i}",
                client_msg_id=f"{tag}-{i}",
                media=picture(tag, 100 + i) if i % 2 else None,
            )
        )
