"""The rules a recovery step must obey, end to end: the events endpoint's signature and dedupe; template
or text by each platform's window; quiet hours (hold, or skip when stale); the frequency cap;
STOP words and WhatsApp user_preferences; 131049 retried later; attribution at the window's edges."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from engine.fake_platforms import Recorder
from engine.fake_platforms.recorder import Fault
from engine.loadtest import traffic
from engine.models import ChannelType
from engine.settings import Settings
from engine.worker.conversations import contact_id
from tests.harness import count, load_tenant, running_engine
from tests.recovery_harness import (
    APP_SECRET,
    bundle,
    cart,
    order,
    post_event,
    post_whatsapp,
    start_scheduler,
    steps,
    wait_for,
    whatsapp_preference,
    whatsapp_text,
)


async def _final(pool: asyncpg.Pool, n: int) -> list[dict[str, object]] | None:
    """All first steps decided (sent or skipped), once there are n of them."""
    rows = [r for r in await steps(pool) if r["step"] == 0]
    done = [r for r in rows if r["status"] in ("sent", "delivered", "read", "skipped", "failed")]
    return rows if len(rows) == n and len(done) == n else None


async def test_signature_dedupe_and_validation(settings: Settings, pool: asyncpg.Pool) -> None:
    await load_tenant(settings, bundle(delay0="1h"))
    async with running_engine(settings) as engine:
        body = cart("c-1", {"platform": "telegram", "id": "501"})
        assert (await post_event(engine, body, key="not-the-key"))[0] == 401
        raw = json.dumps(body).encode()
        async with engine.http.post(f"{engine.url}/events/shop", data=raw) as resp:  # no signature at all
            assert resp.status == 401
        assert await count(pool, "SELECT count(*) FROM recovery_events") == 0
        assert await count(pool, "SELECT count(*) FROM recovery_messages") == 0

        first, second = await post_event(engine, body), await post_event(engine, body)
        assert (first[0], second[0]) == (201, 200)
        assert second[1]["duplicate"] is True and first[1]["id"] == second[1]["id"]
        assert await count(pool, "SELECT count(*) FROM recovery_events") == 1
        assert await count(pool, "SELECT count(*) FROM recovery_messages") == 1

        status, answer = await post_event(engine, {**body, "source_id": "c-2", "value": -1, "customer": {}})
        assert status == 422
        assert any(p.startswith("value:") for p in answer["detail"])
        assert any(p.startswith("customer:") for p in answer["detail"])
        async with engine.http.post(f"{engine.url}/events/nobody", data=raw) as resp:
            assert resp.status == 404
        assert await count(pool, "SELECT count(*) FROM recovery_events") == 1


async def test_template_or_text_by_platform_window(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channels = await load_tenant(settings, bundle(delay0="1s", delay1="1h"))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        # A WhatsApp and a Messenger contact write (their 24 h windows open); others never did.
        assert await post_whatsapp(engine, channels["wa"], whatsapp_text("34600999000", "hi", 10)) == 200
        hook = traffic.messenger(
            ChannelType.MESSENGER, channels["fb"], {"app_secret": APP_SECRET}, "PAGE1", 11, 7, "hi"
        )
        async with engine.http.post(engine.url + hook.path, data=hook.body, headers=hook.headers) as resp:
            assert resp.status == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="whatsapp", ok=True)
            await recorder.wait_for(1, platform="messenger", ok=True)

        events = {
            "wa-open": {"phone": "+34600999000"},
            "wa-closed": {"platform": "whatsapp", "id": "34600999111"},
            "fb-open": {"platform": "messenger", "id": "PSID7"},
            "fb-closed": {"platform": "messenger", "id": "PSID8"},
            "tg": {"platform": "telegram", "id": "5005"},
        }
        for source_id, customer in events.items():
            assert (await post_event(engine, cart(source_id, customer)))[0] == 201
        rows = {r["source_id"]: r for r in await wait_for(lambda: _final(pool, 5))}
        assert (rows["wa-open"]["status"], rows["wa-open"]["kind"]) == ("sent", "text")
        assert (rows["wa-closed"]["status"], rows["wa-closed"]["kind"]) == ("sent", "template")
        assert (rows["fb-open"]["status"], rows["fb-open"]["kind"]) == ("sent", "text")
        assert (rows["fb-closed"]["status"], rows["fb-closed"]["skip_reason"]) == ("skipped", "platform_window")
        assert (rows["tg"]["status"], rows["tg"]["kind"]) == ("sent", "text")
        wa = {r.chat: r.body for r in recorder.sent("whatsapp", ok=True)}
        assert wa["34600999000"]["type"] == "text"
        assert wa["34600999000"]["text"]["body"].startswith("Your cart of €59.90 is waiting")
        assert wa["34600999111"]["type"] == "template"
        assert recorder.sent("telegram", chat="5005")[0].body["text"].startswith("Your cart of €59.90")
        assert recorder.sent("messenger", chat="PSID8") == []


def _closed_window(hours_ahead: int) -> tuple[str, str]:
    """A send window that opens `hours_ahead` hours from now (Madrid time) and lasts an hour."""
    now = datetime.now(ZoneInfo("Europe/Madrid"))
    start = (now + timedelta(hours=hours_ahead)).replace(minute=0)
    return start.strftime("%H:%M"), (start + timedelta(hours=1)).strftime("%H:%M")


async def test_quiet_hours_hold_and_a_stale_step_is_skipped(settings: Settings, pool: asyncpg.Pool) -> None:
    start, end = _closed_window(3)
    extra = f"""
  - slug: held
    triggers: [custom]
    send_window: {{start: "{start}", end: "{end}"}}
    max_staleness: 5h
    steps: [{{delay: 0s, text: "held"}}]
  - slug: stale
    triggers: [payment_failed]
    category: utility
    send_window: {{start: "{start}", end: "{end}"}}
    max_staleness: 1h
    steps: [{{delay: 0s, text: "stale"}}]
