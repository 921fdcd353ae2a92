"""The Shopify adapter: signed checkouts become checkout_abandoned after the idle delay (moved by each
update, cancelled by completed_at), retried deliveries are seen once, orders/create is credited."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.fake_platforms import Recorder
from engine.recovery.events import shopify_signature
from engine.settings import Settings
from tests.harness import Running, count, load_tenant, running_engine
from tests.recovery_harness import SHOPIFY_SECRET, bundle, start_scheduler, wait_for


async def shopify(
    engine: Running, topic: str, delivery: str, doc: dict[str, Any], secret: str = SHOPIFY_SECRET
) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": delivery,
               "X-Shopify-Hmac-Sha256": shopify_signature(secret, raw)}  # fmt: skip
    async with engine.http.post(f"{engine.url}/events/shop/shopify", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


def checkout(token: str, phone: str, updated: datetime, completed: bool = False) -> dict[str, Any]:
    return {
        "token": token, "email": f"{token}@example.com", "phone": phone, "total_price": "120.00", "currency": "EUR",
        "updated_at": updated.isoformat(), "completed_at": updated.isoformat() if completed else None,
        "abandoned_checkout_url": f"https://shop.example/checkouts/{token}",
        "line_items": [{"title": "Shoes", "quantity": 1, "price": "120.00"}],
        "customer": {"first_name": "Lu", "phone": phone},
    }  # fmt: skip


async def _scheduled_at(pool: asyncpg.Pool, token: str) -> datetime:
    return await pool.fetchval(  # type: ignore[no-any-return]
        "SELECT m.scheduled_at FROM recovery_messages m JOIN recovery_events e ON e.id = m.event_id "
        "WHERE e.source_id = $1 AND m.step = 0",
        f"checkout:{token}",
    )


async def test_checkouts_orders_and_deliveries(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    await load_tenant(settings, bundle(delay0="3s", delay1="1h"))
    now = datetime.now(UTC)
    async with running_engine(settings) as engine:
        doc = checkout("t1", "+34 633 000 001", now)
        assert (await shopify(engine, "checkouts/create", "w1", doc, secret="wrong"))[0] == 401
        assert await count(pool, "SELECT count(*) FROM recovery_events") == 0
        status, answer = await shopify(engine, "checkouts/create", "w1", doc)
        assert (status, answer["scheduled"]) == (201, ["cart"])
        assert (await shopify(engine, "checkouts/create", "w1", doc))[1] == {"duplicate": True, "delivery": "w1"}
        first = await _scheduled_at(pool, "t1")
        assert abs((first - now).total_seconds() - 3) < 0.01  # the idle delay after the checkout's update
        # An update: the checkout is idle from its latest change, so the first step moves with it.
        later = now + timedelta(seconds=1)
        assert (await shopify(engine, "checkouts/update", "w2", checkout("t1", "+34 633 000 001", later)))[0] == 200
        assert abs((await _scheduled_at(pool, "t1") - first).total_seconds() - 1) < 0.01
        # A checkout completed before it went idle: its step is cancelled, the event converted.
        assert (await shopify(engine, "checkouts/create", "w3", checkout("t2", "+34633000002", now)))[0] == 201
        done = checkout("t2", "+34633000002", later, completed=True)
        assert (await shopify(engine, "checkouts/update", "w4", done))[0] == 200
        row = await pool.fetchrow("SELECT e.status, m.status AS step FROM recovery_events e JOIN recovery_messages m "
                                  "ON m.event_id = e.id WHERE e.source_id = 'checkout:t2'")  # fmt: skip
        assert (row["status"], row["step"]) == ("converted", "cancelled")

        start_scheduler(engine)
        async with asyncio.timeout(20):
            [sent] = await recorder.wait_for(1, platform="whatsapp", ok=True)
        assert sent.chat == "34633000001" and sent.body["type"] == "template"
        await wait_for(lambda: count(pool, "SELECT count(*) FROM recovery_messages WHERE sent_at IS NOT NULL"))
        order = {"id": 5001, "order_number": 1001, "email": "t1@example.com", "phone": "+34633000001",
                 "total_price": "99.00", "currency": "EUR", "checkout_token": "t1",
                 "created_at": datetime.now(UTC).isoformat()}  # fmt: skip
        status, answer = await shopify(engine, "orders/create", "w5", order)
        assert status == 201 and answer["credited_message"] is not None
        event = await pool.fetchrow(
            "SELECT status, recovered_value::float8 AS v FROM recovery_events WHERE source_id = 'checkout:t1'"
        )
        assert (event["status"], event["v"]) == ("recovered", 99.0)
        assert len(recorder.sent("whatsapp")) == 1  # t2 never went out
