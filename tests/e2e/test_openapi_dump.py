"""``python -m api.http.openapi`` (what the SDK's types are generated from) prints the very
document the running server serves at ``/schema/openapi.json``."""

from __future__ import annotations

import json

import httpx

from api.http.openapi import dump
from tests.e2e.conftest import LiveServer


def test_the_dumped_document_is_the_served_one(live_server: LiveServer) -> None:
    served = httpx.get(f"{live_server.url}/schema/openapi.json", timeout=30).json()
    assert json.loads(dump()) == served
