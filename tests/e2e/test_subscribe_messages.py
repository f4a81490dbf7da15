"""Subscribe messages (订阅消息) end to end: a real server (HTTP, WebSocket, the inbox
projection, reader presence, the notifier) with ``LIUDONG_SUBSCRIBE_TEMPLATES`` set to the
shipped example and WeChat's server API served by the fake WeChat on loopback.

- a loan request to a lender with no socket and one grant → exactly one
  ``subscribeMessage.send`` with the configured template, page and data, and the grant used;
- none when the lender is online, none with no grant;
- across a notifier restart (an intent recorded, then the notifier gone, then another one;
  or a crash during the call) still exactly one;
- 43101 sets the grants to 0; a busy WeChat is retried with back-off;
- ``/v1/me/subscriptions`` and ``liudong notifications status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from click.testing import CliRunner

from api.adapters.subscribe import Notifier
from api.adapters.wechat import DevLoginProvider
from api.bootstrap.settings import Settings
from api.cli import main as cli
from api.http.app import create_app
from tests.conftest import wait_until
from tests.e2e.conftest import OPERATOR_TOKEN, LiveServer, free_port
from tests.e2e.realtime_helpers import Ws
from tests.e2e.test_api_auth import Actor, actor_factory, assert_problem, loan_action, publish
from tests.wechat_fake import APPID, SECRET, SUBSCRIBE_SEND, Canned, running_fake_wechat

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "subscribe-templates.example.toml"
REQUESTED = "LOAN_REQUESTED_TEMPLATE_ID"
RESULT = "LOAN_RESULT_TEMPLATE_ID"
RETURNING = "LOAN_RETURNING_TEMPLATE_ID"


@pytest.fixture(scope="module")
def fake() -> Iterator[Any]:
    with running_fake_wechat(subscribe_templates={REQUESTED, RESULT, RETURNING}) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    database_url: str, nats_url: str, fake: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = Settings(
        env="test",
        database_url=database_url,
        nats_url=nats_url,
        data_dir=tmp_path_factory.mktemp("subscribe-data"),
        operator_token=OPERATOR_TOKEN,
        rate_login_address="",
        rate_login_code="",
        rate_loan_requests="",
        rate_chat_sends="",
        rate_room_sends="",
        ws_frame_rate="",
        moderation="local",
        wechat_appid=APPID,
        wechat_secret=SECRET,
        wechat_base_url=fake.base_url,
        subscribe_templates=EXAMPLE,
        notify_backoff=0.2,
        notify_max_attempts=3,
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_until(lambda: uv.started or not thread.is_alive(), timeout=60)
    assert uv.started, "the server did not start"
    yield LiveServer(url=f"http://127.0.0.1:{config.port}", app=app)
    uv.should_exit = True
    thread.join(30)


@pytest.fixture
def actors(server: LiveServer) -> Iterator[Callable[..., Actor]]:
    with actor_factory(server) as make:
        yield make


def notifier_of(server: LiveServer) -> Notifier:
    notifier = server.container.extras["realtime"].notifier
    assert notifier is not None, "the notifier did not start"
    return notifier  # type: ignore[no-any-return]


def sends_to(fake: Any, reader: Actor) -> list[dict[str, Any]]:
    open_id = DevLoginProvider.open_id_for(reader.name)
    return [b for b in fake.bodies(SUBSCRIBE_SEND) if b.get("touser") == open_id]


def row_of(server: LiveServer, reader: Actor, kind: str) -> dict[str, Any] | None:
    with server.container.pool.connection() as conn:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT * FROM subscribe_notifications WHERE reader_id = %s AND kind = %s",
            (UUID(reader.id), kind),
        ).fetchone()


def settled(server: LiveServer, reader: Actor, kind: str, timeout: float = 15.0) -> dict[str, Any]:
    """The reader's notification of ``kind`` once it left ``pending`` / ``sending``."""

    def done() -> dict[str, Any] | None:
        row = row_of(server, reader, kind)
        return row if row and row["status"] not in ("pending", "sending") else None

    return wait_until(done, timeout=timeout)  # type: ignore[no-any-return]


def grant(reader: Actor, template_id: str = REQUESTED, count: int = 1) -> dict[str, int]:
    r = reader.http.post(
        "/v1/me/subscriptions", json={"grants": [{"template_id": template_id, "count": count}]}
    )
    assert r.status_code == 200, r.text
    return {i["template_id"]: i["remaining"] for i in r.json()["items"]}


def left(reader: Actor) -> dict[str, int]:
    r = reader.http.get("/v1/me/subscriptions")
    assert r.status_code == 200, r.text
    return {i["template_id"]: i["remaining"] for i in r.json()["items"]}


def ask(borrower: Actor, book_id: str, **body: Any) -> dict[str, Any]:
    r = borrower.http.post(f"/v1/books/{book_id}/loans", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def on_server_loop(server: LiveServer, coroutine: Any) -> Any:
    loop = notifier_of(server).loop
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)


class _Crash(BaseException):
    """The process dies (nothing in the notifier catches it)."""


# -- the grants API ---------------------------------------------------------------------------


