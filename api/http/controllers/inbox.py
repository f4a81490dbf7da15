"""``/v1/inbox``: the reader's durable feed (loan news, chat messages, read receipts).

Items carry a per-reader ``seq`` (1, 2, 3… without gaps). Two ways to page, one position:

- a list like any other: pass ``next_cursor`` back as ``cursor`` until it is ``null``;
- a resume feed: keep the last ``seq`` you saw and ask for what follows with ``after=`` (the
  same number the WebSocket's ``?after=`` and ``resume`` take).

``head`` is the reader's last seq: more items follow while it is above the last item's seq
(``next_cursor`` is then not ``null``). The item kinds and their ``data`` are described in
``projections/inbox/model.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter

from api.http.controllers.common import container_of
from api.http.errors import ApiError
from api.http.openapi import Code, contract
from api.http.params import Cursor, ReaderId, next_seq_cursor, seq_cursor
from api.http.schemas import Out

After = Annotated[
    int | None,
    QueryParameter(
        ge=0,
        description="Resume: the last seq you have (0: from the start). Not with `cursor`.",
    ),
]
InboxLimit = Annotated[int, QueryParameter(ge=1, le=200, description="Items per page (1–200).")]


class InboxItemOut(Out, frozen=True):
    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]


class InboxOut(Out, frozen=True):
    items: list[InboxItemOut]
    next_cursor: str | None
    """The ``cursor`` of the next page; ``null`` when this page reaches ``head``."""
    head: int
    """The reader's last seq: more items follow when it is above the last item's seq."""
    unread: int
    """Unread chat messages over all the reader's conversations."""


class InboxController(Controller):
    path = "/v1/inbox"
    tags = ["inbox"]

    @get(
        "/", operation_id="getInbox", sync_to_thread=True, opt=contract(Code(422, "invalid_cursor"))
    )
    def items(
        self,
        request: Request[Any, Any, Any],
        reader_id: ReaderId,
        cursor: Cursor = None,
        after: After = None,
        limit: InboxLimit = 50,
    ) -> InboxOut:
        """Your inbox items after a position, oldest first, plus ``head`` (your last seq)
        and your unread message count. The position is ``cursor`` (a ``next_cursor``) or
        ``after`` (a seq you kept, as for the WebSocket), not both; neither: from the
        start."""
        if cursor and after is not None:
            raise ApiError(
                422,
                "validation_failed",
                "Send `cursor` or `after`, not both.",
                errors=[
                    {
                        "key": "after",
                        "source": "query",
                        "message": "not allowed together with cursor",
                    }
                ],
            )
        start = seq_cursor(cursor) if cursor else (after or 0)
        inbox = container_of(request).inbox
        rows, head = inbox.items(reader_id, after=start, limit=limit)
        last = rows[-1]["seq"] if rows else start
        return InboxOut(
            items=[
                InboxItemOut(seq=r["seq"], kind=r["kind"], at=r["at"], data=r["data"]) for r in rows
            ],
            next_cursor=next_seq_cursor(last) if rows and last < head else None,
            head=head,
            unread=inbox.unread(reader_id),
        )


__all__ = ["InboxController", "InboxItemOut", "InboxOut"]
