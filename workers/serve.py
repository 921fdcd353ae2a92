"""`engine serve`: the webhook receiver (engine.ingress.app) on uvloop, until SIGTERM/SIGINT."""

from __future__ import annotations

import uvloop
from aiohttp import web
from prometheus_client import start_http_server

from engine.ingress.app import create_app
from engine.settings import Settings
from workers.runtime import setup_logging


def main(settings: Settings) -> None:
    setup_logging(settings)
    if settings.metrics_port:  # /metrics on its own port, which need not be reachable from outside
        start_http_server(settings.metrics_port, addr=settings.http_host)
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=settings.shutdown_grace,
        access_log=None,
        print=None,
        handle_signals=True,
        loop=uvloop.new_event_loop(),
    )
