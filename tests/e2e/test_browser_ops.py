"""The operator console (``/ops``) in a real browser (Debian's Chromium under Playwright)
against a real ``liudong serve``.

Token login (a wrong token is refused); the projections listed with position and lag; a
rebuild of the shelf started from the console, its progress bar seen moving, then done; the
event tail showing a new event live, and its type filter; a text flagged by the content
check approved and another removed; a reader's session revoked, which ends their WebSocket
(close 4401) and their token. Screenshots are saved (path printed) and were looked at.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any
from uuid import uuid4

import httpx
import pytest
from websockets.sync.client import connect

from domain.commands import PublishBook, RegisterReader
from tests.e2e.browser import Shots, browser, serve, shots, wait_for  # noqa: F401 (fixtures)
from tests.e2e.conftest import OPERATOR_TOKEN
from tests.e2e.nodes import Node
from tests.e2e.test_api_auth import isbn13

pytestmark = pytest.mark.slow

SEEDED_BOOKS = 600


def _login(node: Node, name: str) -> tuple[str, dict[str, Any]]:
    r = httpx.post(node.url + "/v1/auth/login", json={"code": f"dev:{name}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["token"], r.json()["reader"]


def _seed(library: Any, books: int) -> None:
    """Events for the rebuild to chew on (written straight into the shared database)."""
    owner = uuid4()
    library.handle(RegisterReader(reader_id=owner, nickname="种子书主"))
    for i in range(books):
        library.handle(
            PublishBook(book_id=uuid4(), owner_id=owner, isbn=isbn13(), title=f"种子书 {i}")
        )


def test_the_operator_console(  # noqa: PLR0915
    serve: Node,  # noqa: F811
    browser: Any,  # noqa: F811
    shots: Shots,  # noqa: F811
    library: Any,
) -> None:
    started = time.monotonic()
    _seed(library, SEEDED_BOOKS)
    token, reader = _login(serve, f"revoked-{uuid4().hex[:4]}")
    closed: list[int] = []

    def hold_socket() -> None:  # the reader online, until the console revokes the session
        with connect(
            serve.url.replace("http", "ws") + "/v1/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            try:
                while True:
                    ws.recv(timeout=30)
            except Exception:
                closed.append(ws.close_code or 0)

    threading.Thread(target=hold_socket, daemon=True).start()

    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.goto(serve.url + "/ops")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", "not-the-token")
    page.click("#login-go")
    page.wait_for_selector("#login-error:has-text('LIUDONG_OPERATOR_TOKEN')")
    page.fill("#token", OPERATOR_TOKEN)
    page.click("#login-go")

    # projections with position and lag, all caught up and running
    page.wait_for_selector("#projections tr[data-projection=shelf] .state.running", timeout=30_000)
    for name in ("shelf", "inbox", "rooms"):
        row = page.wait_for_selector(f"#projections tr[data-projection={name}]")
        assert re.search(r"(library|chat) [\d,]+ / [\d,]+", row.inner_text()), row.inner_text()
    page.wait_for_selector(f"#online li:has-text('{reader['nickname']}')", timeout=10_000)
    shots(page, "console")

    # rebuild the shelf from the console with small pages: the bar moves, then it is done
    page.fill("#page-size", "1")  # many small pages: the bar has time to move
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#projections tr[data-projection=shelf] button[data-action=rebuild]")
    seen: list[int] = []

    def progress() -> bool:
        bar = page.query_selector("tr[data-projection=shelf] .rebuild.running .progress i")
        if bar is not None:
            width = re.search(r"width:\s*(\d+)%", bar.get_attribute("style") or "")
            if width:
                seen.append(int(width.group(1)))
                if 0 < seen[-1] < 100 and len([w for w in seen if 0 < w < 100]) == 1:
                    shots(page, "rebuild-running", full_page=False)
        return page.query_selector("tr[data-projection=shelf] .rebuild.done") is not None

    wait_for(progress, timeout=120, what="the rebuild to finish")
    done = page.inner_text("tr[data-projection=shelf] .rebuild.done")
    events = int(re.search(r"([\d,]+) 事件", done).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert events >= SEEDED_BOOKS, done
    assert any(0 < w < 100 for w in seen), seen  # the bar was seen moving
    shots(page, "rebuild-done", full_page=False)

    # the event tail shows a new event live, and filters by type
    page.wait_for_selector("#events tbody tr")
    owner_token, _ = _login(serve, f"tail-{uuid4().hex[:4]}")
    title = f"实时事件 {uuid4().hex[:6]}"
    r = httpx.post(
        serve.url + "/v1/books",
        json={"isbn": isbn13(), "title": title},
        headers={"Authorization": f"Bearer {owner_token}"},
        timeout=30,
    )
    assert r.status_code in (201, 202), r.text
    page.wait_for_selector(f"#events tr[data-type='Book.Published']:has-text('{title}')")
    page.fill("#f-type", "Reader.Registered")
    page.click("#event-filters button[type=submit]")
    page.wait_for_selector("#events tbody tr")
    wait_for(
        lambda: (
            {r.get_attribute("data-type") for r in page.query_selector_all("#events tbody tr")}
            == {"Reader.Registered"}
        ),
        what="only Reader.Registered rows",
    )
    shots(page, "event-tail-filtered", full_page=False)

    # flagged texts: one approved, one removed
    peer_token, peer = _login(serve, f"seller-{uuid4().hex[:4]}")
    with httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {peer_token}"}, timeout=30
    ) as http:
        conversation = http.post("/v1/conversations", json={"peer_id": reader["id"]}).json()
        for i, text in enumerate(("代购正品，私聊", "朋友代购的书，九成新")):
            sent = http.post(
                f"/v1/conversations/{conversation['id']}/messages",
                json={"text": text, "client_msg_id": f"flag-{i}"},
            )
            assert sent.status_code in (201, 202), sent.text
    first = page.wait_for_selector("#flags tr:has-text('代购正品')", timeout=10_000)
    page.wait_for_selector("#flags tr:has-text('九成新')")
    shots(page, "flags")
    first.query_selector("button[data-action=approve]").click()  # type: ignore[union-attr]
    page.click("#flags tr:has-text('九成新') button[data-action=remove]")
    for text in ("代购正品", "九成新"):  # (other tests of the session may leave open flags)
        page.wait_for_selector(f"#flags tr:has-text('{text}')", state="detached", timeout=10_000)
    listed = httpx.get(
        serve.url + "/v1/ops/moderation",
        params={"state": "all"},
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    ).json()["items"]
    decided = {f["text"]: f["resolution"] for f in listed}
    assert decided["代购正品，私聊"] == "approved", decided
    assert decided["朋友代购的书，九成新"] == "removed", decided

    # a reader's session revoked: their socket closes 4401 and their token stops working
    page.fill("#reader-q", reader["nickname"])
    page.click("#reader-search button")
    page.click(f"#reader-results a[data-reader='{reader['id']}']")
    page.wait_for_selector("#session-table tr[data-live=true] button[data-action=revoke]")
    shots(page, "sessions")
    page.click("#session-table tr[data-live=true] button[data-action=revoke]")
    page.wait_for_selector("#session-table td.session-state:has-text('已撤销')")
    wait_for(lambda: closed, timeout=10, what="the reader's socket to close")
    assert closed == [4401], closed
    me = httpx.get(serve.url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401 and me.json()["code"] == "token_revoked", me.text
    page.wait_for_selector(f"#online:not(:has-text('{reader['nickname']}'))", timeout=10_000)
    shots(page, "after-revoke")
    print(f"ops flow: {time.monotonic() - started:.1f} s, {len(shots.taken)} screenshots")
    context.close()
