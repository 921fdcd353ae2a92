"""`POST /events/{tenant}` and `POST /events/{tenant}/shopify`: recovery events in, signed.

The generic endpoint takes a JSON event signed like the platforms sign webhooks: the header
`X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body under the tenant's signing_key>`. The
Shopify adapter takes Shopify's own webhooks (`X-Shopify-Hmac-Sha256`: base64 HMAC of the raw body
under shopify_secret; `X-Shopify-Webhook-Id` dedupes retried deliveries): checkouts/create and
checkouts/update become a `checkout_abandoned` event whose first step waits the campaign's idle
delay after the checkout's latest update (and is cancelled when completed_at arrives); orders/create
becomes `order_placed`.

Answers: 201 stored, 200 a duplicate (nothing changed), 400 not JSON, 401 bad or missing signature,
404 unknown tenant or recovery not configured, 413 too large, 422 invalid event (the path of each
bad field), 503 database unavailable (retry). Nothing is stored unless the signature holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from pydantic import Field, ValidationError, field_validator, model_validator

from engine import metrics
from engine.crypto import CredentialError, Vault
from engine.models import ChannelType
from engine.recovery.campaigns import EventType
from engine.recovery.intake import CustomerRef, NewEvent, Stored, event_id, store_event
from engine.settings import Settings
from engine.store import recovery as sql
from engine.validation import Strict, problem_lines

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-256"
POOL_KEY = web.AppKey("recovery_pool_key", web.AppKey)  # the receiver's own pool, under its own key
VAULT = web.AppKey("recovery_vault", Vault)
MAX_FUTURE = timedelta(minutes=5)
UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


class Customer(Strict):
    platform: ChannelType | None = None
    id: str | None = Field(default=None, min_length=1, max_length=200)
    channel: str | None = None
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _reachable(self) -> Customer:
        if (self.platform is None) != (self.id is None):
            raise ValueError("platform and id go together")
        if self.id is None and self.phone is None and self.email is None:
            raise ValueError("a customer needs platform + id, a phone or an email")
        return self


class EventIn(Strict):
    type: EventType
    source: str = Field(default="api", pattern=r"^[a-z0-9_\-]{1,40}$")
    source_id: str = Field(min_length=1, max_length=200)  # the source's own id: the dedupe key
    customer: Customer
    value: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    data: dict[str, Any] = {}
    occurred_at: datetime | None = None

    @field_validator("occurred_at")
    @classmethod
    def _aware_past(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("occurred_at needs a time zone (e.g. 2025-01-31T10:00:00Z)")
        if value - datetime.now(UTC) > MAX_FUTURE:
            raise ValueError("occurred_at is in the future")
        return value

    def to_event(self) -> NewEvent:
        c = self.customer
        return NewEvent(
            self.type, self.source, self.source_id,
            CustomerRef(c.platform, c.id, c.channel, c.phone, c.email, c.name),
            self.value, self.currency, self.data, self.occurred_at or datetime.now(UTC),
        )  # fmt: skip


def signature(key: str, body: bytes) -> str:
    """The X-Signature-256 value for body: `sha256=` + hex HMAC-SHA256 (as Meta signs webhooks)."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def shopify_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _refuse(request: web.Request, status: int, error: str, detail: str) -> web.Response:
    """Log (no body, no secret) and answer a refused event with its own status."""
    log.warning("recovery event refused: %s: %s (%s)", error, detail, request.path, extra={"status": status})
    metrics.RECOVERY_EVENTS.labels(error).inc()
    return web.json_response({"error": error, "detail": detail}, status=status)


async def _tenant(request: web.Request) -> tuple[str, str, dict[str, str]] | None:
    row = await _pool(request).fetchrow(sql.SELECT_TENANT, request.match_info["tenant"])
    if row is None:
        return None
    try:
        secrets = request.app[VAULT].decrypt(row["secrets"]) if row["secrets"] else {}
    except CredentialError:
        log.error("recovery secrets of tenant %s cannot be decrypted with ENGINE_MASTER_KEY", row["id"])
        secrets = {}
    return row["id"], row["timezone"], secrets


async def _body(request: web.Request) -> bytes | web.Response:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refuse(request, 413, "too_large", "body over the size limit")


