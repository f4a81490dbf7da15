"""The browser clients served by ``liudong serve``: the H5 client at ``/``, the operator
console at ``/ops`` and the mini-program SDK's ES modules at ``/sdk`` (the H5 imports them).

Plain ES modules, no bundler and no build step: the files in ``api/http/assets/`` are what
the browser runs (``assets/sdk`` is a link to ``clients/miniprogram/src``; a wheel copies the
files it points to, ``[tool.setuptools.package-data]``), so the server needs no Node.js.

Caching: every file is sent with ``Cache-Control: no-cache`` and an ``ETag`` (Litestar's
static files: size and modification time), so a browser keeps its copy and revalidates it
(``If-None-Match`` → 304, no body) on each load, and a deployment is seen at once. Hashed,
``immutable`` file names would need a build step to rename the files and rewrite the
imports; for a dozen small modules the revalidations cost one round trip each, in parallel
(HTTP/2 behind nginx, docs/DEPLOY.md). These routes are not part of the OpenAPI document and
take any query string (``?v=…`` cache busting included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

ASSETS = Path(__file__).resolve().parent / "assets"
"""``h5/``, ``ops/`` and ``sdk/`` (the SDK's ``src``)."""

REVALIDATE = CacheControlHeader(no_cache=True)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison, ``*`` matches any."""
    strip = lambda tag: tag.strip().removeprefix("W/")  # noqa: E731
    wanted = [strip(t) for t in if_none_match.split(",")]
    return "*" in wanted or strip(etag) in wanted


def not_modified(app: ASGIApp) -> ASGIApp:
    """ASGI middleware of the static routes: a ``GET``/``HEAD`` whose ``If-None-Match``
    matches the file's ``ETag`` is answered ``304 Not Modified`` without a body (RFC 9110
    §15.4.5), keeping ``ETag`` and ``Cache-Control``. (Litestar's file responses send an
    ETag but do not answer conditional requests.)"""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        wanted = headers.get(b"if-none-match")
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or not wanted:
            await app(scope, receive, send)
            return
        swallowing = False

        async def send_or_304(message: Message) -> None:
            nonlocal swallowing
            if swallowing:
                return
            if message["type"] == "http.response.start" and message["status"] == 200:
                sent: list[Any] = list(message.get("headers") or [])
                etag = next((v for k, v in sent if k.lower() == b"etag"), None)
                if etag is not None and _matches(wanted.decode("latin-1"), etag.decode("latin-1")):
                    swallowing = True
                    kept = [(k, v) for k, v in sent if k.lower() in (b"etag", b"cache-control")]
                    await send({"type": "http.response.start", "status": 304, "headers": kept})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            await send(message)

        await app(scope, receive, send_or_304)

    return middleware


def _directory(name: str) -> Path:
    # resolved, so the static files' own check ("inside the directory") accepts the link
    return (ASSETS / name).resolve()


def web_routers() -> list[Router]:
    """The static routers: ``/ops``, ``/sdk``, then ``/`` (the H5). ``index.html`` answers
    ``/`` and ``/ops``; an unknown path is a 404 problem, like the API's (the H5 routes in
    the fragment, ``/#/book/…``, so it needs no fallback page)."""
    routers = []
    for path, name in (("/ops", "ops"), ("/sdk", "sdk"), ("/", "h5")):
        directory = _directory(name)
        if not directory.is_dir():  # e.g. a wheel built without the SDK: serve the rest
            continue
        routers.append(
            create_static_files_router(
                path=path,
                directories=[directory],
                html_mode=name != "sdk",
                name=f"web-{name}",
                cache_control=REVALIDATE,
                include_in_schema=False,
                middleware=[not_modified],
            )
        )
    return routers


__all__ = ["ASSETS", "web_routers"]
