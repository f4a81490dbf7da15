"""The WeChat content check: msgSecCheck v2 (文本内容安全识别).

``POST /wxa/msg_sec_check?access_token=…`` with ``{"version": 2, "openid", "scene",
"content"}``; the answer's ``result.suggest`` ``pass`` / ``review`` / ``risky`` becomes the
verdict ``pass`` / ``review`` / ``reject``, its ``result.label`` the label (10001 → ``ad``,
20003 → ``abuse``…). ``content`` holds at most 2,500 characters: a longer text is checked in
overlapping chunks (a word across a chunk boundary is still seen) and gets the most severe
verdict. The texts and chunks of one check are sent concurrently, on the ``WeChatApiThread``'s
event loop, within ``timeout`` seconds in all.

msgSecCheck needs the *writer's* openId (a reader who used the mini-program in the last two
hours): ``openids(reader_id)`` gives it (``api.adapters.openids``). Without one, or when
WeChat fails (``WeChatError``: busy, unavailable, quota, configuration) or is too slow, the
check raises ``ContentCheckUnavailable`` and the caller's outage policy decides.

Source: https://developers.weixin.qq.com/miniprogram/dev/server/API/sec-center/sec-check/api_msgseccheck.html
(frequency limit: 4,000 calls a minute, 2,000,000 a day per AppID).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from uuid import UUID

from api.adapters.wechat import WeChatError, WeChatQuotaExceeded
from api.adapters.wechat_api import SecCheckResult, WeChatApi, WeChatApiThread
from domain.moderation import ContentCheckUnavailable, Scene, Verdict, worst

__all__ = ["MAX_CONTENT", "WECHAT_LABELS", "WeChatContentCheck", "chunks", "verdict_of"]

MAX_CONTENT = 2500
OVERLAP = 100

WECHAT_LABELS = {
    100: "",
    10001: "ad",
    20001: "politics",
    20002: "porn",
    20003: "abuse",
    20006: "crime",
    20008: "fraud",
    20012: "vulgar",
    20013: "copyright",
    21000: "other",
}
_SUGGESTIONS = {"pass": "pass", "review": "review", "risky": "reject"}


def chunks(text: str, size: int = MAX_CONTENT, overlap: int = OVERLAP) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, each starting ``overlap``
    characters before the previous one ended."""
    if len(text) <= size:
        return [text]
    step = size - overlap
    return [text[start : start + size] for start in range(0, len(text) - overlap, step)]


def verdict_of(result: SecCheckResult) -> Verdict:
    suggest = _SUGGESTIONS[result.suggest]
    if suggest == "pass":
        return Verdict()
    return Verdict(suggest, WECHAT_LABELS.get(result.label, str(result.label)))  # type: ignore[arg-type]


class WeChatContentCheck:
    """``ContentCheck`` through msgSecCheck (see the module docstring)."""

    name = "wechat"

    def __init__(
        self,
        runner: WeChatApiThread,
        openids: Callable[[UUID], str | None],
        *,
        timeout: float = 3.0,
    ) -> None:
        self.runner = runner
        self.openids = openids
        self.timeout = timeout

    def check(self, texts: Sequence[str], scene: Scene, author: UUID) -> list[Verdict]:
        if not texts:
            return []
        open_id = self.openids(author)
        if not open_id:
            raise ContentCheckUnavailable(
                f"no WeChat openId is known for reader {author} (not logged in with WeChat)"
            )
        try:
            return self.runner.call(
                _check_all, self.runner.api, list(texts), int(scene), open_id, timeout=self.timeout
            )
        except WeChatQuotaExceeded as exc:
            raise ContentCheckUnavailable(str(exc), retry_after=exc.retry_after) from exc
        except WeChatError as exc:
            raise ContentCheckUnavailable(f"msgSecCheck failed: {exc}") from exc
        except TimeoutError as exc:
            raise ContentCheckUnavailable(
                f"msgSecCheck gave no verdict within {self.timeout} s"
            ) from exc


async def _check_all(api: WeChatApi, texts: list[str], scene: int, open_id: str) -> list[Verdict]:
    pieces = [chunks(text) for text in texts]
    results = await asyncio.gather(
        *(
            api.msg_sec_check(openid=open_id, scene=scene, content=piece)
            for text_pieces in pieces
            for piece in text_pieces
        )
    )
    verdicts: list[Verdict] = []
    start = 0
    for text_pieces in pieces:
        own = results[start : start + len(text_pieces)]
        start += len(text_pieces)
        verdicts.append(worst([verdict_of(result) for result in own]))
    return verdicts