async def _signed(
    request: web.Request,
    secret: str,
    header: str,
    sign: Callable[[str, bytes], str],
    what: str,
    *,
    hex_digest: bool = False,
) -> tuple[str, str, bytes] | web.Response:
    """The tenant's id, time zone and the raw body, once the body's signature under the tenant's
    `secret` checks out; otherwise the refusal to answer (404, 413, 401, or 503 with the database away)."""
    try:
        tenant = await _tenant(request)
    except UNAVAILABLE as exc:
        return _refuse(request, 503, "unavailable", f"database unavailable ({type(exc).__name__})")
    if tenant is None or not tenant[2].get(secret):
        return _refuse(request, 404, "unknown_tenant", f"no tenant {what} at this URL")
    tenant_id, timezone, secrets = tenant
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    given = request.headers.get(header, "").strip()
    if hex_digest:  # a hex digest's case carries nothing; base64's does
        given = given.lower()
    if not given or not hmac.compare_digest(given.encode(), sign(secrets[secret], body).encode()):
        return _refuse(request, 401, "unauthorized", f"missing or wrong {header}")
    return tenant_id, timezone, body


async def post_event(request: web.Request) -> web.Response:
    signed = await _signed(
        request, "signing_key", SIGNATURE_HEADER, signature, "with recovery events configured", hex_digest=True
    )
    if isinstance(signed, web.Response):
        return signed
    tenant_id, timezone, body = signed
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _refuse(request, 400, "malformed", f"invalid JSON: {exc}")
    try:
        event = EventIn.model_validate(doc)
    except ValidationError as exc:
        problems = problem_lines(exc)
        log.warning("recovery event refused: invalid: %s", "; ".join(problems))
        metrics.RECOVERY_EVENTS.labels("invalid").inc()
        return web.json_response({"error": "invalid", "detail": problems}, status=422)
    try:
        async with _pool(request).acquire() as conn, conn.transaction():
            stored = await store_event(conn, tenant_id, timezone, event.to_event())
    except UNAVAILABLE as exc:  # the sender retries: nothing was stored
        return _refuse(request, 503, "unavailable", f"database unavailable ({type(exc).__name__})")
    return _stored(stored)


def _stored(stored: Stored) -> web.Response:
    metrics.RECOVERY_EVENTS.labels("duplicate" if stored.duplicate else "stored").inc()
    answer = {"id": stored.id, "duplicate": stored.duplicate, "scheduled": stored.scheduled,
              "matched_contact": stored.contact_id is not None, "credited_message": stored.credited}  # fmt: skip
    return web.json_response(answer, status=200 if stored.duplicate else 201)


async def post_shopify(request: web.Request) -> web.Response:
    signed = await _signed(
        request, "shopify_secret", "X-Shopify-Hmac-Sha256", shopify_signature, "with a Shopify secret"
    )
    if isinstance(signed, web.Response):
        return signed
    tenant_id, timezone, body = signed
    topic = request.headers.get("X-Shopify-Topic", "")
    delivery = request.headers.get("X-Shopify-Webhook-Id", "")
    try:
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _refuse(request, 400, "malformed", f"invalid JSON: {exc}")
    from engine.recovery import shopify  # the adapter's mapping, kept apart from the transport

    if topic not in shopify.TOPICS:
        log.info("shopify topic %r ignored", topic)
        return web.json_response({"ignored": topic}, status=200)
    try:
        async with _pool(request).acquire() as conn, conn.transaction():
            if delivery and await conn.fetchval(sql.INSERT_DELIVERY, tenant_id, "shopify", delivery) is None:
                return web.json_response({"duplicate": True, "delivery": delivery}, status=200)
            stored = await shopify.handle(conn, tenant_id, timezone, topic, doc)
    except shopify.ShopifyPayloadError as exc:
        return _refuse(request, 422, "invalid", str(exc))
    except UNAVAILABLE as exc:  # Shopify retries: nothing was stored
        return _refuse(request, 503, "unavailable", f"database unavailable ({type(exc).__name__})")
    return _stored(stored)


def install(app: web.Application, settings: Settings, pool_key: web.AppKey[asyncpg.Pool]) -> None:
    """Add the events routes to the receiver app; they use the receiver's pool (app[pool_key])."""
    app.router.add_post("/events/{tenant}", post_event)
    app.router.add_post("/events/{tenant}/shopify", post_shopify)
    app[POOL_KEY] = pool_key

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[VAULT] = Vault(settings.master_key)
        yield

    app.cleanup_ctx.append(resources)


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.app[request.app[POOL_KEY]]


__all__ = ["EventIn", "event_id", "install", "shopify_signature", "signature"]
