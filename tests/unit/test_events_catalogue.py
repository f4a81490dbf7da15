"""docs/EVENTS.md lists every stored event type with its current ``class_version``."""

from __future__ import annotations

import re
from pathlib import Path

from eventsourcing.domain import Aggregate

from domain.book import Book
from domain.chat import Conversation, Room
from domain.loan import Loan
from domain.media import Media
from domain.reader import Reader

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "EVENTS.md"
AGGREGATES = (Reader, Book, Loan, Conversation, Room, Media)


def event_classes() -> dict[str, int]:
    """``{"Book.Published": 2, …}``: the events each aggregate records (not the library's
    generic ``Created`` base, unless it is the aggregate's creation event as in ``Room``)."""
    found = {}
    for aggregate in AGGREGATES:
        creation = type(_creation_event(aggregate))
        for name, value in vars(aggregate).items():
            if (
                isinstance(value, type)
                and issubclass(value, Aggregate.Event)
                and name != "Event"
                and (name != "Created" or value is creation)
            ):
                found[f"{aggregate.__name__}.{name}"] = getattr(value, "class_version", 1)
    return found


def _creation_event(aggregate: type[Aggregate]) -> Aggregate.Event:
    """The event a new aggregate records first (built through its decorated ``__init__``)."""
    from uuid import uuid4

    samples = {
        Reader: {"nickname": "n", "avatar_url": ""},
        Book: {
            "owner_id": uuid4(),
            "isbn": "9787536692930",
            "title": "t",
            "author": "",
            "publisher": "",
            "tags": [],
            "cover_url": "",
            "summary": "",
        },
        Loan: {
            "book_id": uuid4(),
            "borrower_id": uuid4(),
            "lender_id": uuid4(),
            "note": "",
            "contact": None,
        },
        Conversation: {"members": [uuid4(), uuid4()]},
        Room: {"name": "r", "title": "t"},
        Media: {"media_id": "0" * 64, "reason": "risky"},
    }
    instance = aggregate(id=uuid4(), **samples[aggregate])  # type: ignore[call-arg]
    (first,) = instance.collect_events()
    return first


def documented() -> dict[str, int]:
    text = CATALOGUE.read_text(encoding="utf-8")
    return {m[1]: int(m[2]) for m in re.finditer(r"^#### `([\w.]+)` \(v(\d+)\)", text, re.M)}


def test_every_event_is_in_the_catalogue_with_its_version() -> None:
    assert event_classes() == documented()


def test_the_catalogue_knows_published_is_version_3() -> None:
    assert documented()["Book.Published"] == 3
