"""Recovery end to end, with the real services and the fake platforms: a cart abandoned by a customer
the engine never talked to -> a WhatsApp template (outside the 24 h window) -> the contact's reply
answers the campaign's flow and stops the sequence -> an order is credited to the message with the
order's value -> the funnel. Also: an order between scheduling and claim stops the next step."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.fake_platforms import Recorder
from engine.recovery.report import funnel
from engine.settings import Settings
from tests.harness import load_tenant, running_engine
from tests.recovery_harness import (
    bundle,
    cart,
    order,
    post_event,
    post_whatsapp,
    start_scheduler,
    steps,
    wait_for,
    whatsapp_status,
    whatsapp_text,
)

ANA = {"phone": "+34 600 111 222", "name": "Ana"}


async def test_cart_template_reply_flow_order_and_funnel(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channels = await load_tenant(settings, bundle(delay0="1s", delay1="3s"))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        status, answer = await post_event(engine, cart("cart-1", ANA))
        assert (status, answer["scheduled"], answer["matched_contact"]) == (201, ["cart"], True)

        async with asyncio.timeout(20):
            [sent] = await recorder.wait_for(1, platform="whatsapp", ok=True)
        assert sent.body["type"] == "template"  # the contact never wrote: outside the window
        template = sent.body["template"]
        assert template["name"] == "cart_reminder" and template["language"] == {"code": "en_US"}
        body, button = template["components"]
        assert body["parameters"][0] == {"type": "text", "text": "Ana"}
        assert body["parameters"][1]["currency"] == {"fallback_value": "€59.90", "code": "EUR", "amount_1000": 59900}
        assert button == {"type": "button", "sub_type": "url", "index": "0",
                          "parameters": [{"type": "text", "text": "cart-1"}]}  # fmt: skip
        assert sent.body["to"] == "34600111222"
        await wait_for(lambda: _status(pool, 0, "sent"))
        # Status receipts reach the recovery message too (read implies delivered).
        wamid = sent.response["messages"][0]["id"]
        assert await post_whatsapp(engine, channels["wa"], whatsapp_status("34600111222", wamid, "read")) == 200
        rows = await wait_for(lambda: _status(pool, 0, "read"))
        assert rows[0]["delivered_at"] is not None and rows[0]["read_at"] is not None

        # The reply answers the campaign's flow (parked at its ask node) and marks the step replied.
        assert await post_whatsapp(engine, channels["wa"], whatsapp_text("34600111222", "yes", 1)) == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(2, platform="whatsapp", ok=True)
        assert recorder.sent("whatsapp")[-1].body["text"]["body"] == "Cart help: you said yes."
        await wait_for(lambda: _replied(pool))

        # The second step is due 3 s after the first: it is skipped because the contact replied.
        rows = await wait_for(lambda: _status(pool, 1, "skipped"))
        assert rows[1]["skip_reason"] == "replied"
        await asyncio.sleep(0.5)
        assert len(recorder.sent("whatsapp", ok=True)) == 2  # nothing else went out

        # The order is credited to the message, with the order's value (not the cart's).
        status, answer = await post_event(engine, order("order-1", ANA, 49.5))
        assert status == 201 and answer["credited_message"] is not None
        event = await pool.fetchrow(
            "SELECT status, recovered_value::float8 AS v FROM recovery_events WHERE source_id = 'cart-1'"
        )
        assert (event["status"], event["v"]) == ("recovered", 49.5)
        assert (await steps(pool, "cart-1"))[0]["conversion_value"] == 49.5

        [report] = await funnel(pool, "shop", None, (datetime.now(UTC) - timedelta(days=1)).date()) or []
        assert {k: report[k] for k in ("events", "scheduled", "sent", "delivered", "read", "replied", "converted")} == {
            "events": 1, "scheduled": 2, "sent": 1, "delivered": 1, "read": 1, "replied": 1, "converted": 1,
        }  # fmt: skip
        assert (report["revenue_at_risk"], report["revenue_recovered"]) == (59.9, 49.5)
        assert report["skipped"] == {"replied": 1}


async def test_order_between_scheduling_and_claim_stops_the_next_step(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    await load_tenant(settings, bundle(delay0="1s", delay1="2s"))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        assert (await post_event(engine, cart("cart-2", ANA)))[0] == 201
        await wait_for(lambda: _status(pool, 0, "sent"))
        # Step 1 is pending (due in 2 s) when the order arrives.
        assert [r["status"] for r in await steps(pool, "cart-2")] == ["sent", "pending"]
        status, answer = await post_event(engine, order("order-2", ANA, 80.0))
        assert status == 201 and answer["credited_message"] is not None
        rows = await wait_for(lambda: _status(pool, 1, "skipped"))
        assert rows[1]["skip_reason"] == "converted"
        await asyncio.sleep(0.5)
        assert len(recorder.sent("whatsapp", ok=True)) == 1


async def _status(pool: asyncpg.Pool, step: int, status: str) -> list[dict[str, object]] | None:
    rows = await steps(pool)
    return rows if len(rows) > step and rows[step]["status"] == status else None


async def _replied(pool: asyncpg.Pool) -> bool:
    return any(r["replied_at"] is not None for r in await steps(pool))
