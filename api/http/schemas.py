"""Request and response bodies of the REST API (v1): msgspec Structs, decoded strictly.

Unknown fields are refused; limits are part of the contract (a violation is a 422)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from domain.commands import NO_NUL, Contact, Nickname, Note, Summary, Tags, Url
from domain.loan import ENDED_STATUSES
from domain.media import MEDIA_ID_PATTERN

Text300 = Annotated[str, msgspec.Meta(max_length=300, pattern=NO_NUL)]
ISBN_PATTERN = r"^(?:ISBN(?:-1[03])?:? ?)?[0-9０-９XxＸｘ][0-9０-９XxＸｘ \-‐‑‒–—―−﹣－]{9,16}$"
"""What an ISBN looks like before its check digit is verified: an optional ``ISBN`` label,
then 10 or 13 digits (full-width too, as typed with a Chinese input method; a final ``X`` of
an ISBN-10), with hyphens (any dash) or spaces between them. It is documented, and enforced
by ``api.http.controllers.books.valid_isbn`` (422 ``invalid_isbn``, as for a wrong check
digit)."""
IsbnInput = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, extra_json_schema={"pattern": ISBN_PATTERN})
]


def _refuse_nul(value: Any, path: str) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: a NUL that reached an event would stop
    the projections that copy it (a poison event), so it is refused at the door."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"`{path}` must not contain NUL (U+0000) characters")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_nul(item, f"{path}[{i}]")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _refuse_nul(getattr(value, name), f"{path}.{name}" if path else name)


MediaIdText = Annotated[str, msgspec.Meta(pattern=MEDIA_ID_PATTERN)]
"""A picture's id (``POST /v1/media`` answered it): 64 lower-case hex characters."""


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies. No string in a body may contain a NUL character."""

    def __post_init__(self) -> None:
        _refuse_nul(self, "")


class LoginBody(Body, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ProfilePatch(Body, frozen=True):
    """``avatar_media_id``: a picture you uploaded (``POST /v1/media``) as your avatar
    (``avatar_url`` is then its URL; do not send both)."""

    nickname: Nickname | None = None
    avatar_url: Url | None = None
    avatar_media_id: MediaIdText | None = None


class PublishBody(Body, frozen=True):
    """``cover_media_id``: a picture you uploaded (``POST /v1/media``) as the cover
    (``cover_url`` is then its URL)."""

    isbn: IsbnInput
    title: Text300 | None = None
    author: Text300 | None = None
    publisher: Text300 | None = None
    tags: Tags | None = None
    cover_url: Url | None = None
    summary: Summary | None = None
    cover_media_id: MediaIdText | None = None


class RevisePatch(Body, frozen=True):
    """``cover_media_id``: a picture you uploaded as the new cover (``cover_url`` becomes
    its URL), ``""`` to drop the uploaded cover (and ``cover_url`` unless one is sent); a
    ``cover_url`` alone replaces an uploaded cover by that outside picture."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_NUL)] | None = None
    author: Text300 | None = None
    publisher: Text300 | None = None
    tags: Tags | None = None
    cover_url: Url | None = None
    summary: Summary | None = None
    cover_media_id: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?$")] | None = None


class LoanRequestBody(Body, frozen=True):
    note: Note = ""
    contact: Contact | None = None


class DeclineBody(Body, frozen=True):
    reason: Note = ""


# -- responses --------------------------------------------------------------------------------


class Out(msgspec.Struct, frozen=True, kw_only=True):
    """Base of response bodies."""


class ReaderOut(Out, frozen=True):
    id: UUID
    nickname: str
    avatar_url: str


TemplateId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class Grant(Body, frozen=True):
    """One-time grants of one template the reader accepted in ``wx.requestSubscribeMessage``
    (one per ``accept`` answer; a client may add them up)."""

    template_id: TemplateId
    count: Annotated[int, msgspec.Meta(ge=1, le=50)] = 1


class GrantsBody(Body, frozen=True):
    grants: Annotated[list[Grant], msgspec.Meta(min_length=1, max_length=20)]


class SubscriptionOut(Out, frozen=True):
    """A configured template: the inbox kinds it announces and the grants left (each
    subscribe message uses one; ask the reader again with ``wx.requestSubscribeMessage``
    when it reaches 0)."""

    template_id: str
    kinds: list[str]
    remaining: int


class SubscriptionsOut(Out, frozen=True):
    items: list[SubscriptionOut]


class PictureOut(Out, frozen=True):
    """A picture attached to a message (``domain.media.picture_view``): ``url`` and
    ``thumb_url`` are paths on this API's origin (``/v1/media/{id}``, ``…/thumb``), both
    ``null`` with ``removed: true`` once the picture was taken down (show a placeholder);
    ``width`` / ``height`` in pixels (0: unknown)."""

    id: str
    url: str | None
    thumb_url: str | None
    width: int
    height: int
    removed: bool = False


class LoginOut(Out, frozen=True):
    token: str
    expires_at: datetime
    reader: ReaderOut


class Availability(Out, frozen=True):
    free: int
    total: int


