from tests.e2e.conftest import LiveServer


def test_health_and_schema(live_server: LiveServer) -> None:
    with live_server.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        schema = http.get("/schema/openapi.json")
        assert schema.status_code == 200
        assert "/v1/books" in schema.json()["paths"]


def test_login_publish_borrow_cycle(live_server: LiveServer) -> None:
    owner_token, owner = live_server.login()
    borrower_token, borrower = live_server.login()
    with live_server.client(owner_token) as o, live_server.client(borrower_token) as b:
        r = o.post(
            "/v1/books", json={"isbn": "978-7-5366-9293-0", "title": "三体", "author": "刘慈欣"}
        )
        assert r.status_code == 201, r.text
        book = r.json()
        assert book["status"] == "available" and book["owner"]["id"] == owner["id"]
        r = b.post(
            f"/v1/books/{book['id']}/loans", json={"note": "想读", "contact": {"phone": "138"}}
        )
        assert r.status_code == 201, r.text
        loan = r.json()
        assert loan["contact"] is None  # the borrower does not see contact through this view
        r = o.post(f"/v1/loans/{loan['id']}/approve")
        assert r.status_code == 200, r.text
        assert r.json()["contact"] == {"phone": "138"}
        assert o.get(f"/v1/books/{book['id']}").json()["status"] == "on_loan"
        assert b.post(f"/v1/loans/{loan['id']}/return").json()["status"] == "returning"
        assert o.post(f"/v1/loans/{loan['id']}/confirm-return").json()["status"] == "returned"
        assert b.get(f"/v1/books/{book['id']}").json()["status"] == "available"
