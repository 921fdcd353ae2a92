"""The receiver: aiohttp app with /webhooks/{channel_type}/{channel_id}, /healthz, /readyz, /metrics.

Per request: look the channel up, read the raw body once, verify the signature on those bytes, parse,
publish every event with broker confirms, and only then answer 200. It never runs a flow inline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine import channels, metrics
from engine.bus.topology import Topology
from engine.channels.base import Event, MalformedBody, Unauthorized, WebhookRequest
from engine.crypto import CredentialError, Vault
from engine.ingress import guards
from engine.ingress.capture import WebhookCapture
from engine.ingress.publisher import BrokerUnavailable, Publisher
from engine.models import ChannelInfo, ChannelType, InboundEvent
from engine.recovery import events as recovery_events
from engine.settings import Settings
from engine.store import credentials
from engine.store.channels import ChannelDirectory
from engine.store.pool import TRANSIENT_ERRORS, create_pool, ping

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
DIRECTORY = web.AppKey("directory", ChannelDirectory)
PUBLISHER = web.AppKey("publisher", Publisher)
POOL = web.AppKey("pool", asyncpg.Pool)
RETRY_AFTER = "5"  # seconds; a broker or database restart usually takes about that
VAULT = web.AppKey("vault", Vault)
# A credential that does not decrypt (a wrong master key) is the operator's to fix: 503 too, never 500.
LOOKUP_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, CredentialError)
CAPTURE = web.AppKey("capture", WebhookCapture)
# What the capture hook needs to know of a request, set by the handler once it is known.
CAPTURE_CHANNEL = web.RequestKey("capture_channel", ChannelInfo)
CAPTURE_EVENTS = web.RequestKey("capture_events", list[Event])


def _outcome(request: web.Request, channel_type: str, outcome: str, status: int, reason: str) -> web.Response:
    """Count and log a refused or dropped request; the log line carries no secret and no body. A 503
    asks the platform to retry (Retry-After), as it does anyway with back-off."""
    metrics.WEBHOOKS.labels(channel_type, outcome).inc()
    log.warning(
        "webhook %s: %s (%s)",
        outcome,
        reason,
        request.path,
        extra={"action": "webhook", "outcome": outcome, "status": status},
    )
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return web.json_response({"error": outcome, "detail": reason}, status=status, headers=headers)


async def _channel_and_body(
    request: web.Request, type_name: str, channel_type: ChannelType
) -> tuple[ChannelInfo, bytes] | web.Response:
    """The channel the URL names and the raw body, or the response that refuses the request."""
    settings = request.app[SETTINGS]
    try:
        channel = await request.app[DIRECTORY].get(request.match_info["channel_id"])
    except LOOKUP_ERRORS as exc:  # the database is away and the channel is not cached
        return _outcome(request, type_name, "unavailable", 503, f"database unavailable ({type(exc).__name__})")
    if channel is None or not channel.active or channel.type is not channel_type:
        return _outcome(request, type_name, "unknown_channel", 404, "no active channel with that id")
    try:
        body = await guards.read_body(request, settings.body_read_timeout)
    except web.HTTPRequestEntityTooLarge:
        return _outcome(request, type_name, "too_large", 413, f"body over {settings.max_body_bytes} bytes")
    except TimeoutError:
        return _outcome(request, type_name, "slow_body", 408, f"body not read in {settings.body_read_timeout:g}s")
    return channel, body


async def webhook(request: web.Request) -> web.StreamResponse:
    response = await _webhook(request)
    # Capture (load testing) sees every answered POST of a known channel; off, offer() returns at once.
    channel, capture = request.get(CAPTURE_CHANNEL), request.app[CAPTURE]
    if channel is not None and request.method == "POST" and response.status != 413 and capture.wants(channel):
        capture.offer(channel, request.headers, await request.read(), response.status, request.get(CAPTURE_EVENTS))
    return response


async def _webhook(request: web.Request) -> web.StreamResponse:
    type_name = request.match_info["channel_type"]
    try:
        channel_type = ChannelType(type_name)
        impl = channels.get(channel_type)
    except (ValueError, KeyError):
        return _outcome(request, "unknown", "unknown_channel", 404, f"unknown channel type {type_name!r}")
    found = await _channel_and_body(request, type_name, channel_type)
    if isinstance(found, web.Response):
        return found
    channel, body = found
    request[CAPTURE_CHANNEL] = channel
    settings = request.app[SETTINGS]
    raw = WebhookRequest(request.method, request.headers, request.query, body)

    try:
        if request.method == "GET":  # a subscription challenge (Meta); nothing else comes as GET
            reply = impl.handshake(raw, channel)
            if reply is None:
                return _outcome(request, type_name, "bad_method", 405, "this channel has no GET handshake")
        else:
            impl.verify(raw, channel)
            reply = impl.handshake(raw, channel)
        if reply is not None:
            metrics.WEBHOOKS.labels(type_name, "handshake").inc()
            return web.Response(status=reply.status, text=reply.text, content_type=reply.content_type)
        events = guards.parse_events(impl, raw, channel, settings.max_events_per_request)
        request[CAPTURE_EVENTS] = events
    except Unauthorized as exc:
        return _outcome(request, type_name, "unauthorized", exc.status, str(exc))
    except MalformedBody as exc:
        return _outcome(request, type_name, "malformed", 400, str(exc))
    except guards.TooManyEvents as exc:
        return _outcome(request, type_name, "too_many_events", 413, str(exc))

    if not events:
        metrics.EVENTS_IGNORED.labels(type_name).inc()
        metrics.WEBHOOKS.labels(type_name, "ignored").inc()
        log.info("webhook ignored: no event the engine handles (%s)", request.path)
        return web.Response(status=200, text="ok")
    started = time.perf_counter()
    try:
        await request.app[PUBLISHER].publish(events)
    except BrokerUnavailable as exc:
        return _outcome(request, type_name, "unavailable", 503, str(exc))
    metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
    metrics.EVENTS_PUBLISHED.inc(sum(isinstance(e, InboundEvent) for e in events))
    metrics.labelled(metrics.WEBHOOKS, channel_type.value, "accepted").inc()
    return web.Response(status=200, text="ok")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    checks = {"broker": request.app[PUBLISHER].ready, "database": False, "master_key": False}
    try:
        await ping(request.app[POOL])
        checks["database"] = True
        checks["master_key"] = await credentials.master_key_ok(request.app[POOL], request.app[VAULT])
    except Exception as exc:  # any failure means not ready; say which
        log.warning("readiness: database check failed: %s", type(exc).__name__)
    ok = all(checks.values())
    return web.json_response({"ready": ok, **checks}, status=200 if ok else 503)


async def metrics_view(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[guards.inflight_limit(settings.max_inflight)]
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    route = "/webhooks/{channel_type}/{channel_id}"
    app.router.add_post(route, webhook)
    app.router.add_get(route, webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if settings.metrics_on_webhook_port:  # off by default: the webhook port is public
        app.router.add_get("/metrics", metrics_view)
    recovery_events.install(app, settings, POOL)  # POST /events/{tenant}[/shopify]
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Open the pool and the broker link; close them in reverse order at shutdown."""
    settings = app[SETTINGS]
    pool = await create_pool(settings.database_url)
    app[POOL] = pool
    vault = await credentials.check_master_key(pool, settings.master_key)  # refuses to start with a wrong key
    app[VAULT] = vault
    app[DIRECTORY] = ChannelDirectory(pool, vault, settings.channel_cache_ttl, settings.unknown_channel_cache)
    topology = Topology.of(settings)
    publisher = Publisher(
        settings.amqp_url, topology, "engine-receiver", settings.publish_timeout, settings.publish_linger_ms / 1000
    )
    await publisher.start()
    app[PUBLISHER] = publisher
    app[CAPTURE] = WebhookCapture(pool, settings)
    yield
    await app[CAPTURE].close()
    await publisher.close()
    await pool.close()
