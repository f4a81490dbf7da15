"""Log hygiene: no session token or WebSocket ticket in any log line.

uvicorn's access log prints each request's path with its query string, and its error log
prints a WebSocket's URL ("WebSocket /v1/ws?ticket=…" [accepted]). ``RedactSecrets`` is a
``logging.Filter`` that replaces the value of ``token=`` / ``ticket=`` query parameters, and
any ``ld_``/``lt_`` token-shaped string, with ``[redacted]``, in the message and its
arguments. ``uvicorn_log_config()`` is uvicorn's default logging configuration with this
filter on every handler (``liudong serve`` runs with it); ``install()`` puts it on the root
handlers of a process configured otherwise."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

REDACTED = "[redacted]"
_QUERY_SECRET = re.compile(r"(?i)\b(token|ticket|access_token)=([^&\s\"']+)")
_TOKEN_SHAPE = re.compile(r"\bl[dt]_[A-Za-z0-9_\-]{20,}")


def redact(text: str) -> str:
    """``text`` without secrets: ``token=…``/``ticket=…`` values and token-shaped strings."""
    if "=" not in text and "_" not in text:
        return text
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _TOKEN_SHAPE.sub(REDACTED, text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    return value


class RedactSecrets(logging.Filter):
    """Redacts secrets in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = _clean(record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's ``LOGGING_CONFIG`` with ``RedactSecrets`` on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": RedactSecrets}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact_secrets")
    return config


def install() -> None:
    """Put ``RedactSecrets`` on the root logger's handlers and uvicorn's loggers."""
    flt = RedactSecrets()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.addFilter(flt)
        for handler in logger.handlers:
            handler.addFilter(flt)


__all__ = ["REDACTED", "RedactSecrets", "install", "redact", "uvicorn_log_config"]