class BookOut(Out, frozen=True):
    id: UUID
    isbn: str
    title: str
    author: str
    publisher: str
    tags: list[str]
    cover_url: str
    summary: str
    status: Literal["available", "on_loan", "withdrawn"]
    owner: ReaderOut
    published_at: datetime
    updated_at: datetime
    borrower: ReaderOut | None = None  # shown to the owner only
    loan_id: UUID | None = None  # shown to the owner only
    cover: PictureOut | None = None
    """The cover when it is a picture uploaded here (``cover_media_id``): its ``url`` is
    ``cover_url``, ``thumb_url`` the thumbnail's (size 0: see the picture itself). ``null``
    for an outside ``cover_url`` or none. A cover taken down (WeChat's image check) is
    cleared: ``cover_url`` ``""``."""


class BookRef(Out, frozen=True):
    id: UUID
    title: str
    isbn: str
    cover_url: str


class LoanOut(Out, frozen=True):
    id: UUID
    book: BookRef
    borrower: ReaderOut
    lender: ReaderOut
    status: Literal["requested", "approved", "declined", "cancelled", "returning", "returned"]
    note: str
    requested_at: datetime
    updated_at: datetime
    contact: dict[str, str] | None = None  # the lender's eyes only
    decline_reason: str | None = None
    approved_at: datetime | None = None
    declined_at: datetime | None = None
    cancelled_at: datetime | None = None
    return_started_at: datetime | None = None
    returned_at: datetime | None = None


NextCursor = Annotated[
    str | None,
    msgspec.Meta(
        description="The `cursor` of the next page; null on the last page. Opaque: pass it "
        "back as it is."
    ),
]


class BookPage(Out, frozen=True):
    items: list[BookOut]
    next_cursor: NextCursor


class LoanPage(Out, frozen=True):
    items: list[LoanOut]
    next_cursor: NextCursor


class Accepted(Out, frozen=True):
    """202: the command was recorded (at ``position`` of its log, also in the
    ``Liudong-Position`` header) but the read model has not caught up within the consistency
    timeout; a GET shows the effect a moment later."""

    id: UUID
    """The aggregate the command acted on (book, loan, reader, conversation)."""
    position: int | None
    status: Literal["accepted"]
    message_id: UUID | msgspec.UnsetType = msgspec.UNSET
    """The message a send recorded (sends only)."""
    seq: int | msgspec.UnsetType = msgspec.UNSET
    """Its seq in the conversation (sends only)."""


class IsbnOut(Out, frozen=True):
    isbn: str
    isbn10: str | None
    title: str
    author: str | None
    publisher: str | None
    published_year: int | None
    language: str | None
    tags: list[str]
    cover_url: str | None
    summary: str | None
    availability: Availability


class HistoryEvent(Out, frozen=True):
    version: int
    type: str
    at: datetime
    data: dict[str, Any]


def reader_out(row: dict[str, Any], prefix: str = "") -> ReaderOut:
    """The reader a read-model row names: ``{prefix}id``, ``{prefix}nickname``,
    ``{prefix}avatar_url`` (``""`` when absent or erased)."""
    return ReaderOut(
        id=row[f"{prefix}id"] if prefix else row["id"],
        nickname=row.get(f"{prefix}nickname") or "",
        avatar_url=row.get(f"{prefix}avatar_url") or "",
    )


_UPLOADED = re.compile(r"/v1/media/([0-9a-f]{64})$")


def uploaded_cover(cover_url: str) -> PictureOut | None:
    """The ``cover`` of a book whose ``cover_url`` is a picture uploaded here."""
    match = _UPLOADED.search(cover_url or "")
    if match is None:
        return None
    return PictureOut(
        id=match.group(1), url=cover_url, thumb_url=cover_url + "/thumb", width=0, height=0
    )


def book_out(row: dict[str, Any], viewer: UUID | None) -> BookOut:
    is_owner = viewer is not None and viewer == row["owner_id"]
    borrower = None
    if is_owner and row.get("borrower_id"):
        borrower = reader_out(row, "borrower_")
    return BookOut(
        id=row["id"],
        isbn=row["isbn"],
        title=row["title"],
        author=row["author"],
        publisher=row["publisher"],
        tags=list(row["tags"]),
        cover_url=row["cover_url"],
        cover=uploaded_cover(row["cover_url"]),
        summary=row["summary"],
        status=row["status"],
        owner=reader_out(row, "owner_"),
        published_at=row["published_at"],
        updated_at=row["updated_at"],
        borrower=borrower,
        loan_id=row["loan_id"] if is_owner else None,
    )


def loan_out(row: dict[str, Any], viewer: UUID) -> LoanOut:
    return LoanOut(
        id=row["id"],
        book=BookRef(
            id=row["book_id"],
            title=row["book_title"],
            isbn=row["book_isbn"],
            cover_url=row["book_cover_url"],
        ),
        borrower=reader_out(row, "borrower_"),
        lender=reader_out(row, "lender_"),
        status=row["status"],
        note=row["note"],
        requested_at=row["requested_at"],
        updated_at=row["updated_at"],
        contact=(
            row["contact"]
            if viewer == row["lender_id"] and row["status"] not in ENDED_STATUSES
            else None
        ),
        decline_reason=row.get("decline_reason"),
        approved_at=row.get("approved_at"),
        declined_at=row.get("declined_at"),
        cancelled_at=row.get("cancelled_at"),
        return_started_at=row.get("return_started_at"),
        returned_at=row.get("returned_at"),
    )
