"""The content check without I/O: the word list, its normal form, the policy (reject / review
/ outage), the WebSocket wrapper and the msgSecCheck mapping."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prometheus_client import REGISTRY

from api.adapters.moderation import ModeratedChat, Moderator, WordListCheck, WordListError
from api.adapters.moderation.wechat import chunks, verdict_of
from api.adapters.moderation.wordlist import parse_wordlist
from api.adapters.wechat_api import SecCheckResult
from api.http.moderation import check_texts
from domain import chat_commands as cc
from domain.moderation import (
    ContentCheckUnavailable,
    ContentFlagged,
    ContentRejected,
    Scene,
    Verdict,
    worst,
)


@pytest.fixture(scope="module")
def words() -> WordListCheck:
    return WordListCheck.from_file()


# -- the normal form ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("ＦＵＣＫ", "fuck"),  # full-width → NFKC
        ("F.u.C.k!", "fuck"),
        ("f u c k", "fuck"),
        ("傻 逼", "傻逼"),
        ("傻-_-逼", "傻逼"),
        ("傻🐶逼", "傻逼"),
        ("f\u0336u\u0336c\u0336k\u0336", "fuck"),  # combining strike-through
        ("Straße", "strasse"),  # case folding
        ("第1本书", "第1本书"),
    ],
)
def test_normal_form(text: str, normal: str) -> None:
    from api.adapters.moderation import normalize

    assert normalize(text) == normal


# -- the built-in list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "你真是个傻逼",
        "傻 逼",
        "傻.逼",
        "ＦＵＣＫ you",
        "what the f.u.c.k",
        "Motherfucker!",
        "操！你！妈",
        "kill   yourself",
    ],
)
def test_abuse_is_rejected(words: WordListCheck, text: str) -> None:
    assert words.verdict(text) == Verdict("reject", "abuse")


@pytest.mark.parametrize(
    ("text", "label"),
    [("加微信 abc123 便宜出书", "ad"), ("代开发票", "fraud"), ("你脑残吧", "abuse")],
)
def test_review_words_are_flagged(words: WordListCheck, text: str, label: str) -> None:
    assert words.verdict(text) == Verdict("review", label)


@pytest.mark.parametrize(
    "text",
    ["这本《三体》很好看，周末还你", "Classic assistant passes", "", "   ", "Scunthorpe"],
)
def test_clean_texts_pass(words: WordListCheck, text: str) -> None:
    assert words.verdict(text) == Verdict()


def test_the_most_severe_word_wins(words: WordListCheck) -> None:
    assert words.verdict("加微信，傻逼") == Verdict("reject", "abuse")
    assert words.check(["ok", "加微信", "傻逼"], Scene.COMMENT, uuid4()) == [
        Verdict(),
        Verdict("review", "ad"),
        Verdict("reject", "abuse"),
    ]


def test_a_custom_list(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# comment\n\nspoiler|review|spoiler\nSPOILER|reject|worse\nbad word\n")
    check = WordListCheck.from_file(path)
    assert check.size == 2
    assert check.verdict("no s-p-o-i-l-e-r-s") == Verdict("reject", "worse")  # most severe kept
    assert check.verdict("a BAD WORD") == Verdict("reject", "abuse")


def test_list_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(WordListError, match=r"words:2: verdict 'maybe'"):
        parse_wordlist(["ok", "bad|maybe"], "words")
    with pytest.raises(WordListError, match="cannot read"):
        WordListCheck.from_file(tmp_path / "missing.txt")


def test_an_empty_list_passes_everything() -> None:
    assert WordListCheck([]).verdict("傻逼") == Verdict()


# -- msgSecCheck mapping and chunks ------------------------------------------------------------


def test_wechat_suggestions_and_labels() -> None:
    assert verdict_of(SecCheckResult("pass", 100)) == Verdict()
    assert verdict_of(SecCheckResult("review", 10001)) == Verdict("review", "ad")
    assert verdict_of(SecCheckResult("risky", 20003)) == Verdict("reject", "abuse")
    assert verdict_of(SecCheckResult("risky", 99999)) == Verdict("reject", "99999")


def test_chunks_cover_the_text_with_overlap() -> None:
    text = "".join(chr(0x4E00 + i % 2000) for i in range(6000))
    pieces = chunks(text)
    assert [len(p) for p in pieces] == [2500, 2500, 1200]
    assert pieces[1].startswith(text[2400:2500])  # 100 characters of overlap
    assert pieces[-1].endswith(text[-50:])
    assert chunks("short") == ["short"]
    assert chunks("x" * 2500) == ["x" * 2500]


def test_worst() -> None:
    assert worst([]) == Verdict()
    assert worst([Verdict("review", "ad"), Verdict(), Verdict("reject", "x")]).suggest == "reject"


# -- the policy ----------------------------------------------------------------------------------


class StubCheck:
    name = "stub"

    def __init__(self, answer: Verdict | ContentCheckUnavailable) -> None:
        self.answer = answer
        self.calls: list[tuple[list[str], Scene]] = []

    def check(self, texts: Sequence[str], scene: Scene, author: UUID) -> list[Verdict]:
        self.calls.append((list(texts), scene))
        if isinstance(self.answer, ContentCheckUnavailable):
            raise self.answer
        return [self.answer for _ in texts]


class StubFlags:
    def __init__(self) -> None:
        self.recorded: list[ContentFlagged] = []

    def record(self, flag: ContentFlagged) -> int:
        self.recorded.append(flag)
        return len(self.recorded)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reject_raises_before_anything_is_recorded() -> None:
    flags = StubFlags()
    moderator = Moderator(StubCheck(Verdict("reject", "abuse")), flags)  # type: ignore[arg-type]
    before = sample("liudong_moderation_checks_total", verdict="reject", scene="forum")
    with pytest.raises(ContentRejected) as caught:
        moderator.check_texts(uuid4(), {"title": "t", "summary": None, "tags": ["a"]}, Scene.FORUM)
    assert (caught.value.code, caught.value.field, caught.value.label) == (
        "content_rejected",
        "title",
        "abuse",
    )
    assert flags.recorded == []
    assert sample("liudong_moderation_checks_total", verdict="reject", scene="forum") == before + 2


def test_review_is_accepted_and_flagged() -> None:
    flags, author = StubFlags(), uuid4()
    check = StubCheck(Verdict("review", "ad"))
    moderator = Moderator(check, flags)  # type: ignore[arg-type]
    verdict = moderator.check_texts(
        author, {"text": "加微信", "blank": "  "}, Scene.SOCIAL_LOG, subject="conversation:x"
    )
    assert verdict == Verdict("review", "ad")
    assert check.calls == [(["加微信"], Scene.SOCIAL_LOG)]  # blank texts are not sent
    assert flags.recorded == [
        ContentFlagged(
            reader_id=author,
            scene=Scene.SOCIAL_LOG,
            field="text",
            text="加微信",
            label="ad",
            provider="stub",
            subject="conversation:x",
        )
    ]


def test_tags_are_checked_as_one_text() -> None:
    check = StubCheck(Verdict())
    Moderator(check, StubFlags()).check_texts(  # type: ignore[arg-type]
        uuid4(), {"tags": ["科幻", "经典"]}, Scene.FORUM
    )
    assert check.calls == [(["科幻，经典"], Scene.FORUM)]


def test_nothing_to_check_calls_nothing() -> None:
    check = StubCheck(Verdict("reject"))
    assert Moderator(check, None).check_texts(uuid4(), {"a": None, "b": ""}, Scene.PROFILE) == (  # type: ignore[arg-type]
        Verdict()
    )
    assert check.calls == []
    assert Moderator(None, None).check_texts(uuid4(), {"a": "傻逼"}, Scene.PROFILE) == Verdict()


def test_an_outage_fails_open_for_messages_and_closed_for_fields() -> None:
    down = ContentCheckUnavailable("WeChat is down", retry_after=42)
    moderator = Moderator(StubCheck(down), StubFlags())  # type: ignore[arg-type]
    open_before = sample("liudong_moderation_errors_total", provider="stub", outcome="fail_open")
    closed_before = sample(
        "liudong_moderation_errors_total", provider="stub", outcome="fail_closed"
    )
    for scene in (Scene.SOCIAL_LOG, Scene.COMMENT):
        assert moderator.check_texts(uuid4(), {"text": "hi"}, scene) == Verdict()
    for scene in (Scene.PROFILE, Scene.FORUM):
        with pytest.raises(ContentCheckUnavailable) as caught:
            moderator.check_texts(uuid4(), {"nickname": "hi"}, scene)
        assert caught.value.retry_after == 42
    assert sample("liudong_moderation_errors_total", provider="stub", outcome="fail_open") == (
        open_before + 2
    )
    assert sample("liudong_moderation_errors_total", provider="stub", outcome="fail_closed") == (
        closed_before + 2
    )


def test_outage_policies_are_settings() -> None:
    down = ContentCheckUnavailable("down")
    moderator = Moderator(
        StubCheck(down),
        None,
        messages_outage="fail_closed",  # type: ignore[arg-type]
        fields_outage="fail_open",
    )
    with pytest.raises(ContentCheckUnavailable):
        moderator.check_texts(uuid4(), {"text": "hi"}, Scene.SOCIAL_LOG)
    assert moderator.check_texts(uuid4(), {"nickname": "hi"}, Scene.PROFILE) == Verdict()


# -- the WebSocket path and the REST helper ---------------------------------------------------


class RecordingChat:
    def __init__(self) -> None:
        self.handled: list[object] = []

    def handle(self, command: object) -> str:
        self.handled.append(command)
        return "recorded"

    def room(self, room_id: UUID) -> str:
        return f"room {room_id}"


def test_moderated_chat_checks_sends_only() -> None:
    chat = RecordingChat()
    moderator = Moderator(WordListCheck.from_file(), StubFlags())  # type: ignore[arg-type]
    moderated = ModeratedChat(chat, lambda: moderator)
    conversation, sender = uuid4(), uuid4()
    bad = cc.SendMessage(
        conversation_id=conversation, sender_id=sender, text="傻逼", client_msg_id="m1"
    )
    with pytest.raises(ContentRejected):
        moderated.handle(bad)
    room_bad = cc.SendRoomMessage(
        room_id=uuid4(), sender_id=sender, text="f u c k", client_msg_id="r1"
    )
    with pytest.raises(ContentRejected):
        moderated.handle(room_bad)
    assert chat.handled == []
    good = cc.SendMessage(
        conversation_id=conversation, sender_id=sender, text="你好", client_msg_id="m2"
    )
    read = cc.MarkRead(conversation_id=conversation, reader_id=sender, up_to=1)
    assert moderated.handle(good) == "recorded"
    assert moderated.handle(read) == "recorded"
    assert chat.handled == [good, read]
    room_id = uuid4()
    assert moderated.room(room_id) == f"room {room_id}"  # everything else is the Chat's
    assert ModeratedChat(chat, lambda: None).handle(bad) == "recorded"  # no moderator: no check


async def test_check_texts_refuses_to_block_an_event_loop() -> None:
    class Container:
        class wechat:  # noqa: N801
            moderation = Moderator(WordListCheck([]), None)

    with pytest.raises(RuntimeError, match="worker thread"):
        check_texts(Container(), uuid4(), {"text": "hi"}, Scene.SOCIAL_LOG)