"""
    await load_tenant(settings, bundle(extra=extra))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        customer = {"platform": "telegram", "id": "601"}
        assert (await post_event(engine, {**cart("q-1", customer), "type": "custom"}))[0] == 201
        assert (await post_event(engine, {**cart("q-2", customer), "type": "payment_failed"}))[0] == 201
        rows = await wait_for(lambda: _decided(pool))
        held = next(r for r in rows if r["source_id"] == "q-1")
        stale = next(r for r in rows if r["source_id"] == "q-2")
        assert (stale["status"], stale["skip_reason"]) == ("skipped", "stale")
        assert held["status"] == "pending"
        opening = await pool.fetchval("SELECT scheduled_at FROM recovery_messages m JOIN recovery_events e "
                                      "ON e.id = m.event_id WHERE e.source_id = 'q-1'")  # fmt: skip
        local = opening.astimezone(ZoneInfo("Europe/Madrid"))
        assert local.strftime("%H:%M") == start and opening > datetime.now(UTC) + timedelta(hours=1)


async def _decided(pool: asyncpg.Pool) -> list[dict[str, object]] | None:
    rows = await steps(pool)
    claimed = await count(pool, "SELECT count(*) FROM recovery_messages WHERE claimed_at IS NOT NULL")
    return rows if claimed == 2 else None


async def test_frequency_cap_skips_the_second_campaign_message(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    await load_tenant(settings, bundle(delay0="1s", delay1="1h", freq_cap="1h"))
    async with running_engine(settings) as engine:
        # Both events due at the same moment, so one claim decides both: the cap must see the first
        # send of that very claim.
        customer, at = {"platform": "telegram", "id": "701"}, datetime.now(UTC).isoformat()
        assert (await post_event(engine, cart("f-1", customer, occurred_at=at)))[0] == 201
        assert (await post_event(engine, cart("f-2", customer, occurred_at=at)))[0] == 201
        start_scheduler(engine)
        rows = await wait_for(lambda: _final(pool, 2))
        assert sorted((r["status"], r["skip_reason"]) for r in rows) == [("sent", None), ("skipped", "frequency_cap")]
        # Skipped, not rescheduled: the event's next step is still scheduled.
        assert await count(pool, "SELECT count(*) FROM recovery_messages WHERE step = 1") == 2
        await asyncio.sleep(0.5)
        assert len(recorder.sent("telegram", chat="701", ok=True)) == 1


async def test_stop_word_and_user_preferences_opt_out(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    extra = """
  - slug: payment
    triggers: [payment_failed]
    category: utility
    steps: [{delay: 0s, template: cart_reminder}]
