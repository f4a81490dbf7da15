"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.bootstrap.container import Container
from api.bootstrap.gc_pauses import gc_lifespan
from api.bootstrap.media import media_lifespan
from api.bootstrap.realtime import realtime_lifespan
from api.bootstrap.settings import Settings
from api.http.auth import AUTH_DEPENDENCIES
from api.http.controllers.auth import AuthController
from api.http.controllers.books import BookController, IsbnController
from api.http.controllers.chat import ConversationController
from api.http.controllers.health import healthz, readyz
from api.http.controllers.inbox import InboxController
from api.http.controllers.loans import LoanController
from api.http.controllers.me import MeController, SubscriptionsController
from api.http.controllers.media import media_router
from api.http.controllers.metrics import metrics
from api.http.controllers.ops import OpsController
from api.http.controllers.rooms import RoomController
from api.http.controllers.wechat_push import receive_push, verify_push
from api.http.controllers.ws import create_ws_ticket, ws_endpoint
from api.http.errors import EXCEPTION_HANDLERS
from api.http.openapi import document
from api.http.params import check_query
from api.http.web import web_routers

MAX_BODY_BYTES = 64 * 1024

API_DESCRIPTION = """The API of 流动图书馆 (the drifting library): lending and chat.

- Authentication: `Authorization: Bearer <token>` from `POST /v1/auth/login`. Public
  operations (`security: []`) need none, but a token that is sent is checked (401 if bad).
- Errors are RFC 9457 `application/problem+json` (`Problem`) with a stable `code`; each
  response lists the codes it can carry.
- Lists: `{"items", "next_cursor"}`. Pass `next_cursor` back as `cursor` until it is `null`.
  A query parameter that an operation does not declare is a 422 `unknown_parameter`.
- Commands answer once the read models show their effect (read-your-writes), with
  `Liudong-Position`; if a read model lags past the consistency timeout, 202 `Accepted`.
  POSTs that create take an `Idempotency-Key`.
- Realtime: the WebSocket `GET /v1/ws` (not an OpenAPI operation), see docs/REALTIME.md.
- Operators: `/v1/ops/…` with `Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>` (the console
  at `/ops`; docs/OPERATIONS.md).
"""


def create_app(settings: Settings | None = None, container: Container | None = None) -> Litestar:
    """Build the app. The container (database, projections, …) is built in the lifespan
    unless one is given (tests may share one)."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Synchronous handlers (``sync_to_thread``) run in the loop's default executor, whose
        # default size is min(32, CPUs + 4): 6 threads on two CPUs would cap the requests in
        # flight at 6, each command holding its thread while it waits for its read models.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.handler_threads, thread_name_prefix="liudong-handler")
        )
        owned = container is None
        built = container or await anyio.to_thread.run_sync(Container.build, settings)
        app.state.container = built
        try:
            yield
        finally:
            if owned:
                await built.aclose()

    app = Litestar(
        route_handlers=[
            AuthController,
            MeController,
            SubscriptionsController,
            BookController,
            IsbnController,
            LoanController,
            ConversationController,
            InboxController,
            RoomController,
            ws_endpoint,
            create_ws_ticket,
            healthz,
            readyz,
            metrics,
            media_router(settings),  # its own body limit (LIUDONG_MEDIA_MAX_BYTES)
            verify_push,
            receive_push,
            OpsController,  # the operator console's API (LIUDONG_OPERATOR_TOKEN)
            *web_routers(),  # the H5 at /, the console at /ops, the SDK at /sdk
        ],
        dependencies=AUTH_DEPENDENCIES,
        before_request=check_query,
        exception_handlers=EXCEPTION_HANDLERS,
        # the others need the container; gc_lifespan freezes what they all built
        lifespan=[lifespan, realtime_lifespan, media_lifespan, gc_lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="Liudong API",
            version="1.0.0",
            path="/schema",
            description=API_DESCRIPTION,
            use_handler_docstrings=True,
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="Session token from /v1/auth/login",
                    ),
                    "OperatorToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="LIUDONG_OPERATOR_TOKEN (the operator console, /v1/ops)",
                    ),
                }
            ),
            security=[{"BearerToken": []}],
        ),
        debug=False,
    )
    document(app)  # the document tells the truth: api.http.openapi
    return app


__all__ = ["AppConfig", "create_app"]
