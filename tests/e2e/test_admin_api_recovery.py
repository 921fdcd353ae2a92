"""The admin API and recovery campaigns against the running engine and scheduler: the API's opt-out is
the marketing opt-out the scheduler obeys at claim time (and a STOP word shows in the API's contact);
a template and a campaign saved through the API are what the next event schedules and the scheduler
sends, the campaign's analytics count it, and an archived campaign schedules nothing more."""

from __future__ import annotations

import asyncio

import asyncpg

from engine.fake_platforms import Recorder
from engine.settings import Settings
from engine.worker.conversations import contact_id
from tests.api_helpers import Api, make_token
from tests.harness import count, load_tenant, running_engine
from tests.recovery_harness import (
    bundle,
    cart,
    post_event,
    post_whatsapp,
    start_scheduler,
    steps,
    wait_for,
    whatsapp_text,
)


async def _decided(pool: asyncpg.Pool, source_id: str) -> dict[str, object] | None:
    rows = await steps(pool, source_id)
    return rows[0] if rows and rows[0]["status"] in ("sent", "delivered", "read", "skipped", "failed") else None


async def test_the_api_opt_out_is_the_one_the_scheduler_obeys(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channels = await load_tenant(settings, bundle(delay0="2s", delay1="1h"))
    token = await make_token(pool, "shop", "read,write")
    stopped, quiet = "34611000001", "34611000002"
    async with running_engine(settings) as engine:
        api = Api(engine.http, engine.url)
        start_scheduler(engine)
        # A STOP word (written by the worker) is what the API's contact reports.
        assert await post_whatsapp(engine, channels["wa"], whatsapp_text(stopped, "STOP", 1)) == 200
        assert await post_whatsapp(engine, channels["wa"], whatsapp_text(quiet, "hello", 2)) == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="whatsapp", chat=stopped, ok=True)
            await recorder.wait_for(1, platform="whatsapp", chat=quiet, ok=True)
        first, second = contact_id(channels["wa"], stopped), contact_id(channels["wa"], quiet)
        status, contact, _ = await api.call("GET", f"/contacts/{first}", token)
        assert (status, contact["opted_out"], contact["opt_out_source"]) == (200, True, "keyword")
        assert contact["opted_out_at"] is not None
        assert (await api.call("GET", f"/contacts/{second}", token))[1]["opted_out"] is False

        # The API opts the STOP contact back in and the other one out; then both abandon a cart.
        status, contact, _ = await api.call("PATCH", f"/contacts/{first}", token, {"opted_out": False})
        assert (status, contact["opted_out"], contact["opt_out_source"]) == (200, False, "api")
        assert (await post_event(engine, cart("api-in", {"phone": stopped})))[0] == 201
        assert (await post_event(engine, cart("api-out", {"phone": quiet})))[0] == 201
        # The steps are pending (2 s) when the opt-out lands: the claim-time check must see it.
        assert await count(pool, "SELECT count(*) FROM recovery_messages WHERE status = 'pending'") == 2
        assert (await api.call("PATCH", f"/contacts/{second}", token, {"opted_out": True}))[1]["opted_out"] is True
        skipped = await wait_for(lambda: _decided(pool, "api-out"))
        sent = await wait_for(lambda: _decided(pool, "api-in"))
        assert (skipped["status"], skipped["skip_reason"]) == ("skipped", "opted_out")
        assert sent["status"] in ("sent", "delivered", "read")
        await asyncio.sleep(0.5)
        assert len(recorder.sent("whatsapp", chat=quiet, ok=True)) == 1  # only the bot's answer to "hello"


async def test_a_campaign_saved_through_the_api_runs_and_is_counted(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    await load_tenant(settings, bundle(delay0="1h", delay1="1h"))
    token = await make_token(pool, "shop", "read,write")
    phone = "34622000001"
    template = {"name": "payment_notice", "language": "en_US", "category": "utility",
                "text": "Hi {{1}}, your payment of {{2}} failed.",
                "components": [{"type": "body", "parameters": ["{{contact.name | there}}",
                                                               "{{event.value | currency}}"]}]}  # fmt: skip
    campaign = {"slug": "dunning", "type": "payment_failed", "category": "utility", "triggers": ["payment_failed"],
                "steps": [{"delay": "1s", "template": "payment_notice", "channel": "whatsapp"}]}  # fmt: skip
    async with running_engine(settings) as engine:
        api = Api(engine.http, engine.url)
        start_scheduler(engine)
        assert (await api.call("POST", "/templates", token, template))[0] == 201
        status, made, _ = await api.call("POST", "/campaigns", token, campaign)
        assert status == 201
        failed = {**cart("pay-1", {"phone": phone}, value=25.0), "type": "payment_failed"}
        assert (await post_event(engine, failed))[0] == 201
        async with asyncio.timeout(20):
            [message] = await recorder.wait_for(1, platform="whatsapp", chat=phone, ok=True)
        assert message.body["type"] == "template"  # the contact never wrote: outside the window
        assert message.body["template"]["name"] == "payment_notice"
        row = await wait_for(lambda: _decided(pool, "pay-1"))
        assert row["status"] in ("sent", "delivered", "read")

        status, analytics, _ = await api.call("GET", f"/campaigns/{made['id']}/analytics?since=1d", token)
        assert status == 200
        totals = analytics["totals"]
        assert (totals["events"], totals["scheduled"], totals["sent"], totals["revenue_at_risk"]) == (1, 1, 1, 25.0)
        assert [d["events"] for d in analytics["days"]] == [1]

        # Archived through the API: the next event schedules nothing for it.
        assert (await api.call("DELETE", f"/campaigns/{made['id']}", token))[0] == 204
        assert (await post_event(engine, {**failed, "source_id": "pay-2"}))[0] == 201
        assert await steps(pool, "pay-2") == []
        await asyncio.sleep(1.5)
        assert len(recorder.sent("whatsapp", chat=phone, ok=True)) == 1
