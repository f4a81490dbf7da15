"""``/v1/conversations``: one-to-one conversations, their history, sends and read receipts.

Commands go to the Chat application; reads come from the inbox read model only. A command's
response waits until the inbox includes its chat log position (read-your-writes), else 202.
Only a conversation's two members see or act in it (403 ``not_a_member``; 404
``conversation_not_found`` when there is no such conversation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post

from api.bootstrap.container import Container, ReadModelLag
from api.bootstrap.realtime import realtime_of
from api.http.controllers.common import (
    POSITION_HEADER,
    container_of,
    respond_when,
    run_command,
)
from api.http.controllers.media import ATTACH_PROBLEMS, attach_media
from api.http.errors import ApiError
from api.http.idempotency import (
    Committed,
    Staged,
    after_commit,
    begin_idempotent,
    run_idempotent,
)
from api.http.moderation import Scene, check_texts
from api.http.openapi import MODERATED, Code, contract
from api.http.params import (
    Cursor,
    FromPath,
    IdempotencyKey,
    JSONBody,
    PageSize,
    ReaderId,
    next_seq_cursor,
    seq_cursor,
)
from api.http.schemas import Accepted, Body, NextCursor, Out, PictureOut, ReaderOut, reader_out
from domain import chat_commands as cc
from domain.chat_errors import (
    CannotChatWithSelf,
    ConversationNotFound,
    InvalidMessage,
    NotAMember,
)
from domain.commands import Command, Recorded
from domain.errors import NotFound, ReaderNotFound
from domain.media import MediaId, MediaRef
from projections.paging import InvalidCursor

log = logging.getLogger(__name__)


class MessageNotFound(NotFound):
    """No such message in this conversation."""

    code = "message_not_found"


# -- bodies ---------------------------------------------------------------------------------------


class OpenConversationBody(Body, frozen=True):
    peer_id: UUID


class SendMessageBody(Body, frozen=True):
    """A text, a picture (``media_id``: one you uploaded, ``POST /v1/media``) or both."""

    client_msg_id: cc.ClientMsgId
    text: cc.MessageText = ""
    media_id: MediaId | None = None


class ReadBody(Body, frozen=True):
    up_to: cc.Seq


class MessageOut(Out, frozen=True):
    id: UUID
    conversation_id: UUID
    seq: int
    sender: ReaderOut
    text: str
    """``""`` for a picture alone."""
    client_msg_id: str
    at: datetime
    media: PictureOut | None = None


class ConversationOut(Out, frozen=True):
    id: UUID
    peer: ReaderOut
    unread: int
    last_seq: int
    read_up_to: int
    opened_at: datetime
    updated_at: datetime
    last_message: MessageOut | None = None
    loan_id: UUID | None = None
    peer_online: bool | None = None
    """Whether the peer has a WebSocket open on some server (``GET`` list and detail; null
    in the answers of commands)."""


class ConversationPage(Out, frozen=True):
    items: list[ConversationOut]
    next_cursor: NextCursor


class MessagePage(Out, frozen=True):
    items: list[MessageOut]
    next_cursor: NextCursor


def message_out(row: dict[str, Any]) -> MessageOut:
    """From a row of ``InboxQueries.messages`` / ``message``."""
    return MessageOut(
        id=row["message_id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        sender=reader_out(row, "sender_"),
        text=row["text"],
        client_msg_id=row["client_msg_id"],
        at=row["at"],
        media=None if row.get("media") is None else PictureOut(**row["media"]),
    )


def _last_message_out(data: dict[str, Any] | None) -> MessageOut | None:
    """From the ``last_message`` jsonb (the ``chat.message`` item's data)."""
    if not data:
        return None
    return msgspec.convert({**data, "id": data["message_id"]}, MessageOut, strict=False)


def peer_presence(container: Container) -> Callable[[UUID], bool]:
    """``is_online(reader_id) -> bool`` of this node's realtime (nobody is online without)."""
    node = realtime_of(container)
    return node.readers.is_online if node is not None else (lambda _reader_id: False)


def conversation_out(row: dict[str, Any], peer_online: bool | None = None) -> ConversationOut:
    """From a row of ``InboxQueries.conversations`` / ``conversation``."""
    return ConversationOut(
        id=row["conversation_id"],
        peer=reader_out(row, "peer_"),
        unread=row["unread"],
        last_seq=row["last_seq"],
        read_up_to=row["read_up_to"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        last_message=_last_message_out(row["last_message"]),
        loan_id=row["loan_id"],
        peer_online=peer_online,
    )


# -- pictures -----------------------------------------------------------------------------------


def attach_picture(container: Container, media_id: str, reader_id: UUID) -> MediaRef:
    """``attach_media`` as a message's picture reference (id and size)."""
    info = attach_media(container, media_id, reader_id)
    return MediaRef(id=info.id, width=info.width, height=info.height)


# -- command execution ----------------------------------------------------------------------------


def chat_headers(recorded: Recorded) -> dict[str, str]:
    if recorded.position is None:
        return {}
    return {POSITION_HEADER: f"chat:{recorded.position}"}


def inbox_includes(container: Container, recorded: Recorded) -> bool:
    """Wait until the inbox read model includes ``recorded`` (a Chat log position); False
    if it lagged past the consistency timeout."""
    try:
        container.wait_for("inbox", "chat", recorded)
    except ReadModelLag:
        return False
    return True


async def inbox_includes_async(container: Container, recorded: Recorded) -> bool:
    """``inbox_includes`` awaited on the event loop (no thread held while waiting)."""
    try:
        await container.wait_for_async("inbox", "chat", recorded)
    except ReadModelLag:
        return False
    return True


def execute_chat(container: Container, command: Command) -> tuple[Recorded, bool]:
    """Run a Chat command and wait until the inbox read model includes it. Returns
    ``(recorded, consistent)``; ``consistent`` is False if the inbox lagged past the
    consistency timeout. Raises ``DomainError``."""
    recorded = container.chat.handle(command)
    try:
        container.wait_for("inbox", "chat", recorded)
    except ReadModelLag:
        return recorded, False
    return recorded, True


def chat_accepted(recorded: Recorded, **extra: Any) -> Response[Any]:
    """202 (``Accepted``): recorded, but the inbox has not caught up in time."""
    body = Accepted(id=recorded.id, position=recorded.position, status="accepted", **extra)
    return Response(body, status_code=202, headers=chat_headers(recorded))


def require_member(container: Container, conversation_id: UUID, reader_id: UUID) -> None:
    """Raise ``NotAMember`` (403) or ``ConversationNotFound`` (404) unless ``reader_id`` is a
    member. The read model answers; only when it does not know the pair (a conversation just
    opened by the peer) is the command side asked."""
    if container.inbox.is_member(conversation_id, reader_id):
        return
    if not container.chat.conversation(conversation_id).is_member(reader_id):
        raise NotAMember


def open_loan_conversation(container: Container, loan_id: UUID) -> None:
    """After a loan request: open (or find) the conversation of its borrower and lender and
    post the request's note as the borrower's message (``client_msg_id`` ``loan:<loan id>``),
    then wait for the inbox to show them. Idempotent: opening is, and the message id is
    derived from the loan id (looked up in the read model too, beyond the send window).

    Never raises: the loan is recorded whatever happens here, so a failure is logged."""
    opened = start_loan_conversation(container, loan_id)
    if opened is None:
        return
    try:
        container.wait_for("inbox", "chat", opened)
    except ReadModelLag:
        log.warning("inbox lags behind the conversation of loan %s", loan_id)
    except Exception:
        log.exception("could not open the conversation of loan %s", loan_id)


def start_loan_conversation(container: Container, loan_id: UUID) -> Recorded | None:
    """``open_loan_conversation`` without its wait (blocking): the conversation's id and
    the chat position to await for the inbox (``await_loan_conversation``); ``None`` when
    it failed (logged: never raises)."""
    try:
        loan = container.library.loan(loan_id)
        opened = container.chat.handle(
            cc.OpenConversation(reader_id=loan.borrower_id, peer_id=loan.lender_id, loan_id=loan_id)
        )
        positions = [opened.position]
        client_msg_id = f"loan:{loan_id}"
        note = (loan.note or "").strip()
        if note and not container.inbox.message_by_client_id(
            opened.id, loan.borrower_id, client_msg_id
        ):
            sent = container.chat.send(
                cc.SendMessage(
                    conversation_id=opened.id,
                    sender_id=loan.borrower_id,
                    text=loan.note,
                    client_msg_id=client_msg_id,
                )
            )
            positions.append(sent.position)
        last = max((p for p in positions if p is not None), default=None)
        return Recorded(id=opened.id, position=last)
    except Exception:
        log.exception("could not open the conversation of loan %s", loan_id)
        return None


async def await_loan_conversation(
    container: Container, loan_id: UUID, opened: Recorded | None
) -> None:
    """The wait of ``open_loan_conversation``, on the event loop. Never raises (but a
    cancellation): a lag or a failure is logged."""
    if opened is None:
        return
    try:
        await container.wait_for_async("inbox", "chat", opened)
    except ReadModelLag:
        log.warning("inbox lags behind the conversation of loan %s", loan_id)
    except Exception:
        log.exception("could not open the conversation of loan %s", loan_id)


# -- the controller -------------------------------------------------------------------------------


class ConversationController(Controller):
    path = "/v1/conversations"
    tags = ["chat"]

    @get(
        "/",
        operation_id="listConversations",
        sync_to_thread=True,
        opt=contract(Code(422, "invalid_cursor")),
    )
    def list_conversations(
        self,
        request: Request[Any, Any, Any],
        reader_id: ReaderId,
        cursor: Cursor = None,
        limit: PageSize = 20,
    ) -> ConversationPage:
        """Your conversations, most recent activity first, with the peer (and whether they
        are online: ``peer_online``), the last message and your unread count."""
        container = container_of(request)
        try:
            rows, next_cursor = container.inbox.conversations(reader_id, cursor=cursor, limit=limit)
        except InvalidCursor as exc:
            raise ApiError(422, "invalid_cursor", str(exc)) from exc
        online = peer_presence(container)
        return ConversationPage(
            items=[conversation_out(r, online(r["peer_id"])) for r in rows],
            next_cursor=next_cursor,
        )

    @post(
        "/",
        operation_id="openConversation",
        status_code=201,
        sync_to_thread=True,
        opt=contract(ReaderNotFound, CannotChatWithSelf, command="chat", also=(200,)),
    )
    def open_conversation(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[OpenConversationBody],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[ConversationOut]:
        """Open the conversation with ``peer_id`` (201), or find it (200): the same pair
        always gives the same id. 404 ``reader_not_found`` if the peer is not a registered
        reader, 422 ``cannot_chat_with_self``."""
        container = container_of(request)

        def action() -> Response[Any]:
            if data.peer_id != reader_id and container.shelf.reader(data.peer_id) is None:
                raise ReaderNotFound
            command = cc.OpenConversation(reader_id=reader_id, peer_id=data.peer_id)
            recorded, consistent = execute_chat(container, command)
            row = container.inbox.conversation(recorded.id, reader_id) if consistent else None
            if row is None:  # the inbox lags (or the peer opened it a moment ago)
                return chat_accepted(recorded)
            status = 201 if recorded.position is not None else 200
            return Response(
                conversation_out(row), status_code=status, headers=chat_headers(recorded)
            )

        def opened(done: Committed) -> Response[Any]:
            """The answer of the open that committed (so it created the conversation: 201);
            opening again finds it and records nothing."""
            command = cc.OpenConversation(reader_id=reader_id, peer_id=data.peer_id)
            recorded = Recorded(id=container.chat.handle(command).id, position=done.position)
            row = (
                container.inbox.conversation(recorded.id, reader_id)
                if inbox_includes(container, recorded)
                else None
            )
            if row is None:
                return chat_accepted(recorded)
            return Response(conversation_out(row), status_code=201, headers=chat_headers(recorded))

        return run_idempotent(
            container,
            reader_id,
            idempotency_key,
            "POST",
            request.url.path,
            data,
            action,
            after_commit(opened),
        )

    @get(
        "/{conversation_id:uuid}",
        operation_id="getConversation",
        sync_to_thread=True,
        opt=contract(ConversationNotFound, NotAMember),
    )
    def detail(
        self, request: Request[Any, Any, Any], conversation_id: FromPath[UUID], reader_id: ReaderId
    ) -> ConversationOut:
        """One of your conversations (with ``peer_online``)."""
        container = container_of(request)
        row = container.inbox.conversation(conversation_id, reader_id)
        if row is None:
            require_member(container, conversation_id, reader_id)
            raise ConversationNotFound  # a member, but not in the read model yet
        return conversation_out(row, peer_presence(container)(row["peer_id"]))

    @get(
        "/{conversation_id:uuid}/messages",
        operation_id="listMessages",
        sync_to_thread=True,
        opt=contract(ConversationNotFound, NotAMember, Code(422, "invalid_cursor")),
    )
    def history(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[UUID],
        reader_id: ReaderId,
        cursor: Cursor = None,
        limit: PageSize = 30,
    ) -> MessagePage:
        """The conversation's history, newest first; ``next_cursor`` leads to the older
        messages. Messages you hid are left out."""
        container = container_of(request)
        before = seq_cursor(cursor)
        require_member(container, conversation_id, reader_id)
        rows, next_before = container.inbox.messages(conversation_id, reader_id, before, limit)
        return MessagePage(
            items=[message_out(r) for r in rows], next_cursor=next_seq_cursor(next_before)
        )

    @post(
        "/{conversation_id:uuid}/messages",
        operation_id="sendMessage",
        status_code=201,
        opt=contract(
            *MODERATED,
            ConversationNotFound,
            NotAMember,
            InvalidMessage,
            Code(429, "rate_limited"),
            *ATTACH_PROBLEMS,
            command="chat",
            also=(200,),
        ),
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[UUID],
        data: JSONBody[SendMessageBody],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[MessageOut]:
        """Send a message (201): a text, a picture you uploaded (``media_id``) or both. A
        retry with the same ``client_msg_id`` returns the first message (200) and sends
        nothing, even if its text differs. 404 ``media_not_found`` / 403 ``media_not_owned``
        for a picture you cannot attach; 422 ``invalid_message`` for neither text nor
        picture."""
        container = container_of(request)
        path = request.url.path

        def action() -> Response[Any] | cc.MessageRecorded:
            container.rate_limits.hit("chat_sends", str(reader_id))  # per reader, per node
            known = container.inbox.message_by_client_id(
                conversation_id, reader_id, data.client_msg_id
            )
            if known is not None:
                return Response(message_out(known), status_code=200)
            media = None
            if data.media_id is not None:
                require_member(container, conversation_id, reader_id)
                media = attach_picture(container, data.media_id, reader_id)
            command = cc.SendMessage(
                conversation_id=conversation_id,
                sender_id=reader_id,
                text=data.text,
                client_msg_id=data.client_msg_id,
                media=media,
            )
            recorded = container.chat.handle(command)
            assert isinstance(recorded, cc.MessageRecorded)
            return recorded

        def sent(done: Committed) -> Response[Any]:
            """The answer of the send that committed (so it created the message: 201)."""
            recorded = Recorded(id=conversation_id, position=done.position)
            if not inbox_includes(container, recorded):
                return chat_accepted(recorded)
            row = container.inbox.message_by_client_id(
                conversation_id, reader_id, data.client_msg_id
            )
            if row is None:  # cannot happen once the inbox includes the commit
                return chat_accepted(recorded)
            return Response(message_out(row), status_code=201, headers=chat_headers(recorded))

        def start() -> Response[Any] | Staged[Response[Any] | cc.MessageRecorded]:
            check_texts(
                container,
                reader_id,
                {"text": data.text},
                Scene.SOCIAL_LOG,
                subject=f"conversation:{conversation_id}",
            )
            return begin_idempotent(
                container,
                reader_id,
                idempotency_key,
                "POST",
                path,
                data,
                action,
                after_commit(sent),
            )

        async def wait(value: Response[Any] | cc.MessageRecorded) -> bool:
            if isinstance(value, Response):  # a known message: nothing recorded
                return True
            return await inbox_includes_async(container, value)

        def respond(value: Response[Any] | cc.MessageRecorded, consistent: bool) -> Response[Any]:
            if isinstance(value, Response):
                return value
            recorded = value
            row = container.inbox.message(recorded.message_id) if consistent else None
            if row is None:
                if recorded.created:
                    return chat_accepted(recorded, message_id=recorded.message_id, seq=recorded.seq)
                # a retry within the send window of a message the inbox has not shown yet
                row = {
                    "message_id": recorded.message_id,
                    "conversation_id": conversation_id,
                    "seq": recorded.seq,
                    "sender_id": reader_id,
                    "text": data.text,
                    "client_msg_id": data.client_msg_id,
                    "at": recorded.at,
                    "media": None,  # the first send's picture: in the history once shown
                }
            status = 201 if recorded.created else 200
            return Response(message_out(row), status_code=status, headers=chat_headers(recorded))

        staged = await run_command(container, start)
        if isinstance(staged, Response):
            return staged
        return await respond_when(container, staged, wait, respond)

    @post(
        "/{conversation_id:uuid}/read",
        operation_id="markRead",
        status_code=200,
        opt=contract(ConversationNotFound, NotAMember, command="chat"),
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[UUID],
        data: JSONBody[ReadBody],
        reader_id: ReaderId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[ConversationOut]:
        """Read receipt: you have read up to message ``seq`` ``up_to`` (capped at the last
        message; going backwards changes nothing). Returns your view of the conversation."""
        container = container_of(request)
        path = request.url.path

        def respond(recorded: Recorded, consistent: bool) -> Response[Any]:
            row = container.inbox.conversation(conversation_id, reader_id) if consistent else None
            if row is None:
                return chat_accepted(recorded)
            return Response(conversation_out(row), status_code=200, headers=chat_headers(recorded))

        def action() -> Recorded:
            command = cc.MarkRead(
                conversation_id=conversation_id, reader_id=reader_id, up_to=data.up_to
            )
            return container.chat.handle(command)

        def recover(done: Committed) -> Response[Any]:  # a recovery: rare
            recorded = Recorded(id=conversation_id, position=done.position)
            return respond(recorded, inbox_includes(container, recorded))

        staged = await run_command(
            container,
            begin_idempotent,
            container,
            reader_id,
            idempotency_key,
            "POST",
            path,
            data,
            action,
            after_commit(recover),
        )
        if isinstance(staged, Response):
            return staged
        return await respond_when(
            container, staged, lambda recorded: inbox_includes_async(container, recorded), respond
        )

    @post(
        "/{conversation_id:uuid}/messages/{message_id:uuid}/hide",
        operation_id="hideMessage",
        status_code=204,
        sync_to_thread=True,
        opt=contract(ConversationNotFound, NotAMember, MessageNotFound, command="chat"),
    )
    def hide(
        self,
        request: Request[Any, Any, Any],
        conversation_id: FromPath[UUID],
        message_id: FromPath[UUID],
        reader_id: ReaderId,
    ) -> Response[None]:
        """Hide a message from your own history (the peer still sees it). 204; hiding
        twice is fine; 404 ``message_not_found``."""
        container = container_of(request)
        require_member(container, conversation_id, reader_id)
        row = container.inbox.message(message_id)
        if row is None or row["conversation_id"] != conversation_id:
            raise MessageNotFound
        command = cc.HideMessage(
            conversation_id=conversation_id, reader_id=reader_id, message_id=message_id
        )
        recorded, consistent = execute_chat(container, command)
        if not consistent:
            return chat_accepted(recorded)
        return Response(None, status_code=204, headers=chat_headers(recorded))


__all__ = [
    "ConversationController",
    "ConversationOut",
    "MessageOut",
    "execute_chat",
    "open_loan_conversation",
    "require_member",
]
