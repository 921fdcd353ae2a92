"""`engine serve`: the webhook receiver (engine.ingress.app) and the admin API (engine.admin.api) on
uvloop, until SIGTERM/SIGINT."""

from __future__ import annotations

import uvloop
from aiohttp import web
from prometheus_client import start_http_server

from engine import heap
from engine.admin.api import app as admin_api
from engine.ingress.app import create_app
from engine.settings import Settings
from workers.runtime import setup_logging


def build_app(settings: Settings) -> web.Application:
    """The receiver, with the admin API mounted at /api/v1 (unless ENGINE_API_ENABLED=false)."""
    app = create_app(settings)
    admin_api.mount(app, settings)
    app.on_startup.append(_freeze_heap)  # last: after the pools and the publisher are open
    return app


async def _freeze_heap(app: web.Application) -> None:
    heap.freeze()  # what is alive now lives as long as the process


def main(settings: Settings) -> None:
    setup_logging(settings)
    if settings.metrics_port:  # /metrics on its own port, which need not be reachable from outside
        start_http_server(settings.metrics_port, addr=settings.http_host)
    web.run_app(
        build_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=settings.shutdown_grace,
        access_log=None,
        # aiohttp's default is 128. A burst of new connections (a platform catching up, a load test's
        # start) overflowed it: each dropped SYN is retried after a second. The kernel caps it at
        # net.core.somaxconn.
        backlog=1024,
        print=None,
        handle_signals=True,
        loop=uvloop.new_event_loop(),
    )
