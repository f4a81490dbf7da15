"""The ``Reader`` aggregate: one person using the mini-program.

The id is derived from the WeChat openId (``reader_id_for``) so that a login finds the same
reader without a lookup table; the openId itself is never stored in an event.

Erasure (crypto-shredding, ``docs/SECURITY.md``): ``Reader.Forgotten`` records that the reader
asked to be forgotten. The nickname and avatar in this reader's events are stored encrypted
with the reader's own key (``domain.personal``); the key is destroyed with the erasure, after
which those fields read as ``FORGOTTEN_NICKNAME`` / ``""``.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import ReaderNotFound

FORGOTTEN_NICKNAME = "已注销"
"""What a forgotten reader is shown as ("account closed"), everywhere."""

READER_NAMESPACE = uuid5(NAMESPACE_URL, "https://liudong.example/readers")


def reader_id_for(open_id: str) -> UUID:
    """The reader id of a WeChat openId: ``uuid5(READER_NAMESPACE, "wechat:" + open_id)``."""
    return uuid5(READER_NAMESPACE, "wechat:" + open_id)


class Reader(Aggregate):
    """A reader. Events: ``Registered``, ``ProfileChanged`` (``avatar_media_id`` since
    pictures: absent from older events, read as ``None``), ``Forgotten``."""

    forgotten = False

    @event("Registered")
    def __init__(self, id: UUID, nickname: str, avatar_url: str) -> None:  # noqa: A002
        self.nickname = nickname
        self.avatar_url = avatar_url

    avatar_media_id: str | None = None
    """The uploaded picture the avatar shows (``domain.media``), ``None`` for an outside URL."""

    def change_profile(
        self, nickname: str | None, avatar_url: str | None, avatar_media_id: str | None = None
    ) -> None:
        """Change nickname and/or avatar; a change to the same values records nothing.
        ``avatar_media_id``: the avatar is that uploaded picture (``avatar_url`` is then its
        URL); a new ``avatar_url`` without it is an outside picture. Raises
        ``ReaderNotFound`` for a forgotten reader."""
        if self.forgotten:
            raise ReaderNotFound

        new_nickname = self.nickname if nickname is None else nickname
        new_avatar = self.avatar_url if avatar_url is None else avatar_url
        new_media = self.avatar_media_id if avatar_url is None else avatar_media_id
        if (new_nickname, new_avatar, new_media) != (
            self.nickname,
            self.avatar_url,
            self.avatar_media_id,
        ):
            if new_media is None:  # events before pictures have no avatar_media_id
                self._profile_changed(nickname=new_nickname, avatar_url=new_avatar)
            else:
                self._profile_changed(
                    nickname=new_nickname, avatar_url=new_avatar, avatar_media_id=new_media
                )

    def forget(self) -> None:
        """Record ``Forgotten`` (once: forgetting a forgotten reader records nothing)."""
        if not self.forgotten:
            self._forgotten()

    @event("Forgotten")
    def _forgotten(self) -> None:
        """``Reader.Forgotten``: the reader asked to be forgotten (``DELETE /v1/me``). It
        carries no personal data; the reader's key is destroyed once it is recorded, so
        every personal field of their earlier events reads as erased from then on."""
        self.nickname = FORGOTTEN_NICKNAME
        self.avatar_url = ""
        self.avatar_media_id = None
        self.forgotten = True

    @event("ProfileChanged")
    def _profile_changed(
        self, nickname: str, avatar_url: str, avatar_media_id: str | None = None
    ) -> None:
        self.nickname = nickname
        self.avatar_url = avatar_url
        self.avatar_media_id = avatar_media_id