def test_grants_are_added_listed_and_checked(actors: Callable[..., Actor]) -> None:
    reader = actors()
    assert left(reader) == {REQUESTED: 0, RESULT: 0, RETURNING: 0}
    r = reader.http.get("/v1/me/subscriptions")
    kinds = {i["template_id"]: i["kinds"] for i in r.json()["items"]}
    assert kinds[RESULT] == ["loan.approved", "loan.declined"]
    assert grant(reader, REQUESTED, 2) == {REQUESTED: 2, RESULT: 0, RETURNING: 0}
    assert grant(reader, REQUESTED, 1)[REQUESTED] == 3
    unknown = reader.http.post(
        "/v1/me/subscriptions",
        json={"grants": [{"template_id": RESULT, "count": 1}, {"template_id": "nope"}]},
    )
    body = assert_problem(unknown, 422, "unknown_template")
    assert body["errors"] == [{"field": "grants", "template_id": "nope"}]
    assert left(reader)[RESULT] == 0  # nothing of a refused request was added
    for bad in ({"grants": []}, {"grants": [{"template_id": RESULT, "count": 0}]}, {}):
        assert reader.http.post("/v1/me/subscriptions", json=bad).status_code == 422
    reader.http.headers.pop("Authorization")
    assert reader.http.get("/v1/me/subscriptions").status_code == 401


# -- who gets a subscribe message ---------------------------------------------------------------


def test_a_loan_request_to_an_away_lender_with_one_grant_sends_exactly_one(
    actors: Callable[..., Actor], server: LiveServer, fake: Any
) -> None:
    lender, borrower = actors(), actors()
    grant(lender)
    title = "三体：地球往事（典藏版）刘慈欣科幻小说全集第一卷"  # 24 characters
    book = publish(lender, title=title)
    started = time.monotonic()
    loan = ask(borrower, book["id"], note="周末可以来取吗")
    wait_until(lambda: sends_to(fake, lender), timeout=15, interval=0.005)
    print(f"loan request → subscribeMessage.send: {time.monotonic() - started:.3f} s")
    row = settled(server, lender, "loan.requested")
    assert row["status"] == "sent", row
    sent = sends_to(fake, lender)
    assert len(sent) == 1
    body = sent[0]
    assert body["template_id"] == REQUESTED
    assert body["page"] == f"pages/loan/detail?id={loan['id']}"
    assert body["miniprogram_state"] == "formal" and body["lang"] == "zh_CN"
    data = {k: v["value"] for k, v in body["data"].items()}
    assert data["thing1"] == title[:19] + "…"  # thing: at most 20 characters
    assert data["name2"] == borrower.nickname
    assert data["thing4"] == "周末可以来取吗"
    assert data["time3"].startswith(f"{time.gmtime().tm_year}年")  # Beijing time
    assert left(lender)[REQUESTED] == 0
    # the approval goes to the borrower, who granted nothing: no second call
    assert loan_action(lender, loan["id"], "approve").status_code == 200
    assert settled(server, borrower, "loan.approved")["reason"] == "no_grant"
    assert sends_to(fake, borrower) == []
    assert len(sends_to(fake, lender)) == 1


async def test_none_when_the_lender_is_online(
    actors: Callable[..., Actor], server: LiveServer, fake: Any
) -> None:
    lender, borrower = actors(), actors()
    grant(lender)
    ws = await Ws.open(server.url, lender.token)
    try:
        await ws.recv_type("hello")
        book = publish(lender)
        ask(borrower, book["id"])
        await ws.recv_until(lambda f: f.get("kind") == "loan.requested", timeout=10)
        row = await asyncio.to_thread(settled, server, lender, "loan.requested")
    finally:
        await ws.close()
    assert (row["status"], row["reason"]) == ("skipped", "online")
    assert sends_to(fake, lender) == []
    assert left(lender)[REQUESTED] == 1  # the grant is kept for later


def test_none_without_a_grant(actors: Callable[..., Actor], server: LiveServer, fake: Any) -> None:
    lender, borrower = actors(), actors()
    grant(lender, RESULT)  # a grant of another template does not count
    ask(borrower, publish(lender)["id"])
    row = settled(server, lender, "loan.requested")
    assert (row["status"], row["reason"]) == ("skipped", "no_grant")
    assert sends_to(fake, lender) == []


def test_43101_sets_the_grants_to_zero(
    actors: Callable[..., Actor], server: LiveServer, fake: Any
) -> None:
    lender, borrower = actors(), actors()
    grant(lender, REQUESTED, 3)
    fake.subscribe_refused.add(DevLoginProvider.open_id_for(lender.name))
    ask(borrower, publish(lender)["id"])
    row = settled(server, lender, "loan.requested")
    assert (row["status"], row["reason"]) == ("refused", "43101")
    assert len(sends_to(fake, lender)) == 1
    assert left(lender)[REQUESTED] == 0


