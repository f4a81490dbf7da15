"""Composition of the WeChat platform pieces: the server API client, the readers' openIds,
the content check and its policy, the message push endpoint's verifier and handlers.

``WeChatPlatform.start(settings, database_url)`` runs first in ``Container.build``, before
any pool: it loads the local word list or starts the server API client (its own thread,
``WeChatApiThread``) and, in production, gets an access token at once, so a refused AppID,
AppSecret or server address (``WeChatConfigError``) stops the start-up with a message naming
the settings instead of failing the first reader's request. ``attach(pool)`` then builds the
pieces that use the read-model pool. ``close()`` stops the client's thread.

The server API client is started when something needs it: ``LIUDONG_MODERATION=wechat``
(the default in production), subscribe-message templates (``LIUDONG_SUBSCRIBE_TEMPLATES``,
read and validated here: a bad file stops the start-up with ``TemplateConfigError``), or the
image check of uploaded pictures (``LIUDONG_MEDIA_CHECK=wechat``, by default when the text
check is WeChat's): ``platform.media_check`` (``api.adapters.media.check``) submits each new
upload to mediaCheckAsync, and the ``wxa_media_check`` push handler (``api.bootstrap.media``)
takes a ``risky`` picture down. ``platform.api`` (``call`` from worker threads, ``await
acall`` from the event loop). The subscribe-message notifier itself runs with the realtime
pieces (``api.bootstrap.realtime``: it needs the readers' presence); ``platform.grants`` /
``platform.outbox`` are its tables.

Message push (``POST /v1/wechat/push``): ``platform.push`` verifies and decrypts
(``api.adapters.wechat_push``; ``None`` while ``LIUDONG_WECHAT_PUSH_TOKEN`` is unset) and
``PUSH_HANDLERS`` maps an ``Event`` (or ``MsgType``) to its handler, called with the message
and the container in a worker thread. Adding one is one line there
(``"wxa_media_check": media_check_result`` is the media check's asynchronous verdicts).
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import ConnectionPool

from api.adapters.media.check import WeChatMediaCheck
from api.adapters.moderation import FlagStore, Moderator, WeChatContentCheck, WordListCheck
from api.adapters.openids import OpenIdDirectory
from api.adapters.subscribe import Grants, Outbox, Templates
from api.adapters.wechat import WeChatConfigError, WeChatError
from api.adapters.wechat_api import PgTokenStore, WeChatApi, WeChatApiThread
from api.adapters.wechat_push import PushHandler, PushVerifier
from api.bootstrap.media import media_check_result
from api.bootstrap.settings import Settings

__all__ = ["PUSH_HANDLERS", "WeChatPlatform"]

log = logging.getLogger(__name__)

PUSH_HANDLERS: dict[str, PushHandler] = {
    # Event (or MsgType) → handler(message, container); unknown ones are acknowledged and
    # logged.
    "wxa_media_check": media_check_result,  # mediaCheckAsync's verdicts (api.bootstrap.media)
}


class WeChatPlatform:
    """See the module docstring. ``api`` is ``None`` when nothing needs WeChat's server API;
    ``moderation`` and ``openids`` exist once ``attach`` ran."""

    def __init__(
        self, settings: Settings, api: WeChatApiThread | None, local: WordListCheck | None
    ) -> None:
        self.settings = settings
        self.api = api
        self._local = local
        self.openids: OpenIdDirectory | None = None
        self.moderation: Moderator | None = None
        self.media_check: WeChatMediaCheck | None = None
        self.push: PushVerifier | None = PushVerifier.from_settings(settings)
        self.push_handlers: dict[str, PushHandler] = dict(PUSH_HANDLERS)
        self.templates: Templates | None = None
        """Subscribe-message templates (``LIUDONG_SUBSCRIBE_TEMPLATES``), if configured."""
        self.grants: Grants | None = None
        self.outbox: Outbox | None = None

    @classmethod
    def start(cls, settings: Settings, database_url: str) -> WeChatPlatform:
        """Raises ``WordListError`` (an unreadable ``LIUDONG_MODERATION_WORDLIST``),
        ``ValueError`` (``LIUDONG_WECHAT_PUSH_AES_KEY`` is not an EncodingAESKey),
        ``TemplateConfigError`` (``LIUDONG_SUBSCRIBE_TEMPLATES`` unreadable or invalid) and
        ``WeChatConfigError`` (appid/secret unset, or refused by WeChat in production)."""
        PushVerifier.from_settings(settings)  # a bad EncodingAESKey stops the start-up
        templates = (
            Templates.from_file(settings.subscribe_templates)
            if settings.subscribe_templates is not None
            else None
        )
        provider = settings.moderation_provider
        local = None
        if provider == "local":
            local = WordListCheck.from_file(settings.moderation_wordlist)
        api: WeChatApiThread | None = None
        if (
            provider == "wechat"
            or templates is not None
            or settings.media_check_provider == "wechat"
        ):
            api = WeChatApiThread(WeChatApi.from_settings(settings, PgTokenStore(database_url)))
            if settings.env == "production":
                try:
                    api.call(api.api.check_credentials, timeout=4 * settings.wechat_timeout + 5)
                except WeChatConfigError as exc:
                    api.close()
                    raise WeChatConfigError(
                        f"WeChat refused this server's credentials at start-up: {exc}",
                        errcode=exc.errcode,
                        errmsg=exc.errmsg,
                    ) from exc
                except (WeChatError, TimeoutError) as exc:  # WeChat down: start anyway
                    log.warning("wechat: no access token at start-up (%s); will retry", exc)
        platform = cls(settings, api, local)
        platform.templates = templates
        return platform

    def attach(self, pool: ConnectionPool[Any]) -> WeChatPlatform:
        settings = self.settings
        self.openids = OpenIdDirectory(pool)
        self.grants = Grants(pool)
        if self.templates is not None:
            self.outbox = Outbox(pool, self.templates)
        check: WordListCheck | WeChatContentCheck | None = self._local
        if self.api is not None and settings.moderation_provider == "wechat":
            check = WeChatContentCheck(
                self.api, self.openids.open_id, timeout=settings.moderation_timeout
            )
        self.moderation = Moderator(
            check,
            FlagStore(pool),
            messages_outage=settings.moderation_outage_messages,
            fields_outage=settings.moderation_outage_fields,
        )
        log.info("moderation: %s", self.moderation.provider)
        if self.api is not None and settings.media_check_provider == "wechat":
            self.media_check = WeChatMediaCheck(
                self.api, self.openids.open_id, timeout=settings.moderation_timeout + 2
            )
        log.info("media check: %s", "wechat" if self.media_check else "off (pictures pass)")
        return self

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
