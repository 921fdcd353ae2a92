"""Shopify webhooks mapped onto recovery events.

Shopify has no "abandoned" webhook: a checkout is abandoned when it stays idle. checkouts/create and
checkouts/update store (or refresh) a `checkout_abandoned` event keyed on the checkout token, whose
first step waits the campaign's first delay (the idle delay) after the checkout's latest update; an
update with completed_at converts it and cancels its pending steps. orders/create is `order_placed`
with the order's own value (keyed on the order id), which attribution credits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from engine.recovery.campaigns import EventType
from engine.recovery.intake import CustomerRef, NewEvent, Stored, event_id, store_event
from engine.store import recovery as sql

TOPICS = ("checkouts/create", "checkouts/update", "orders/create")


class ShopifyPayloadError(ValueError):
    """The webhook lacks what the mapping needs."""


def _time(value: Any) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ShopifyPayloadError(f"not a timestamp: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _money(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01")) if value not in (None, "") else None
    except InvalidOperation:
        raise ShopifyPayloadError(f"not an amount: {value!r}") from None


def _customer(doc: dict[str, Any]) -> CustomerRef:
    customer: dict[str, Any] = doc["customer"] if isinstance(doc.get("customer"), dict) else {}
    address: dict[str, Any] = doc["shipping_address"] if isinstance(doc.get("shipping_address"), dict) else {}
    phone = doc.get("phone") or customer.get("phone") or address.get("phone")
    email = doc.get("email") or customer.get("email")
    name = " ".join(x for x in (customer.get("first_name"), customer.get("last_name")) if x) or None
    if not phone and not email:
        raise ShopifyPayloadError("the webhook names no customer phone or email")
    return CustomerRef(phone=phone, email=email and str(email).lower(), name=name)


def _items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"title": i.get("title"), "quantity": i.get("quantity"), "price": i.get("price")}
        for i in doc.get("line_items") or []
        if isinstance(i, dict)
    ]


async def handle(conn: asyncpg.Connection, tenant_id: str, timezone: str, topic: str, doc: dict[str, Any]) -> Stored:
    if topic == "orders/create":
        if doc.get("id") is None:
            raise ShopifyPayloadError("an order without id")
        order = NewEvent(
            EventType.ORDER_PLACED, "shopify", f"order:{doc['id']}", _customer(doc), _money(doc.get("total_price")),
            doc.get("currency"), {"order_number": doc.get("order_number"), "checkout_token": doc.get("checkout_token"),
                                  "line_items": _items(doc)},
            _time(doc.get("created_at")),
        )  # fmt: skip
        return await store_event(conn, tenant_id, timezone, order)
    token = doc.get("token")
    if not token:
        raise ShopifyPayloadError("a checkout without token")
    source_id = f"checkout:{token}"
    updated = _time(doc.get("updated_at") or doc.get("created_at"))
    data = {"checkout_url": doc.get("abandoned_checkout_url"), "token": token, "line_items": _items(doc)}
    completed = bool(doc.get("completed_at"))
    value, currency = _money(doc.get("total_price")), doc.get("currency")
    existing = await conn.fetchrow(sql.UPDATE_CHECKOUT, tenant_id, source_id, data, value, currency, updated, completed)
    if existing is not None:  # an update of a checkout we know: idle again from now, or done
        if completed:
            await conn.execute(sql.CANCEL_PENDING_FOR_EVENT, existing["id"])
        else:
            await conn.execute(sql.RESCHEDULE_FIRST_STEPS, existing["id"], existing["occurred_at"])
        return Stored(existing["id"], duplicate=True)
    if completed:  # completed before we ever saw it idle: nothing to recover
        return Stored(event_id(tenant_id, "shopify", source_id), duplicate=True)
    checkout = NewEvent(
        EventType.CHECKOUT_ABANDONED, "shopify", source_id, _customer(doc), value, currency, data, updated
    )
    return await store_event(conn, tenant_id, timezone, checkout)
