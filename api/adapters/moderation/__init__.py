"""Content security adapters (the port is ``domain.moderation``).

- ``wordlist.WordListCheck``: a local word list (``LIUDONG_MODERATION=local``).
- ``wechat.WeChatContentCheck``: WeChat msgSecCheck v2 (``LIUDONG_MODERATION=wechat``).
- ``moderator.Moderator``: the policy (reject / review / outage) and the metrics.
- ``flags.FlagStore``: ``ContentFlagged`` records for an operator.
- ``chat.ModeratedChat``: the check on the WebSocket send path.
"""

from api.adapters.moderation.chat import ModeratedChat
from api.adapters.moderation.flags import FlagStore
from api.adapters.moderation.moderator import Moderator, texts_of
from api.adapters.moderation.wechat import WeChatContentCheck
from api.adapters.moderation.wordlist import WordListCheck, WordListError, normalize

__all__ = [
    "FlagStore",
    "ModeratedChat",
    "Moderator",
    "WeChatContentCheck",
    "WordListCheck",
    "WordListError",
    "normalize",
    "texts_of",
]
