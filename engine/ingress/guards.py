"""The receiver's limits: what keeps one caller (or a burst of them) from taking the receiver down.

- Requests in flight on /webhooks are capped (ENGINE_MAX_INFLIGHT): one over the cap is answered
  503 with Retry-After at once, before its body is read, so memory stays bounded by
  max_inflight x max_body_bytes however many connections arrive.
- A body must arrive within ENGINE_BODY_READ_TIMEOUT seconds (408 otherwise).
- A body may carry at most ENGINE_MAX_EVENTS_PER_REQUEST events (413 otherwise, nothing enqueued).
- A parser that trips over a body of the wrong shape gives 400, whatever it raised; the events it
  returns are cleaned (engine.channels.clean) before anything is published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from engine import metrics
from engine.channels import clean
from engine.channels.base import Channel, Event, MalformedBody, WebhookRequest
from engine.models import ChannelInfo

log = logging.getLogger(__name__)

RETRY_AFTER = "1"  # seconds a platform is asked to wait when the receiver is saturated
# What a parser raises on a body that is valid JSON but not the documented shape.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TooManyEvents(Exception):
    """The body carries more events than ENGINE_MAX_EVENTS_PER_REQUEST."""


def unavailable(reason: str, channel_type: str, outcome: str = "unavailable") -> web.Response:
    """503 with Retry-After: the platform retries later; nothing was enqueued."""
    metrics.WEBHOOKS.labels(channel_type, outcome).inc()
    log.warning("webhook %s: %s", outcome, reason, extra={"action": "webhook", "outcome": outcome, "status": 503})
    return web.json_response({"error": outcome, "detail": reason}, status=503, headers={"Retry-After": RETRY_AFTER})


def inflight_limit(limit: int) -> Middleware:
    """Middleware: at most `limit` webhook requests at once; the next is 503 at once."""
    state = {"inflight": 0}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/webhooks/"):
            return await handler(request)
        if state["inflight"] >= limit:
            channel_type = request.match_info.get("channel_type", "unknown")
            return unavailable(f"{limit} requests in flight", channel_type, "busy")
        state["inflight"] += 1
        metrics.INFLIGHT.inc()
        try:
            return await handler(request)
        finally:
            state["inflight"] -= 1
            metrics.INFLIGHT.dec()

    return middleware


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The raw body; raises TimeoutError when it does not arrive in time, and aiohttp's
    HTTPRequestEntityTooLarge past client_max_size."""
    if request.content.is_eof():  # already all in the buffer (the usual small webhook): nothing to wait for
        return await request.read()
    async with asyncio.timeout(seconds):
        return await request.read()


def parse_events(impl: Channel, raw: WebhookRequest, channel: ChannelInfo, max_events: int) -> list[Event]:
    """The body's events, cleaned; MalformedBody for a body of the wrong shape, TooManyEvents."""
    try:
        events = impl.parse(raw, channel)
    except SHAPE_ERRORS as exc:
        raise MalformedBody(f"body does not have the platform's shape: {type(exc).__name__}") from None
    if len(events) > max_events:
        raise TooManyEvents(f"{len(events)} events in one request (at most {max_events})")
    return clean.events(events)
