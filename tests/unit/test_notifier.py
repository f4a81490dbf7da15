"""The notifier's decisions, with an in-memory outbox: who is skipped, what one call's
outcome records (sent, refused on 43101, retried with back-off, given up), and that a crash
during the call leaves the item ``sending`` (never sent again)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from api.adapters.subscribe import Claim, Notifier, Templates
from api.adapters.wechat import WeChatBusy, WeChatError, WeChatQuotaExceeded

TEMPLATES = Templates.from_dict(
    {"template": [{"kind": "loan.requested", "template_id": "T", "data": {"thing1": "x"}}]}
)


class FakeOutbox:
    def __init__(self, reader: UUID, grants: int = 1, attempts: int = 0) -> None:
        self.templates = TEMPLATES
        self.reader = reader
        self.grants = grants
        self.attempts = attempts
        self.status = "pending"
        self.log: list[tuple[Any, ...]] = []

    def interrupted(self, older_than: float) -> int:
        return 0

    def purge(self, older_than: float) -> int:
        self.purged = older_than
        return 0

    def follow(self, source: str, chunk: int = 1000) -> tuple[int, bool]:
        return 0, False

    def due(self, limit: int = 100) -> list[dict[str, Any]]:
        if self.status != "pending":
            return []
        return [{"source": "library", "position": 1, "reader_id": self.reader}]

    def claim(self, key: tuple[str, int, UUID]) -> Claim | None:
        if self.grants == 0:
            self.status = "skipped"
            self.log.append(("skip", "no_grant"))
            return None
        self.grants -= 1
        self.attempts += 1
        self.status = "sending"
        data = {"thing1": {"value": "x"}}
        return Claim(*key, "T", "pages/x", data, self.attempts)

    def skip(self, key: Any, reason: str) -> None:
        self.status = "skipped"
        self.log.append(("skip", reason))

    def sent(self, claim: Claim) -> None:
        self.status = "sent"
        self.log.append(("sent",))

    def refused(self, claim: Claim, error: str) -> None:
        self.status, self.grants = "refused", 0
        self.log.append(("refused",))

    def retry(self, claim: Claim, error: str, delay: float) -> None:
        self.status = "retry"
        self.grants += 1
        self.log.append(("retry", delay))

    def failed(self, claim: Claim, error: str) -> None:
        self.status = "failed"
        self.grants += 1
        self.log.append(("failed", error))


def notifier(
    outbox: FakeOutbox, error: BaseException | None = None, *, online: bool = False
) -> tuple[Notifier, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    async def send(body: dict[str, Any]) -> None:
        calls.append(body)
        if error is not None:
            raise error

    return (
        Notifier(
            outbox,  # type: ignore[arg-type]
            send,
            lambda _: online,
            lambda reader: f"openid-of-{reader}",
            sources=("library",),
            max_attempts=3,
            backoff=10.0,
        ),
        calls,
    )


async def test_one_call_with_the_openid_template_page_and_data() -> None:
    outbox = FakeOutbox(uuid4())
    n, calls = notifier(outbox)
    await n.run_once()
    assert calls == [
        {
            "touser": f"openid-of-{outbox.reader}",
            "template_id": "T",
            "page": "pages/x",
            "data": {"thing1": {"value": "x"}},
            "miniprogram_state": "formal",
            "lang": "zh_CN",
        }
    ]
    assert outbox.log == [("sent",)] and outbox.grants == 0
    assert outbox.purged == 30 * 86400  # the retention, once an hour


async def test_online_readers_and_readers_without_a_grant_are_skipped() -> None:
    online = FakeOutbox(uuid4())
    n, calls = notifier(online, online=True)
    await n.run_once()
    assert (calls, online.log, online.grants) == ([], [("skip", "online")], 1)
    broke = FakeOutbox(uuid4(), grants=0)
    n, calls = notifier(broke)
    await n.run_once()
    assert (calls, broke.log) == ([], [("skip", "no_grant")])


async def test_43101_is_refused_and_the_grants_go_to_zero() -> None:
    outbox = FakeOutbox(uuid4(), grants=3)
    n, calls = notifier(outbox, WeChatError("no", errcode=43101))
    await n.run_once()
    assert len(calls) == 1 and outbox.log == [("refused",)] and outbox.grants == 0


@pytest.mark.parametrize(
    ("attempts", "error", "expected"),
    [
        (0, WeChatBusy("busy", errcode=-1), ("retry", 10.0)),
        (1, TimeoutError(), ("retry", 20.0)),
        (0, WeChatQuotaExceeded("quota", errcode=45009, retry_after=5000), ("retry", 5000.0)),
        (2, WeChatBusy("busy", errcode=-1), ("failed", "busy")),  # the 3rd try: given up
        (0, WeChatError("bad value", errcode=47003), ("failed", "bad value")),  # never retried
    ],
)
async def test_failures_are_retried_with_back_off_then_given_up(
    attempts: int, error: Exception, expected: tuple[Any, ...]
) -> None:
    outbox = FakeOutbox(uuid4(), attempts=attempts)
    n, calls = notifier(outbox, error)
    await n.run_once()
    assert len(calls) == 1
    assert outbox.log == [expected]
    assert outbox.grants == 1  # the grant is given back: nothing was delivered


class Crash(BaseException):
    pass


async def test_a_crash_during_the_call_leaves_the_item_sending() -> None:
    outbox = FakeOutbox(uuid4())
    n, calls = notifier(outbox, Crash())
    with pytest.raises(Crash):
        await n.run_once()
    assert outbox.status == "sending" and outbox.log == [] and len(calls) == 1
