"""No token or ticket in a log line: the filter ``liudong serve`` puts on uvicorn's handlers."""

from __future__ import annotations

import io
import logging

from api.bootstrap.logs import RedactSecrets, redact, uvicorn_log_config

TOKEN = "ld_" + "A" * 43
TICKET = "lt_" + "b-_" * 14 + "c"


def test_query_values_and_token_shaped_strings_are_redacted() -> None:
    assert redact(f"GET /v1/ws?after=3&token={TOKEN}&x=1") == (
        "GET /v1/ws?after=3&token=[redacted]&x=1"
    )
    assert redact(f"/v1/ws?ticket={TICKET}") == "/v1/ws?ticket=[redacted]"
    assert TOKEN not in redact(f"Bearer {TOKEN} failed")
    assert redact("nothing here") == "nothing here"


def test_uvicorn_access_and_error_records_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        # as uvicorn's access log and its WebSocket line call it
        logger.warning(
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/v1/ws?token={TOKEN}", "1.1", 101
        )
        logger.warning('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", f"/v1/ws?ticket={TICKET}")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert TOKEN not in out and TICKET not in out and out.count("[redacted]") == 2


def test_the_serve_log_config_filters_every_handler() -> None:
    config = uvicorn_log_config()
    assert all("redact_secrets" in h["filters"] for h in config["handlers"].values())
    assert config["filters"]["redact_secrets"]["()"] is RedactSecrets
    # (tests/e2e/test_sessions_end.py runs `liudong serve --access-log` with it)
