"""The admin API as an aiohttp sub-application mounted at /api/v1 on `engine serve`.

It has its own database pool (its transactions run as the role engine_api under row-level
security) and its own broker link (commands into conversations' shards, dead letters).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from engine.admin.api import brain, config, conversations, openapi, operations, recovery
from engine.admin.api.auth import LIMITER, RateLimiter, make_handler
from engine.admin.api.broker import ApiBroker
from engine.admin.api.context import POOL, SETTINGS
from engine.admin.api.conversations import BROKER
from engine.admin.api.routing import Route
from engine.bus.topology import Topology
from engine.settings import Settings
from engine.store.pool import create_pool

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
ROUTES: list[Route] = [
    *config.ROUTES, *brain.ROUTES, *conversations.ROUTES, *recovery.ROUTES, *operations.ROUTES
]  # fmt: skip
DOCUMENT = web.AppKey("api_document", bytes)


def mount(app: web.Application, settings: Settings) -> None:
    """Add the API under /api/v1 to the receiver app (a no-op when ENGINE_API_ENABLED is false)."""
    if settings.api_enabled:
        app.add_subapp(PREFIX, create_app(settings))


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[SETTINGS] = settings
    app[LIMITER] = RateLimiter(settings.api_rate_limit, settings.api_rate_burst)
    app[DOCUMENT] = orjson.dumps(openapi.document(ROUTES))
    app.cleanup_ctx.append(_resources)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, make_handler(route))
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/docs", _docs)
    return app


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENT], content_type="application/json")


async def _docs(request: web.Request) -> web.Response:
    return web.Response(text=openapi.DOCS_PAGE, content_type="text/html")


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods answer JSON like every other API error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason.lower().replace(" ", "_"), "detail": exc.reason},
                                 status=exc.status)  # fmt: skip


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.api_database_url or settings.database_url, min_size=1, max_size=10)
    app[POOL] = pool
    broker = ApiBroker(settings.amqp_url, Topology.of(settings),
                       settings.publish_timeout)  # fmt: skip
    app[BROKER] = broker
    yield
    await broker.close()
    await pool.close()
