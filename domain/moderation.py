"""Content security, in the domain's terms: the port every content check implements.

A reader's text is checked before the command that carries it is recorded. A check gives
each text a ``Verdict``: ``pass``, ``review`` (accepted and recorded, and a
``ContentFlagged`` record marks it for an operator) or ``reject`` (refused:
``ContentRejected``, nothing is recorded), with a ``label`` saying why (``abuse``, ``ad``…).

The ``Scene`` of a text is WeChat msgSecCheck v2's (场景: 1 资料, 2 评论, 3 论坛, 4 社交日志;
https://developers.weixin.qq.com/miniprogram/dev/server/API/sec-center/sec-check/api_msgseccheck.html):

==============================================  ===============  ======================
text                                            scene            when WeChat cannot judge
==============================================  ===============  ======================
nickname                                        PROFILE (1)      the *fields* policy
loan request note, decline reason               COMMENT (2)      the *messages* policy
book title, author, publisher, summary, tags    FORUM (3)        the *fields* policy
chat and room messages                          SOCIAL_LOG (4)   the *messages* policy
==============================================  ===============  ======================

A check that cannot give a verdict (WeChat down, out of quota, no openId for the writer)
raises ``ContentCheckUnavailable``; the policy of the scene decides: fail open (accept,
unchecked) or fail closed (refuse for now, ``retry_after`` seconds).

Implementations live outside the domain (``api.adapters.moderation``): a local word list
and WeChat's msgSecCheck. They are blocking: the caller runs them in a worker thread,
never on an event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Literal, Protocol
from uuid import UUID

import msgspec

from domain.errors import DomainError, Invalid

Suggestion = Literal["pass", "review", "reject"]
_SEVERITY: dict[str, int] = {"pass": 0, "review": 1, "reject": 2}


class Scene(IntEnum):
    """Where a text appears (msgSecCheck v2's ``scene``)."""

    PROFILE = 1
    COMMENT = 2
    FORUM = 3
    SOCIAL_LOG = 4

    @property
    def label(self) -> str:
        """``profile`` | ``comment`` | ``forum`` | ``social_log`` (metrics, records)."""
        return self.name.lower()

    @property
    def is_message(self) -> bool:
        """Comments and social logs follow the *messages* outage policy; profile and forum
        fields the *fields* one."""
        return self in (Scene.COMMENT, Scene.SOCIAL_LOG)


class Verdict(msgspec.Struct, frozen=True):
    """A check's answer for one text: ``suggest`` and why (``label``; "" when it passed)."""

    suggest: Suggestion = "pass"
    label: str = ""

    @property
    def severity(self) -> int:
        return _SEVERITY[self.suggest]


PASS = Verdict()


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The most severe verdict (reject > review > pass); ``PASS`` for none."""
    return max(verdicts, key=lambda v: v.severity, default=PASS)


class ContentCheck(Protocol):
    """A content check: one ``Verdict`` per text, in order. Blocking (call it from a worker
    thread). Raises ``ContentCheckUnavailable`` when it cannot judge."""

    name: str
    """``local`` | ``wechat``: recorded with each flag."""

    def check(self, texts: Sequence[str], scene: Scene, author: UUID) -> list[Verdict]: ...


class ContentFlagged(msgspec.Struct, frozen=True, kw_only=True):
    """A text accepted with a ``review`` verdict, for an operator to look at."""

    reader_id: UUID
    scene: Scene
    field: str
    text: str
    label: str
    provider: str
    subject: str | None = None
    """What the text belongs to, e.g. ``conversation:<id>``, ``book:<id>``, ``loan:<id>``."""


class ContentRejected(Invalid):
    """The content check refused this text."""

    code = "content_rejected"

    def __init__(self, field: str = "text", label: str = "") -> None:
        why = f" ({label})" if label else ""
        super().__init__(f"The content check refused the {field}{why}; nothing was recorded.")
        self.field = field
        self.label = label


class ContentCheckUnavailable(DomainError):
    """The content check could not judge the text, and the policy of its scene is to refuse
    it for now. Not a business rule: the HTTP layer answers 503 with ``Retry-After``."""

    code = "content_check_unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 30) -> None:
        super().__init__(message or "The content check is unavailable; try again later.")
        self.retry_after = retry_after


__all__ = [
    "PASS",
    "ContentCheck",
    "ContentCheckUnavailable",
    "ContentFlagged",
    "ContentRejected",
    "Scene",
    "Suggestion",
    "Verdict",
    "worst",
]
