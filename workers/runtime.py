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

import uvloop

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
    """Run main(stop) on uvloop; the first SIGTERM/SIGINT sets stop, a second one exits at once."""
    setup_logging(settings)

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
