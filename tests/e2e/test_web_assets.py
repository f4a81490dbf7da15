"""The browser clients' files served by the app (``api.http.web``): the H5 at ``/``, the
operator console at ``/ops``, the SDK's modules at ``/sdk``; with ``Cache-Control: no-cache``
and an ``ETag`` that a revalidation answers with 304; the API, the schema and the operator
routes unaffected (the static routes are not in the OpenAPI document)."""

from __future__ import annotations

import pytest

from api.http.web import ASSETS
from tests.e2e.conftest import OPERATOR, LiveServer


@pytest.mark.parametrize(
    ("path", "kind", "marker"),
    [
        ("/", "text/html", "流动图书馆"),
        ("/app.js", "javascript", "图书漂流"),
        ("/style.css", "text/css", "--green"),
        ("/ops", "text/html", "运维控制台"),
        ("/ops/", "text/html", "运维控制台"),
        ("/ops/ops.js", "javascript", "/v1/ops/projections"),
    ],
)
def test_the_clients_are_served_with_revalidation(
    live_server: LiveServer, path: str, kind: str, marker: str
) -> None:
    with live_server.client() as http:
        first = http.get(path)
        assert first.status_code == 200, (path, first.status_code, first.text[:200])
        assert kind in first.headers["content-type"]
        assert marker in first.text
        assert first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        again = http.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304, again.status_code
        assert again.content == b""


def test_the_sdk_modules_are_served_when_present(live_server: LiveServer) -> None:
    sdk = (ASSETS / "sdk").resolve()
    if not sdk.is_dir():
        pytest.skip("clients/miniprogram/src is not in this checkout")
    module = sorted(p for p in sdk.rglob("*.js"))[0].relative_to(sdk)
    with live_server.client() as http:
        r = http.get(f"/sdk/{module.as_posix()}")
    assert r.status_code == 200
    assert "javascript" in r.headers["content-type"]


def test_the_api_is_unaffected(live_server: LiveServer) -> None:
    with live_server.client() as http:
        assert http.get("/v1/books").headers["content-type"].startswith("application/json")
        missing = http.get("/v1/no-such-thing")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert http.get("/nope.js").status_code == 404
        assert http.get("/healthz").json() == {"status": "ok"}
        assert "checks" in http.get("/readyz", headers=OPERATOR).json()
        assert http.get("/metrics").status_code == 200
        paths = http.get("/schema/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith(("/ops", "/sdk")) for p in paths)
    assert "/v1/ops/projections" in paths
    assert paths["/v1/ops/projections"]["get"]["security"] == [{"OperatorToken": []}]


def test_the_operator_api_wants_the_operator_token(live_server: LiveServer) -> None:
    token, _ = live_server.login()
    with live_server.client() as anon, live_server.client(token) as reader:
        for http in (anon, reader):
            r = http.get("/v1/ops/projections")
            assert r.status_code == 401
            assert r.json()["code"] == "operator_token_required"
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = anon.get("/v1/ops/projections", headers=OPERATOR)
    assert r.status_code == 200
    names = {p["name"] for p in r.json()["items"]}
    assert {"shelf", "inbox", "rooms"} <= names
