"""The inbox: each reader's feed, conversations and messages, from the Library and Chat logs.

- ``model``: the read model's tables (``DDL``), item kinds and their ``data``, shared by
  the two ways of writing it;
- ``projection``: ``InboxProjection`` (event by event, ``apply``; ``deliver``) and the hand-over
  of a committed page's items to listeners (the realtime relay);
- ``page``: ``InboxPage``, a page folded in memory and written set-wise (``fold_page``);
- ``queries``: ``InboxQueries``, what the API and the gateway read.
"""

from projections.inbox.model import DDL
from projections.inbox.page import InboxPage
from projections.inbox.projection import InboxProjection, ItemListener, Listener, deliver
from projections.inbox.queries import InboxQueries

__all__ = [
    "DDL",
    "InboxPage",
    "InboxProjection",
    "InboxQueries",
    "ItemListener",
    "Listener",
    "deliver",
]
