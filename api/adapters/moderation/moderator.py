"""The content check's policy: what a verdict, or no verdict, means for a command.

``Moderator.check_texts(author, {field: text}, scene)`` runs before a command is recorded:

- every non-empty text goes to the ``ContentCheck`` at once (one call);
- ``reject`` → ``ContentRejected`` (422 ``content_rejected``; a WebSocket ``error`` frame):
  the command is not run, nothing is recorded;
- ``review`` → accepted; a ``ContentFlagged`` record per text marks it for an operator;
- the check unavailable (``ContentCheckUnavailable``) → the scene's outage policy:
  ``fail_open`` accepts the text unchecked (logged), ``fail_closed`` refuses it for now
  (``ContentCheckUnavailable``: 503 with ``Retry-After``).

Prometheus (prometheus-client's default registry, exposed by ``GET /metrics``)::

    liudong_moderation_checks_total{verdict, scene}   texts judged (pass, review, reject)
    liudong_moderation_errors_total{provider, outcome}  checks that could not judge;
                                                       outcome fail_open | fail_closed
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from uuid import UUID

from prometheus_client import Counter

from api.adapters.moderation.flags import FlagStore
from domain.moderation import (
    ContentCheck,
    ContentCheckUnavailable,
    ContentFlagged,
    ContentRejected,
    Scene,
    Verdict,
    worst,
)

__all__ = ["CHECKS", "ERRORS", "Moderator", "OutagePolicy", "texts_of"]

log = logging.getLogger(__name__)

OutagePolicy = Literal["fail_open", "fail_closed"]
FieldValue = str | Sequence[str] | None

CHECKS = Counter(
    "liudong_moderation_checks",
    "Texts judged by the content check, by verdict and scene.",
    ["verdict", "scene"],
)
ERRORS = Counter(
    "liudong_moderation_errors",
    "Content checks that could not judge (WeChat down, quota, no openId), by provider and by "
    "what the outage policy did.",
    ["provider", "outcome"],
)
TAG_SEPARATOR = "，"
_checked: dict[tuple[str, Scene], Any] = {}


def _count_check(suggest: str, scene: Scene) -> None:
    """``CHECKS.labels(suggest, scene).inc()``, the labelled child looked up once."""
    child = _checked.get((suggest, scene))
    if child is None:
        child = _checked[(suggest, scene)] = CHECKS.labels(suggest, scene.label)
    child.inc()


def texts_of(fields: Mapping[str, FieldValue]) -> dict[str, str]:
    """The non-blank texts of ``fields``; a list (tags) becomes one text."""
    texts: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else TAG_SEPARATOR.join(value)
        if text.strip():
            texts[name] = text
    return texts


class Moderator:
    """See the module docstring. ``check``: the ``ContentCheck`` (``None``: moderation off,
    everything passes). ``flags``: where ``review`` verdicts are recorded. ``outage``: the
    policy of *message* scenes (comment, social log) and of *field* scenes (profile, forum)."""

    def __init__(
        self,
        check: ContentCheck | None,
        flags: FlagStore | None,
        *,
        messages_outage: OutagePolicy = "fail_open",
        fields_outage: OutagePolicy = "fail_closed",
    ) -> None:
        self.check = check
        self.flags = flags
        self.messages_outage = messages_outage
        self.fields_outage = fields_outage

    @property
    def provider(self) -> str:
        return self.check.name if self.check is not None else "off"

    def policy(self, scene: Scene) -> OutagePolicy:
        return self.messages_outage if scene.is_message else self.fields_outage

    def check_texts(
        self,
        author: UUID,
        fields: Mapping[str, FieldValue],
        scene: Scene,
        *,
        subject: str | None = None,
    ) -> Verdict:
        """Judge ``fields`` (name → text, list of texts, or None) written by ``author``.
        Returns the overall verdict (``pass`` or ``review``); raises ``ContentRejected`` or
        ``ContentCheckUnavailable`` (see the module docstring). Blocking."""
        texts = texts_of(fields)
        if self.check is None or not texts:
            return Verdict()
        names = list(texts)
        try:
            verdicts = self.check.check([texts[n] for n in names], scene, author)
        except ContentCheckUnavailable as exc:
            outcome = self.policy(scene)
            ERRORS.labels(self.check.name, outcome).inc()
            if outcome == "fail_closed":
                log.warning(
                    "moderation: %s unavailable, %s refused: %s",
                    self.check.name,
                    scene.label,
                    exc.message,
                )
                raise
            log.warning(
                "moderation: %s unavailable, %s accepted unchecked: %s",
                self.check.name,
                scene.label,
                exc.message,
            )
            return Verdict()
        if len(verdicts) != len(names):  # pragma: no cover - a broken adapter
            raise RuntimeError(f"{self.check.name} gave {len(verdicts)} verdicts for {len(names)}")
        for verdict in verdicts:
            _count_check(verdict.suggest, scene)
        for name, verdict in zip(names, verdicts, strict=True):
            if verdict.suggest == "reject":
                raise ContentRejected(name, verdict.label)
        for name, verdict in zip(names, verdicts, strict=True):
            if verdict.suggest == "review" and self.flags is not None:
                self.flags.record(
                    ContentFlagged(
                        reader_id=author,
                        scene=scene,
                        field=name,
                        text=texts[name],
                        label=verdict.label,
                        provider=self.check.name,
                        subject=subject,
                    )
                )
        return worst(verdicts)
