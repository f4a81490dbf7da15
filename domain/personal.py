"""Which fields of which domain events are personal data, whose they are, and what they read
as once erased (crypto-shredding, ``docs/SECURITY.md``).

Personal fields are stored encrypted with a key of their *subject* (the reader they are
about); when the reader is forgotten (``Reader.Forgotten``) the key is destroyed and every
such field of every earlier event reads as its ``erased`` value from then on, whoever reads
the log (the command side, a projection rebuild, a replay, an export). The encryption
itself lives outside the domain (``api.adapters.shredding``); this table is what it
follows.

``PERSONAL_FIELDS`` maps an event's qualified name (``"Loan.Requested"``) to a
``PersonalFields``: ``subject`` is the name of the field holding the subject reader's id, or
``None`` for the event's own ``originator_id`` (a ``Reader`` event); ``erased`` maps each
personal field to the value it reads as once the key is gone. A field absent from a stored
event (an older shape) is simply not there to encrypt.

Decisions (PIPL art. 47 / GDPR art. 17: erasure on request):

- ``Reader.Registered`` / ``ProfileChanged``: ``nickname``, ``avatar_url`` and, where the
  event has it, ``avatar_media_id``; erased: ``"已注销"`` (``FORGOTTEN_NICKNAME``), ``""``,
  ``None``.
- ``Loan.Requested``: ``contact`` (``{"wechat_id"?, "phone"?}``) and ``note`` (free text the
  borrower writes to the lender: it often holds a phone number or an address); their subject
  is the borrower; erased: ``None`` and ``""``.
- ``Conversation.MessageSent`` / ``Room.MessageSent``: ``text`` (what the reader wrote; a
  loan request's note is also the first message of its conversation); the subject is the
  sender; erased: ``""``.
- Not personal here: ids (pseudonymous, needed for the history to stay consistent), book
  details (about the book).

``PERSONAL_DATA_MAPPER_TOPIC``: the environment variable of an Application (Library, Chat)
naming ``factory(app) -> Mapper``, the mapper that seals these fields
(``api.bootstrap.db.eventsourcing_env`` names ``api.adapters.shredding:personal_data_mapper``);
unset (tests in memory): eventsourcing's plain mapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Mapper
from eventsourcing.utils import resolve_topic

from domain.reader import FORGOTTEN_NICKNAME

PERSONAL_DATA_MAPPER_TOPIC = "PERSONAL_DATA_MAPPER_TOPIC"


@dataclass(frozen=True)
class PersonalFields:
    """The personal fields of one event type (module docstring)."""

    subject: str | None
    erased: dict[str, Any]


_PROFILE = PersonalFields(
    subject=None,
    erased={"nickname": FORGOTTEN_NICKNAME, "avatar_url": "", "avatar_media_id": None},
)

PERSONAL_FIELDS: dict[str, PersonalFields] = {
    "Reader.Registered": _PROFILE,
    "Reader.ProfileChanged": _PROFILE,
    "Loan.Requested": PersonalFields(subject="borrower_id", erased={"contact": None, "note": ""}),
    "Conversation.MessageSent": PersonalFields(subject="sender_id", erased={"text": ""}),
    "Room.MessageSent": PersonalFields(subject="sender_id", erased={"text": ""}),
}


def personal_data_mapper(app: Any) -> Mapper[Any] | None:
    """The mapper ``PERSONAL_DATA_MAPPER_TOPIC`` names in ``app``'s environment, built for
    ``app``; ``None`` when it names none."""
    topic = app.env.get(PERSONAL_DATA_MAPPER_TOPIC)
    return resolve_topic(topic)(app) if topic else None


__all__ = [
    "PERSONAL_DATA_MAPPER_TOPIC",
    "PERSONAL_FIELDS",
    "PersonalFields",
    "personal_data_mapper",
]
