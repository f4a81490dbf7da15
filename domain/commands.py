"""Commands of the Library context: imperative, immutable msgspec Structs.

The API builds them from request bodies (adding the authenticated actor), the demo loader and
the WebSocket gateway build the same types; ``domain.library.Library.handle`` executes them.
Limits here are the contract's limits (the API turns a violation into a 422).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec

from domain.media import MediaId

# PostgreSQL text cannot hold NUL, and no legitimate text needs it: refuse it at the edge.
NO_NUL = r"^[^\x00]*$"

Nickname = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]
Url = Annotated[str, msgspec.Meta(max_length=1024, pattern=NO_NUL)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_NUL)]
Name = Annotated[str, msgspec.Meta(max_length=300, pattern=NO_NUL)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=NO_NUL)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=20)]
Summary = Annotated[str, msgspec.Meta(max_length=5000, pattern=NO_NUL)]
Note = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL)]
Isbn13 = Annotated[str, msgspec.Meta(pattern=r"^97[89][0-9]{10}$")]


class Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of all commands."""


class Contact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the lender can reach the borrower. Personal data: shown to the lender only."""

    wechat_id: Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=32, pattern=NO_NUL)] | None = None


class RegisterReader(Command, frozen=True, kw_only=True):
    reader_id: UUID
    nickname: Nickname
    avatar_url: Url = ""


class ChangeProfile(Command, frozen=True, kw_only=True):
    """``avatar_media_id``: the avatar is that uploaded picture, and ``avatar_url`` its URL
    (the API checks that the reader uploaded it and fills the URL in)."""

    reader_id: UUID
    nickname: Nickname | None = None
    avatar_url: Url | None = None
    avatar_media_id: MediaId | None = None


class ForgetReader(Command, frozen=True, kw_only=True):
    """Erase the reader's personal data (``Reader.Forgotten``; ``docs/SECURITY.md``)."""

    reader_id: UUID


class PublishBook(Command, frozen=True, kw_only=True):
    book_id: UUID
    owner_id: UUID
    isbn: Isbn13
    title: Title
    author: Name = ""
    publisher: Name = ""
    tags: Tags = []
    cover_url: Url = ""
    summary: Summary = ""
    cover_media_id: MediaId | None = None
    """The cover is that uploaded picture (``cover_url`` its URL; the API checks the owner
    uploaded it and fills the URL in)."""


class ReviseBook(Command, frozen=True, kw_only=True):
    book_id: UUID
    actor_id: UUID
    title: Title | None = None
    author: Name | None = None
    publisher: Name | None = None
    tags: Tags | None = None
    cover_url: Url | None = None
    summary: Summary | None = None
    cover_media_id: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?$")] | None = None
    """A new uploaded cover (``cover_url`` its URL), ``""``: none any more."""


class WithdrawBook(Command, frozen=True, kw_only=True):
    book_id: UUID
    actor_id: UUID


class RelistBook(Command, frozen=True, kw_only=True):
    book_id: UUID
    actor_id: UUID


class RequestLoan(Command, frozen=True, kw_only=True):
    loan_id: UUID
    book_id: UUID
    borrower_id: UUID
    note: Note = ""
    contact: Contact | None = None


class ApproveLoan(Command, frozen=True, kw_only=True):
    loan_id: UUID
    actor_id: UUID


class DeclineLoan(Command, frozen=True, kw_only=True):
    loan_id: UUID
    actor_id: UUID
    reason: Note = ""


class CancelLoan(Command, frozen=True, kw_only=True):
    loan_id: UUID
    actor_id: UUID


class StartReturn(Command, frozen=True, kw_only=True):
    loan_id: UUID
    actor_id: UUID


class ConfirmReturn(Command, frozen=True, kw_only=True):
    loan_id: UUID
    actor_id: UUID


class RemoveMedia(Command, frozen=True, kw_only=True):
    """Record that picture ``media_id`` was taken down (``reason``: ``"risky"`` for WeChat's
    image check). The caller deletes the files; recording it twice records nothing."""

    media_id: MediaId
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_NUL)]


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """What a command recorded: the aggregate it concerns and the log position of its last
    event (``None`` when the command changed nothing). ``position`` lets a reader wait for
    the projections (read-your-writes)."""

    id: UUID
    position: int | None
