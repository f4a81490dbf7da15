"""Conversations, messages, read receipts and the inbox over real HTTP."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import httpx

from api.http.controllers.chat import open_loan_conversation
from domain.chat import conversation_id_for
from tests.conftest import wait_until
from tests.e2e.conftest import LiveServer


def _pair(live_server: LiveServer) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
    return live_server.login(), live_server.login()


def _open(http: httpx.Client, peer_id: str) -> dict[str, Any]:
    r = http.post("/v1/conversations", json={"peer_id": peer_id})
    assert r.status_code in (200, 201), r.text
    return r.json()


def _send(
    http: httpx.Client, cid: str, text: str, client_msg_id: str | None = None
) -> httpx.Response:
    return http.post(
        f"/v1/conversations/{cid}/messages",
        json={"text": text, "client_msg_id": client_msg_id or uuid4().hex},
    )


def _inbox(http: httpx.Client, after: int = 0, limit: int = 200) -> dict[str, Any]:
    r = http.get("/v1/inbox", params={"after": after, "limit": limit})
    assert r.status_code == 200, r.text
    return r.json()


def test_opening_twice_gives_the_same_conversation(live_server: LiveServer) -> None:
    (a_token, a), (b_token, b) = _pair(live_server)
    with live_server.client(a_token) as ha, live_server.client(b_token) as hb:
        r = ha.post("/v1/conversations", json={"peer_id": b["id"]})
        assert r.status_code == 201, r.text
        conversation = r.json()
        assert conversation["id"] == str(conversation_id_for(a["id"], b["id"]))
        assert conversation["peer"]["id"] == b["id"] and conversation["unread"] == 0
        assert conversation["last_message"] is None
        again = ha.post("/v1/conversations", json={"peer_id": b["id"]})
        assert again.status_code == 200 and again.json()["id"] == conversation["id"]
        other_side = hb.post("/v1/conversations", json={"peer_id": a["id"]})
        assert other_side.status_code == 200
        assert other_side.json()["id"] == conversation["id"]
        assert other_side.json()["peer"]["id"] == a["id"]
        listed = hb.get("/v1/conversations").json()
        assert [c["id"] for c in listed["items"]] == [conversation["id"]]
        assert hb.get(f"/v1/conversations/{conversation['id']}").json()["peer"]["id"] == a["id"]

        unknown = ha.post("/v1/conversations", json={"peer_id": str(uuid4())})
        assert unknown.status_code == 404 and unknown.json()["code"] == "reader_not_found"
        myself = ha.post("/v1/conversations", json={"peer_id": a["id"]})
        assert myself.status_code == 422 and myself.json()["code"] == "cannot_chat_with_self"
        assert ha.post("/v1/conversations", json={}).status_code == 422


def test_send_dedupe_and_history_pages(live_server: LiveServer) -> None:
    (a_token, _), (b_token, b) = _pair(live_server)
    with live_server.client(a_token) as ha, live_server.client(b_token) as hb:
        cid = _open(ha, b["id"])["id"]
        first = _send(ha, cid, "你好", "c-1")
        assert first.status_code == 201, first.text
        message = first.json()
        assert (
            message["seq"] == 1 and message["text"] == "你好" and message["client_msg_id"] == "c-1"
        )
        retry = _send(ha, cid, "你好 (retry)", "c-1")
        assert retry.status_code == 200, retry.text
        assert retry.json() == message  # same id, seq, text and time
        for i in range(2, 6):
            assert _send(ha, cid, f"m{i}", f"c-{i}").status_code == 201
        # the same client_msg_id from the other member is another message
        assert _send(hb, cid, "mine", "c-1").status_code == 201

        seen: list[int] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = hb.get(f"/v1/conversations/{cid}/messages", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            seen += [m["seq"] for m in body["items"]]
            if body["next_cursor"] is None:
                break
            params = {"limit": 2, "cursor": body["next_cursor"]}
        assert seen == [6, 5, 4, 3, 2, 1]
        newest = hb.get(f"/v1/conversations/{cid}/messages", params={"limit": 1}).json()
        assert newest["items"][0]["sender"]["id"] == b["id"]

        too_long = _send(ha, cid, "x" * 2001)
        assert too_long.status_code == 422
        blank = _send(ha, cid, "   ")
        assert blank.status_code == 422 and blank.json()["code"] == "invalid_message"


def test_read_receipt_lowers_unread(live_server: LiveServer) -> None:
    (a_token, a), (b_token, b) = _pair(live_server)
    with live_server.client(a_token) as ha, live_server.client(b_token) as hb:
        cid = _open(ha, b["id"])["id"]
        for i in range(3):
            assert _send(ha, cid, f"hello {i}").status_code == 201
        assert _inbox(hb)["unread"] == 3
        [row] = hb.get("/v1/conversations").json()["items"]
        assert row["unread"] == 3 and row["last_message"]["text"] == "hello 2"
        assert row["last_message"]["sender"]["id"] == a["id"]

        r = hb.post(f"/v1/conversations/{cid}/read", json={"up_to": 2})
        assert r.status_code == 200, r.text
        assert r.json()["unread"] == 1 and r.json()["read_up_to"] == 2
        assert _inbox(hb)["unread"] == 1
        receipt = _inbox(ha)["items"][-1]
        assert receipt["kind"] == "chat.read"
        assert receipt["data"] == {"conversation_id": cid, "reader_id": b["id"], "up_to": 2}
        assert hb.post(f"/v1/conversations/{cid}/read", json={"up_to": 3}).json()["unread"] == 0
        assert hb.post(f"/v1/conversations/{cid}/read", json={"up_to": -1}).status_code == 422


def test_strangers_get_403_and_unknown_conversations_404(live_server: LiveServer) -> None:
    (a_token, _), (_, b) = _pair(live_server)
    stranger_token, _ = live_server.login()
    with live_server.client(a_token) as ha, live_server.client(stranger_token) as hs:
        cid = _open(ha, b["id"])["id"]
        message = _send(ha, cid, "private").json()
        for response in (
            hs.get(f"/v1/conversations/{cid}"),
            hs.get(f"/v1/conversations/{cid}/messages"),
            _send(hs, cid, "let me in"),
            hs.post(f"/v1/conversations/{cid}/read", json={"up_to": 1}),
            hs.post(f"/v1/conversations/{cid}/messages/{message['id']}/hide"),
        ):
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "not_a_member"
        nowhere = str(uuid4())
        r = hs.get(f"/v1/conversations/{nowhere}/messages")
        assert r.status_code == 404 and r.json()["code"] == "conversation_not_found"
        assert _send(hs, nowhere, "hi").status_code == 404
        assert live_server.client().get("/v1/inbox").status_code == 401


def test_hidden_message_disappears_for_that_member_only(live_server: LiveServer) -> None:
    (a_token, _), (b_token, b) = _pair(live_server)
    with live_server.client(a_token) as ha, live_server.client(b_token) as hb:
        cid = _open(ha, b["id"])["id"]
        keep = _send(ha, cid, "keep").json()
        gone = _send(hb, cid, "oops").json()
        r = ha.post(f"/v1/conversations/{cid}/messages/{gone['id']}/hide")
        assert r.status_code == 204, r.text
        assert ha.post(f"/v1/conversations/{cid}/messages/{gone['id']}/hide").status_code == 204
        mine = ha.get(f"/v1/conversations/{cid}/messages").json()["items"]
        assert [m["id"] for m in mine] == [keep["id"]]
        theirs = hb.get(f"/v1/conversations/{cid}/messages").json()["items"]
        assert [m["id"] for m in theirs] == [gone["id"], keep["id"]]
        assert ha.get(f"/v1/conversations/{cid}").json()["last_message"]["id"] == keep["id"]
        assert ha.get(f"/v1/conversations/{cid}").json()["unread"] == 0
        missing = ha.post(f"/v1/conversations/{cid}/messages/{uuid4()}/hide")
        assert missing.status_code == 404 and missing.json()["code"] == "message_not_found"


def test_inbox_after_returns_exactly_the_gap(live_server: LiveServer) -> None:
    (a_token, _), (b_token, b) = _pair(live_server)
    with live_server.client(a_token) as ha, live_server.client(b_token) as hb:
        cid = _open(ha, b["id"])["id"]
        for i in range(4):
            _send(ha, cid, f"before {i}")
        before = _inbox(hb)
        assert [i["seq"] for i in before["items"]] == [1, 2, 3, 4] and before["head"] == 4
        assert all(i["kind"] == "chat.message" for i in before["items"])
        seen = before["head"]
        for i in range(3):
            _send(ha, cid, f"after {i}")
        gap = _inbox(hb, after=seen)
        assert [i["seq"] for i in gap["items"]] == [5, 6, 7] and gap["head"] == 7
        assert [i["data"]["text"] for i in gap["items"]] == ["after 0", "after 1", "after 2"]
        assert gap["unread"] == 7
        paged = _inbox(hb, after=2, limit=2)
        assert [i["seq"] for i in paged["items"]] == [3, 4] and paged["head"] == 7
        assert _inbox(hb, after=7)["items"] == []
        # the sender's own devices get the messages too
        assert [i["seq"] for i in _inbox(ha)["items"]] == list(range(1, 8))
        assert hb.get("/v1/inbox", params={"after": -1}).status_code in (400, 422)


def test_a_loan_request_opens_the_conversation_with_its_note(live_server: LiveServer) -> None:
    (lender_token, lender), (borrower_token, borrower) = _pair(live_server)
    with live_server.client(lender_token) as hl, live_server.client(borrower_token) as hb:
        book = hl.post("/v1/books", json={"isbn": "9787506365437", "title": "活着"}).json()
        r = hb.post(
            f"/v1/books/{book['id']}/loans",
            json={"note": "周末还你，谢谢！", "contact": {"wechat_id": "wx-borrower"}},
            headers={"Idempotency-Key": "loan-1"},
        )
        assert r.status_code == 201, r.text
        loan = r.json()

        [conversation] = hb.get("/v1/conversations").json()["items"]
        assert conversation["peer"]["id"] == lender["id"]
        assert conversation["loan_id"] == loan["id"]
        assert conversation["last_message"]["text"] == "周末还你，谢谢！"
        history = hl.get(f"/v1/conversations/{conversation['id']}/messages").json()["items"]
        assert len(history) == 1
        assert history[0]["sender"]["id"] == borrower["id"]
        assert history[0]["client_msg_id"] == f"loan:{loan['id']}"
        assert hl.get("/v1/conversations").json()["items"][0]["unread"] == 1

        # a retried request (same Idempotency-Key) does not post the note again
        again = hb.post(
            f"/v1/books/{book['id']}/loans",
            json={"note": "周末还你，谢谢！", "contact": {"wechat_id": "wx-borrower"}},
            headers={"Idempotency-Key": "loan-1"},
        )
        assert again.status_code == 201 and again.json()["id"] == loan["id"]
        open_loan_conversation(live_server.container, UUID(loan["id"]))  # run twice: no-op
        history = hl.get(f"/v1/conversations/{conversation['id']}/messages").json()["items"]
        assert len(history) == 1

        def lender_item(kind: str) -> dict[str, Any] | None:
            return next((i for i in _inbox(hl)["items"] if i["kind"] == kind), None)

        requested = wait_until(lambda: lender_item("loan.requested"))
        assert requested["data"]["loan_id"] == loan["id"]
        assert requested["data"]["contact"] == {"wechat_id": "wx-borrower"}
        assert requested["data"]["note"] == "周末还你，谢谢！"
        assert requested["data"]["book"] == {"id": book["id"], "title": "活着"}
        assert requested["data"]["borrower"]["id"] == borrower["id"]
        assert all(i["kind"] != "loan.requested" for i in _inbox(hb)["items"])

        assert hl.post(f"/v1/loans/{loan['id']}/approve").status_code == 200

        def borrower_item(kind: str) -> dict[str, Any] | None:
            return next((i for i in _inbox(hb)["items"] if i["kind"] == kind), None)

        approved = wait_until(lambda: borrower_item("loan.approved"))
        assert approved["data"]["loan_id"] == loan["id"]
        assert approved["data"]["lender"]["id"] == lender["id"]
        assert "contact" not in approved["data"]
        items = _inbox(hb)["items"]
        assert [i["seq"] for i in items] == list(range(1, len(items) + 1))

        # a request without a note opens (reuses) the conversation and posts nothing
        other = hl.post("/v1/books", json={"isbn": "9787506365437", "title": "活着 2"}).json()
        assert hb.post(f"/v1/books/{other['id']}/loans", json={}).status_code == 201
        [same] = hb.get("/v1/conversations").json()["items"]
        assert same["id"] == conversation["id"] and same["last_seq"] == 1
