"""``GET/POST /v1/wechat/push``: the mini-program's message push (消息推送) from WeChat.

``GET`` is WeChat's URL verification (answer: ``echostr``); ``POST`` a message or event,
verified, decrypted in safe mode and handed to its handler (``api.bootstrap.wechat``'s
``PUSH_HANDLERS``), answered ``success`` — also when nobody handles it (logged). A wrong
signature or a timestamp outside ``LIUDONG_WECHAT_PUSH_WINDOW`` is a 403, a malformed push
a 400, and the endpoint answers 404 while ``LIUDONG_WECHAT_PUSH_TOKEN`` is unset. The
protocol: ``api.adapters.wechat_push``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from litestar import MediaType, Request, Response, get, post

from api.adapters.wechat_push import PushError, PushVerifier, dispatch
from api.bootstrap.wechat import WeChatPlatform
from api.http.controllers.common import container_of
from api.http.errors import ApiError

log = logging.getLogger(__name__)

PATH = "/v1/wechat/push"


def _platform(request: Request[Any, Any, Any]) -> WeChatPlatform:
    platform = container_of(request).wechat
    if platform is None or platform.push is None:
        raise ApiError(404, "not_found", "WeChat message push is not configured here.")
    return platform


def _verifier(request: Request[Any, Any, Any]) -> PushVerifier:
    verifier = _platform(request).push
    assert verifier is not None
    return verifier


def _refused(exc: PushError) -> ApiError:
    log.warning("wechat push refused: %s", exc.message)
    return ApiError(exc.status, exc.code, exc.message)


# WeChat's servers call these (signed, see docs/DEPLOY.md), not clients: not in the client API's
# OpenAPI document, whose query-parameter check does not apply to WeChat's parameters either.
@get(PATH, operation_id="verifyWeChatPush", include_in_schema=False, media_type=MediaType.TEXT)
async def verify_push(request: Request[Any, Any, Any]) -> Response[str]:
    """WeChat's server URL verification: ``signature`` over the Token, ``timestamp`` and
    ``nonce``; answers ``echostr``."""
    verifier = _verifier(request)
    try:
        echostr = verifier.verify_url(dict(request.query_params))
    except PushError as exc:
        raise _refused(exc) from exc
    return Response(echostr, media_type=MediaType.TEXT)


@post(
    PATH,
    operation_id="receiveWeChatPush",
    include_in_schema=False,
    status_code=200,
    media_type=MediaType.TEXT,
)
async def receive_push(request: Request[Any, Any, Any]) -> Response[str]:
    """A message or event pushed by WeChat (JSON or XML; plaintext or safe mode)."""
    platform = _platform(request)
    assert platform.push is not None
    body = await request.body()
    try:
        message = platform.push.open(dict(request.query_params), body)
    except PushError as exc:
        raise _refused(exc) from exc
    container = container_of(request)
    await anyio.to_thread.run_sync(dispatch, platform.push_handlers, message, container)
    return Response("success", media_type=MediaType.TEXT)


__all__ = ["receive_push", "verify_push"]