def test_a_busy_wechat_is_retried_with_back_off_and_sends_once(
    actors: Callable[..., Actor], server: LiveServer, fake: Any
) -> None:
    lender, borrower = actors(), actors()
    grant(lender)
    # one failed attempt of the notifier = the client's 3 tries, all busy (errcode -1)
    fake.script[SUBSCRIBE_SEND] = [Canned(errcode=-1, errmsg="system busy")] * 3
    ask(borrower, publish(lender)["id"])
    row = settled(server, lender, "loan.requested")
    assert (row["status"], row["attempts"]) == ("sent", 2), row
    assert "busy" in row["last_error"]
    assert len(sends_to(fake, lender)) == 4  # 3 answered busy (not delivered), then 1 ok
    assert not fake.script[SUBSCRIBE_SEND]
    metrics = httpx.get(server.url + "/metrics").text
    assert 'liudong_subscribe_messages_total{outcome="retried"}' in metrics
    assert 'liudong_subscribe_messages_total{outcome="sent"}' in metrics
    assert left(lender)[REQUESTED] == 0


# -- exactly one across a restart ---------------------------------------------------------------


@contextlib.contextmanager
def notifier_stopped(server: LiveServer) -> Iterator[Notifier]:
    notifier = notifier_of(server)
    on_server_loop(server, notifier.stop())
    try:
        yield notifier
    finally:
        on_server_loop(server, notifier.start())


def inbox_has(server: LiveServer, reader: Actor, kind: str) -> bool:
    items, _ = server.container.inbox.items(UUID(reader.id), 0, 100)
    return any(i["kind"] == kind for i in items)


def test_an_intent_recorded_before_a_restart_is_sent_once_after_it(
    actors: Callable[..., Actor], server: LiveServer, fake: Any
) -> None:
    lender, borrower = actors(), actors()
    grant(lender)
    with notifier_stopped(server) as notifier:
        ask(borrower, publish(lender)["id"])
        wait_until(lambda: inbox_has(server, lender, "loan.requested"))
        # the notifier recorded the item, then its process died before sending
        wait_until(
            lambda: notifier.outbox.follow("library")[0] or row_of(server, lender, "loan.requested")
        )
        assert row_of(server, lender, "loan.requested")["status"] == "pending"  # type: ignore[index]
        assert sends_to(fake, lender) == []
    row = settled(server, lender, "loan.requested")  # the restarted notifier
    assert row["status"] == "sent"
    assert len(sends_to(fake, lender)) == 1
    # following the log again records nothing new, so nothing is sent again
    assert notifier_of(server).outbox.follow("library") == (0, False)
    on_server_loop(server, notifier_of(server).run_once())
    assert len(sends_to(fake, lender)) == 1


def test_a_crash_during_the_call_never_sends_twice(
    actors: Callable[..., Actor], server: LiveServer, fake: Any
) -> None:
    lender, borrower = actors(), actors()
    grant(lender, REQUESTED, 2)
    with notifier_stopped(server) as live:
        ask(borrower, publish(lender)["id"])
        wait_until(lambda: inbox_has(server, lender, "loan.requested"))

        async def crashing_send(body: dict[str, Any]) -> None:
            fake.handle(SUBSCRIBE_SEND, {}, json.dumps(body).encode())  # it reached WeChat…
            raise _Crash  # …and the process died before recording it

        dying = Notifier(live.outbox, crashing_send, lambda _: False, live.open_id)
        with pytest.raises(_Crash):
            on_server_loop(server, dying.run_once())
        assert row_of(server, lender, "loan.requested")["status"] == "sending"  # type: ignore[index]
        assert live.outbox.interrupted(0) == 1  # what a restart finds after 2 × the timeout
    row = settled(server, lender, "loan.requested")
    assert row["status"] == "failed" and "interrupted" in row["last_error"]
    on_server_loop(server, notifier_of(server).run_once())  # a round of the restarted one
    assert len(sends_to(fake, lender)) == 1
    assert left(lender)[REQUESTED] == 1  # the used grant stays used


# -- operators ------------------------------------------------------------------------------


def test_notifications_status(
    server: LiveServer, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LIUDONG_SUBSCRIBE_TEMPLATES", str(EXAMPLE))
    result = CliRunner().invoke(cli, ["notifications", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["counts"]["sent"] >= 1 and status["counts"]["skipped"] >= 1
    assert status["sources"]["library"]["lag"] is not None
    wait_until(
        lambda: (
            json.loads(CliRunner().invoke(cli, ["notifications", "status", "--json"]).output)[
                "sources"
            ]["library"]["lag"]
            == 0
        )
    )
    text = CliRunner().invoke(cli, ["notifications", "status"]).output
    assert "sent" in text and "library: at" in text and "lag 0" in text


def test_a_bad_templates_file_stops_the_start(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text(
        '[[template]]\nkind = "loan.requested"\ntemplate_id = "x"\n'
        '[template.data]\nthing1 = "{book.title"\n'
    )
    from api.adapters.subscribe import TemplateConfigError
    from api.bootstrap.wechat import WeChatPlatform

    settings = Settings(env="test", database_url=database_url, subscribe_templates=bad)
    with pytest.raises(TemplateConfigError, match="loan.requested data.thing1"):
        WeChatPlatform.start(settings, database_url)
