"""``moderation``: what the content check costs a command, per text.

Local (``LIUDONG_MODERATION=local``)
    The built-in word list (``WordListCheck``) over a generated corpus of reader texts: chat
    lines of 2–80 characters (Chinese, English, mixed, emoji), loan notes, book summaries of
    up to 2,000 characters; one in twenty contains a listed word, obfuscated (spaces,
    punctuation, full-width letters). Each text is timed alone (``perf_counter_ns``) through
    ``Moderator.check_texts`` (the policy and the Prometheus counters included): figures
    ``moderation.local_p50`` / ``_p99`` in microseconds per text, and the bare matcher
    (``WordListCheck.verdict``) beside them.

WeChat (``LIUDONG_MODERATION=wechat``)
    ``WeChatContentCheck`` from a worker thread, through the client's own event loop
    (``WeChatApiThread``), over HTTP to the fake WeChat on loopback (``tests.wechat_fake``,
    which answers at once): what our side of a msgSecCheck costs, without WeChat's own
    latency (tens of milliseconds from a server in China, more from abroad).

Target: the local check of a chat-sized text (≤ 80 characters, most texts) stays far below
a command's own cost (~1 ms): ≤ 100 µs at p99. Longer texts cost about 0.07 µs a character
more (the Unicode pass over them, ``re`` in C).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any
from uuid import uuid4

from bench.common import Target, log, percentile

_CHINESE = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"  # noqa: E501
_ENGLISH = [
    "the",
    "book",
    "is",
    "great",
    "can",
    "i",
    "borrow",
    "it",
    "next",
    "week",
    "thanks",
    "see",
    "you",
    "at",
    "library",
    "return",
    "on",
    "sunday",
    "please",
    "keep",
    "dry",
    "chapter",
    "ending",
    "author",
    "story",
]
_EMOJI = "📚😀👍🙏✨"
_OBFUSCATED = ["傻 逼", "f.u.c.k", "ＦＵＣＫ", "操!你!妈", "加 微 信", "motherfucker", "傻🐶逼"]


def corpus(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.70:  # chat
            length = rng.randint(2, 80)
        elif kind < 0.90:  # notes, reasons
            length = rng.randint(20, 300)
        else:  # summaries
            length = rng.randint(300, 2000)
        parts: list[str] = []
        size = 0
        while size < length:
            pick = rng.random()
            if pick < 0.6:
                piece = "".join(rng.choices(_CHINESE, k=rng.randint(2, 12)))
            elif pick < 0.95:
                piece = " ".join(rng.choices(_ENGLISH, k=rng.randint(1, 5)))
            else:
                piece = rng.choice(_EMOJI)
            parts.append(piece)
            size += len(piece) + 1
        if rng.random() < 0.05:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(_OBFUSCATED))
        texts.append("，".join(parts)[: max(length, 2)])
    return texts


def _timed_us(fn: Any, texts: list[str]) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter_ns
    for text in texts:
        started = clock()
        fn(text)
        samples.append((clock() - started) / 1000.0)
    return samples


def run(ctx: Any) -> None:
    from api.adapters.moderation import Moderator, WeChatContentCheck, WordListCheck
    from api.adapters.wechat_api import MemoryTokenStore, WeChatApi, WeChatApiThread
    from domain.moderation import ContentRejected, Scene
    from tests.wechat_fake import running_fake_wechat

    texts = corpus(ctx.size(50_000, 2_000))
    check = WordListCheck.from_file()
    moderator = Moderator(check, None)
    author = uuid4()

    def through_moderator(text: str) -> None:
        with contextlib.suppress(ContentRejected):
            moderator.check_texts(author, {"text": text}, Scene.SOCIAL_LOG)

    for text in texts[:500]:  # warm up
        through_moderator(text)
    bare = _timed_us(check.verdict, texts)
    full = _timed_us(through_moderator, texts)
    flagged = sum(1 for t in texts if check.verdict(t).suggest != "pass")
    mean_chars = sum(len(t) for t in texts) / len(texts)
    by_size: dict[str, dict[str, float | int]] = {}
    for name, low, high in (("chat ≤80", 0, 80), ("81–300", 81, 300), ("301–2000", 301, 2000)):
        own = [us for us, t in zip(full, texts, strict=True) if low <= len(t) <= high]
        by_size[name] = {
            "n": len(own),
            "p50_us": round(percentile(own, 50) or 0, 1),
            "p99_us": round(percentile(own, 99) or 0, 1),
        }
    params = {
        "texts": len(texts),
        "mean_chars": round(mean_chars, 1),
        "words": check.size,
        "flagged": flagged,
        "by_length": by_size,
        "bare_matcher_p50_us": round(percentile(bare, 50) or 0, 2),
        "bare_matcher_p99_us": round(percentile(bare, 99) or 0, 2),
        "call": "Moderator.check_texts(author, {'text': text}, Scene.SOCIAL_LOG)",
    }
    p50, p99 = percentile(full, 50), percentile(full, 99)
    log(
        f"moderation local: p50 {p50:.1f} µs, p99 {p99:.1f} µs per text ({len(texts):,} "
        f"texts, mean {mean_chars:.0f} chars, {flagged} flagged); {by_size}"
    )
    ctx.emit("moderation.local_p50", p50, "µs", params=params)
    ctx.emit("moderation.local_p99", p99, "µs", params=params)
    ctx.emit(
        "moderation.local_chat_p99",
        by_size["chat ≤80"]["p99_us"],
        "µs",
        target=Target("<=", 100),
        params={"texts": by_size["chat ≤80"]["n"]},
    )

    calls = ctx.size(2_000, 200)
    with running_fake_wechat() as fake:
        fake.rules = {"坏话": ("risky", 20003)}
        api = WeChatApi(
            fake.appid, fake.secret, store=MemoryTokenStore(), base_url=fake.base_url, timeout=5.0
        )
        runner = WeChatApiThread(api)
        try:
            remote = WeChatContentCheck(runner, lambda _reader: "oBench", timeout=5.0)
            samples: list[float] = []

            def worker() -> None:  # a request handler's thread, as in the server
                for text in texts[:20]:
                    remote.check([text[:2500]], Scene.SOCIAL_LOG, author)
                for i in range(calls):
                    text = texts[i % len(texts)][:2500]
                    started = time.perf_counter_ns()
                    remote.check([text], Scene.SOCIAL_LOG, author)
                    samples.append((time.perf_counter_ns() - started) / 1000.0)

            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
        finally:
            runner.close()
    if len(samples) != calls:
        raise RuntimeError(f"{len(samples)} of {calls} msgSecCheck calls finished")
    w50, w99 = percentile(samples, 50), percentile(samples, 99)
    log(f"moderation wechat (fake, loopback): p50 {w50:.0f} µs, p99 {w99:.0f} µs per text")
    wparams = {
        "calls": calls,
        "token_refreshes": api.refreshes,
        "server": "tests.wechat_fake on 127.0.0.1 (answers at once)",
        "call": "WeChatContentCheck.check([text], Scene.SOCIAL_LOG, author) from a worker thread",
    }
    ctx.emit("moderation.wechat_fake_p50", w50, "µs", params=wparams)
    ctx.emit("moderation.wechat_fake_p99", w99, "µs", params=wparams)
