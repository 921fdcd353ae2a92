"""Shared process plumbing: logging, uvloop, and signals that become a stop request.

SIGTERM and SIGINT only set the stop event; each process then stops taking work, drains what is in
flight, flushes and closes, in that order (procrastinate's and arq's shape).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from prometheus_client import start_http_server

from engine.settings import Settings


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)


def run(main: Callable[[asyncio.Event], Awaitable[None]], settings: Settings) -> None:
    """Run main(stop) on uvloop; the first SIGTERM/SIGINT sets stop, a second one exits at once.
    With ENGINE_METRICS_PORT set, the process serves Prometheus metrics on that port."""
    setup_logging(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.http_host)

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop(signum: int) -> None:
            if stop.is_set():
                logging.getLogger(__name__).warning("second signal: exiting now")
                sys.exit(1)
            logging.getLogger(__name__).info("signal %s: stopping gracefully", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, request_stop, sig)
        await main(stop)

    uvloop.run(wrapper())


async def until_stop_or_failure(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> bool:
    """Wait for a stop request or for one of the process's long-lived tasks to end.
    Returns True if a task died (the process should then exit non-zero after shutting down,
    so that its supervisor restarts it)."""
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    died = False
    for task in done - {stopper}:
        died = True
        error = None if task.cancelled() else task.exception()
        logging.getLogger(__name__).error("task %s ended (%r); shutting down", task.get_name(), error)
    return died