"""
    channels = await load_tenant(settings, bundle(delay0="1s", delay1="1h", extra=extra))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        # "Baja" (Spanish, a language the tenant lists) opts out, with the tenant's confirmation.
        assert await post_whatsapp(engine, channels["wa"], whatsapp_text("34611000001", "Baja", 20)) == 200
        async with asyncio.timeout(20):
            [confirmation] = await recorder.wait_for(1, platform="whatsapp", chat="34611000001", ok=True)
        assert confirmation.body["text"]["body"] == "You will get no more offers."
        # The user_preferences webhook: stop for one contact, stop then resume for another.
        assert await post_whatsapp(engine, channels["wa"], whatsapp_preference("34611000002", "stop")) == 200
        assert await post_whatsapp(engine, channels["wa"], whatsapp_preference("34611000003", "stop")) == 200
        await wait_for(lambda: count(pool, "SELECT count(*) FROM contact_preferences WHERE marketing_opt_out"), 20)
        await asyncio.sleep(1.1)  # the resume is a later change (timestamps are whole seconds)
        assert await post_whatsapp(engine, channels["wa"], whatsapp_preference("34611000003", "resume")) == 200

        # A contact that never wrote has no channel_contacts row yet: its preference is keyed on the
        # id its first message (or a recovery event naming its phone) will have.
        phones = {contact_id(channels["wa"], p): p for p in ("34611000001", "34611000002", "34611000003")}

        async def prefs() -> dict[str, bool] | None:
            rows = await pool.fetch("SELECT contact_id::text, marketing_opt_out FROM contact_preferences")
            found = {phones[r["contact_id"]]: r["marketing_opt_out"] for r in rows}
            return found if found.get("34611000003") is False and len(found) == 3 else None

        assert await wait_for(prefs) == {"34611000001": True, "34611000002": True, "34611000003": False}
        for i, phone in enumerate(("34611000001", "34611000002", "34611000003")):
            assert (await post_event(engine, cart(f"o-{i}", {"phone": phone})))[0] == 201
        # A utility notice still reaches an opted-out contact.
        failed = {**cart("pay-1", {"phone": "34611000001"}), "type": "payment_failed"}
        assert (await post_event(engine, failed))[0] == 201
        rows = {r["source_id"]: r for r in await wait_for(lambda: _final(pool, 4))}
        assert rows["o-0"]["skip_reason"] == "opted_out" and rows["o-1"]["skip_reason"] == "opted_out"
        assert rows["o-2"]["status"] == "sent"
        assert rows["pay-1"]["status"] == "sent"


async def test_marketing_cap_131049_is_retried_later_and_131047_is_final(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"marketing_cap_retry": 1.0, "marketing_cap_retries": 2})
    await load_tenant(settings, bundle(delay0="0s", delay1="1h"))
    recorder.add_fault(Fault(platform="whatsapp", chat="34622000001", status=400, error_code=131049, times=1))
    recorder.add_fault(Fault(platform="whatsapp", chat="34622000002", status=400, error_code=131049, times=None))
    recorder.add_fault(Fault(platform="whatsapp", chat="34622000003", status=400, error_code=131047, times=None))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        assert (await post_event(engine, cart("m-1", {"phone": "34622000001"})))[0] == 201
        assert (await post_event(engine, cart("m-2", {"phone": "34622000002"})))[0] == 201
        assert (await post_event(engine, cart("m-3", {"phone": "34622000003"})))[0] == 201

        async def settled() -> dict[str, dict[str, object]] | None:
            rows = {r["source_id"]: r for r in await steps(pool) if r["step"] == 0}
            ok = rows.get("m-1", {}).get("status") == "sent" and rows.get("m-2", {}).get("status") == "failed"
            ok = ok and rows.get("m-3", {}).get("status") == "failed"
            return rows if ok else None

        rows = await wait_for(settled, 30)
        assert (rows["m-1"]["retry_count"], rows["m-1"]["error_code"]) == (1, "131049")
        assert (rows["m-2"]["retry_count"], rows["m-2"]["skip_reason"]) == (2, "marketing_cap")
        assert [r.ok for r in recorder.sent("whatsapp", chat="34622000001")] == [False, True]
        assert len(recorder.sent("whatsapp", chat="34622000002")) == 3  # the first try and two retries
        # 131047 (outside the 24 h window) is final: no retry.
        assert (rows["m-3"]["retry_count"], rows["m-3"]["skip_reason"]) == (0, "outside_window")
        assert len(recorder.sent("whatsapp", chat="34622000003")) == 1
    recorder.clear_faults()


async def test_attribution_at_the_window_edges(settings: Settings, pool: asyncpg.Pool) -> None:
    await load_tenant(settings, bundle(delay0="0s", delay1="1h", attribution="20s"))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        for i in (1, 2):
            assert (await post_event(engine, cart(f"a-{i}", {"platform": "telegram", "id": f"80{i}"})))[0] == 201
        rows = await wait_for(lambda: _final(pool, 2))
        sent_at = {r["source_id"]: r["sent_at"] for r in rows}
        inside = sent_at["a-1"] + timedelta(seconds=19)  # 1 s before the window closes
        outside = sent_at["a-2"] + timedelta(seconds=21)  # 1 s after
        before = sent_at["a-2"] - timedelta(seconds=1)  # an order placed before the message

        _, early = await post_event(engine, order("o-early", {"platform": "telegram", "id": "802"}, 10, before))
        _, late = await post_event(engine, order("o-late", {"platform": "telegram", "id": "802"}, 20, outside))
        _, hit = await post_event(engine, order("o-hit", {"platform": "telegram", "id": "801"}, 30, inside))
        _, none = await post_event(engine, order("o-none", {"platform": "telegram", "id": "899"}, 40))
        assert early["credited_message"] is None and late["credited_message"] is None
        assert none["credited_message"] is None and hit["credited_message"] is not None
        events = {r["source_id"]: (r["status"], r["v"]) for r in await pool.fetch(
            "SELECT source_id, status, recovered_value::float8 AS v FROM recovery_events")}  # fmt: skip
        assert events["a-1"] == ("recovered", 30.0)
        assert events["a-2"] == ("converted", None)  # the customer bought, but not thanks to a message
        assert events["o-hit"][0] == "attributed"
        assert {events[k][0] for k in ("o-early", "o-late", "o-none")} == {"unattributed"}
        # Credited once: the same order posted again changes nothing.
        again = await post_event(engine, order("o-hit", {"platform": "telegram", "id": "801"}, 30, inside))
        assert again[1]["duplicate"] is True
        assert await count(pool, "SELECT count(*) FROM recovery_messages WHERE converted_at IS NOT NULL") == 1


async def test_conversation_unanswered_becomes_an_event(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"scheduler_housekeeping": 0.3})
    extra = """
  - slug: nudge
    type: unanswered
    triggers: [conversation_unanswered]
    unanswered_after: 1s
    steps: [{delay: 0s, text: "Still there? Reply yes or no."}]
