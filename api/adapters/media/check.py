"""WeChat's image check of uploaded pictures: mediaCheckAsync v2 (音视频内容安全识别).

``WeChatMediaCheck.submit`` sends a stored picture's public URL to
``POST /wxa/media_check_async`` (``media_type`` 2, ``version`` 2, the uploader's openId,
the scene of its purpose) and records the ``trace_id`` WeChat answers on the picture
(``MediaStore.submitted``). WeChat fetches the picture itself and pushes its verdict within
30 minutes to the message push endpoint (``Event`` ``wxa_media_check``); ``verdict_of_push``
reads that push. The push names only the ``trace_id``, which maps back to the picture
(``MediaStore.checked``).

The public URL is the presigned URL of the object (S3) or ``LIUDONG_MEDIA_BASE_URL`` +
``/v1/media/{id}`` (disk): without either WeChat cannot fetch the picture, and it is not
submitted (status ``failed``, logged). Nor is it without the uploader's openId (a reader who
has not used the mini-program in the last two hours), nor when WeChat fails
(``WeChatError``) or is too slow: a submission never fails the upload.

Source: https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/sec-center/sec-check/mediaCheckAsync.html
(frequency limit: 2,000 calls a minute, 200,000 a day per AppID; at most 10 MB a file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from api.adapters.media.store import MediaInfo, MediaStore
from api.adapters.wechat import WeChatError
from api.adapters.wechat_api import WeChatApiThread
from domain.moderation import Scene

__all__ = ["SCENE_OF_PURPOSE", "WeChatMediaCheck", "verdict_of_push"]

log = logging.getLogger(__name__)

SCENE_OF_PURPOSE: dict[str | None, Scene] = {
    "avatar": Scene.PROFILE,
    "cover": Scene.FORUM,
    "chat": Scene.SOCIAL_LOG,
    "room": Scene.SOCIAL_LOG,
    None: Scene.SOCIAL_LOG,
}
"""mediaCheckAsync's ``scene`` for an upload's ``purpose`` (unknown purpose: social log)."""


def public_url(store: MediaStore, info: MediaInfo) -> str | None:
    """A URL WeChat can fetch the picture from: presigned (S3), or the configured absolute
    ``base_url`` (disk); ``None`` when there is neither."""
    presigned = store.storage.presigned_url(info.key, store.config.presign_expiry)
    if presigned is not None:
        return presigned
    if info.url.startswith(("https://", "http://")):
        return info.url
    return None


def verdict_of_push(fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(trace_id, status)`` of a ``wxa_media_check`` push, status ``pass`` | ``review`` |
    ``risky``; ``None`` when the push names no trace id or no verdict. Version 2 carries
    ``result.suggest``; version 1 ``isrisky`` (1: risky)."""
    trace_id = str(fields.get("trace_id") or "")
    if not trace_id:
        return None
    result = fields.get("result")
    if isinstance(result, Mapping):
        suggest = str(result.get("suggest") or "")
        if suggest in ("pass", "review", "risky"):
            return trace_id, suggest
    isrisky = fields.get("isrisky")
    if isrisky is not None and str(isrisky) in ("0", "1"):
        return trace_id, "risky" if str(isrisky) == "1" else "pass"
    return None


class WeChatMediaCheck:
    """See the module docstring. ``openids(reader_id)``: the reader's openId or ``None``;
    ``timeout``: seconds for one submission (retries included)."""

    name = "wechat"

    def __init__(
        self,
        runner: WeChatApiThread,
        openids: Callable[[UUID], str | None],
        *,
        timeout: float = 5.0,
    ) -> None:
        self.runner = runner
        self.openids = openids
        self.timeout = timeout

    def submit(
        self, store: MediaStore, info: MediaInfo, reader_id: UUID, purpose: str | None
    ) -> str | None:
        """Submit ``info`` (uploaded by ``reader_id`` for ``purpose``); returns the trace
        id, ``None`` when it could not be submitted (recorded as ``failed``, logged).
        Blocking: call it from a worker thread."""
        url = public_url(store, info)
        open_id = self.openids(reader_id)
        trace_id: str | None = None
        if url is None:
            log.warning(
                "media check: %s not submitted: WeChat cannot fetch it "
                "(set LIUDONG_MEDIA_BASE_URL or use S3)",
                info.id,
            )
        elif open_id is None:
            log.warning("media check: %s not submitted: its uploader has no openId", info.id)
        else:
            scene = SCENE_OF_PURPOSE.get(purpose, Scene.SOCIAL_LOG)
            try:
                trace_id = self.runner.call(
                    self.runner.api.media_check_async,
                    openid=open_id,
                    scene=int(scene),
                    media_url=url,
                    timeout=self.timeout,
                )
            except (WeChatError, TimeoutError) as exc:
                log.warning("media check: %s not submitted: %s", info.id, exc)
        store.submitted(info.id, trace_id)
        return trace_id
