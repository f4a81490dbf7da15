"""``/v1/inbox``: the reader's durable feed (loan news, chat messages, read receipts).

Items carry a per-reader ``seq`` (1, 2, 3… without gaps); a client keeps the last one it saw
and asks for what follows (``after=``), over REST or when resuming its WebSocket. The item
kinds and their ``data`` are described in ``projections/inbox.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter

from api.http.controllers.common import container_of
from api.http.params import ReaderId
from api.http.schemas import Out

After = Annotated[
    int, QueryParameter(ge=0, description="the last seq you have (0: from the start)")
]
InboxLimit = Annotated[int, QueryParameter(ge=1, le=200, description="items per page (1–200)")]


class InboxItemOut(Out, frozen=True):
    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]


class InboxOut(Out, frozen=True):
    items: list[InboxItemOut]
    head: int
    """The reader's last seq: more items follow when it is above the last item's seq."""
    unread: int
    """Unread chat messages over all the reader's conversations."""


class InboxController(Controller):
    path = "/v1/inbox"
    tags = ["inbox"]

    @get("/", operation_id="getInbox", sync_to_thread=True)
    def items(
        self, request: Request[Any, Any, Any], reader_id: ReaderId, after: After = 0,
        limit: InboxLimit = 50,
    ) -> InboxOut:  # fmt: skip
        """Your inbox items with ``seq`` above ``after``, oldest first, plus ``head`` (your
        last seq) and your unread message count."""
        inbox = container_of(request).inbox
        rows, head = inbox.items(reader_id, after=after, limit=limit)
        return InboxOut(
            items=[InboxItemOut(seq=r["seq"], kind=r["kind"], at=r["at"], data=r["data"])
                   for r in rows],
            head=head,
            unread=inbox.unread(reader_id),
        )  # fmt: skip


__all__ = ["InboxController", "InboxItemOut", "InboxOut"]