rules:
  - name: help
    conditions: {contains: [help]}
    actions: [{start_flow: {bot: shop, flow: cart_help}}]
"""
    channels = await load_tenant(settings, bundle(extra=extra))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        update = {"update_id": 1, "message": {"message_id": 1, "date": 1_700_000_000, "text": "help",
                  "from": {"id": 4242, "is_bot": False, "first_name": "Ned"}, "chat": {"id": 4242, "type": "private"}}}  # fmt: skip
        assert await engine.post_telegram(channels["tg"], update, secret="s3cret") == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(2, platform="telegram", chat="4242", ok=True)
        texts = [r.body["text"] for r in recorder.sent("telegram", chat="4242", ok=True)]
        assert texts == ["Want help with your cart?", "Still there? Reply yes or no."]
        await asyncio.sleep(1.5)  # later scans find the same wait: no second event
        assert (
            await count(pool, "SELECT count(*) FROM recovery_events WHERE event_type = 'conversation_unanswered'") == 1
        )
        assert len(recorder.sent("telegram", chat="4242")) == 2


async def test_a_step_can_prefer_another_platform(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channels = await load_tenant(settings, bundle(delay0="1s", delay1="1h").replace(
        "reply_flow: {bot: shop, flow: cart_help, node: choice}", "channel: whatsapp"))  # fmt: skip
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        assert await post_whatsapp(engine, channels["wa"], whatsapp_text("34655000001", "hi", 30)) == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="whatsapp", ok=True)
        # The shop knows the customer by their Telegram id, with the same phone as on WhatsApp.
        event = cart("p-1", {"platform": "telegram", "id": "3131", "phone": "+34 655 000 001"})
        assert (await post_event(engine, event))[0] == 201
        [row] = await wait_for(lambda: _final(pool, 1))
        assert (row["status"], row["kind"]) == ("sent", "text")  # the WhatsApp window is open
        assert recorder.sent("telegram", chat="3131") == []
        assert recorder.sent("whatsapp", chat="34655000001")[-1].body["text"]["body"].startswith("Your cart of")


async def test_a_customer_known_by_email_is_found_whatever_its_case(settings: Settings, pool: asyncpg.Pool) -> None:
    """Emails are kept lower-case, as they are looked up: a contact the shop named with a mixed-case
    email is found again by that email in any case."""
    await load_tenant(settings, bundle(delay0="1h"))
    async with running_engine(settings) as engine:
        named = cart("e-1", {"platform": "telegram", "id": "777", "email": "Ann.Lee@Shop.COM"})
        assert (await post_event(engine, named))[0] == 201
        assert (await post_event(engine, cart("e-2", {"email": "ANN.lee@shop.com"})))[0] == 201
    rows = await pool.fetch("SELECT source_id, contact_id::text FROM recovery_events ORDER BY source_id")
    assert [r["source_id"] for r in rows] == ["e-1", "e-2"]
    assert rows[0]["contact_id"] is not None
    assert rows[1]["contact_id"] == rows[0]["contact_id"]
    stored = await pool.fetchval(
        "SELECT attributes ->> 'email' FROM channel_contacts WHERE id = $1::uuid", rows[0]["contact_id"]
    )
    assert stored == "ann.lee@shop.com"
