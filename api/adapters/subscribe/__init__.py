"""Subscribe messages (订阅消息) for readers who are away: the templates file
(``templates``), the grants and the notifier's tables (``store``), and the notifier
(``notifier``)."""

from api.adapters.subscribe.notifier import Notifier, NotifierStats
from api.adapters.subscribe.store import FORGOTTEN_TOPIC, Claim, Grants, Outbox
from api.adapters.subscribe.templates import (
    RenderError,
    Template,
    TemplateConfigError,
    Templates,
    fit,
)

__all__ = [
    "FORGOTTEN_TOPIC",
    "Claim",
    "Grants",
    "Notifier",
    "NotifierStats",
    "Outbox",
    "RenderError",
    "Template",
    "TemplateConfigError",
    "Templates",
    "fit",
]
