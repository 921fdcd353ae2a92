"""Every platform end to end: a signed webhook (signed here with hmac/hashlib, independently of the
engine) becomes the right reply at the fake platform; retries and duplicates give one reply; status
callbacks move channel_messages forward only; faults at the platform are retried or recorded."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from typing import Any

import asyncpg
import pytest

from engine.fake_platforms import Fault, Recorder
from engine.settings import Settings
from engine.store import deliveries
from tests.harness import Running, count, load_tenant, running_engine, telegram_update, wait_until

WA_SECRET, FB_SECRET, IG_SECRET = "wa-app-secret", "fb-app-secret", "ig-app-secret"
SLACK_SECRET = "slack-signing-secret"
PHONE_ID, PAGE_ID, IG_ID, TEAM = "106540352242922", "PAGE1", "IG1", "T0001"

BUNDLE = f"""
tenant: {{slug: multi, name: Multi}}
bots: [{{slug: bot, name: Bot, welcome_text: "Hi {{name}}!", echo: true}}]
channels:
  - {{slug: tg, type: telegram, bot: bot, secrets: {{bot_token: "1:T", secret_token: tgsecret}}}}
  - slug: wa
    type: whatsapp
    bot: bot
    external_id: "{PHONE_ID}"
    secrets: {{access_token: EAAG-wa, app_secret: {WA_SECRET}, verify_token: wa-verify}}
  - slug: fb
    type: messenger
    bot: bot
    external_id: {PAGE_ID}
    secrets: {{page_token: EAAG-fb, app_secret: {FB_SECRET}, verify_token: fb-verify}}
  - slug: ig
    type: instagram
    bot: bot
    external_id: {IG_ID}
    secrets: {{page_token: EAAG-ig, app_secret: {IG_SECRET}, verify_token: ig-verify}}
  - slug: sl
    type: slack
    bot: bot
    external_id: {TEAM}
    secrets: {{bot_token: xoxb-1, signing_secret: {SLACK_SECRET}}}
    config: {{bot_user_id: UBOT}}
"""


def meta_headers(secret: str, raw: bytes) -> dict[str, str]:
    sig = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={sig}", "Content-Type": "application/json"}


def slack_headers(raw: bytes, ts: int | None = None, **extra: str) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time()))
    sig = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={sig}", **extra}


def wa_envelope(messages: list[dict[str, Any]] = (), statuses: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "16505551234", "user_id": "US.1349"}],
    }
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": value},
        {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}},
    ]}]}  # fmt: skip


def wa_text(wamid: str, text: str) -> dict[str, Any]:
    return {"from": "16505551234", "from_user_id": "US.1349", "id": wamid, "timestamp": "1749416383",
            "type": "text", "text": {"body": text}}  # fmt: skip


async def post(engine: Running, kind: str, channel: str, raw: bytes, headers: dict[str, str]) -> int:
    async with engine.http.post(f"{engine.url}/webhooks/{kind}/{channel}", data=raw, headers=headers) as resp:
        return resp.status


@pytest.fixture
async def tenant(settings: Settings) -> dict[str, str]:
    return await load_tenant(settings, BUNDLE)


async def test_whatsapp_batched_post_media_buttons_and_monotonic_statuses(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    _, recorder = fake_platforms
    batch = wa_envelope(messages=[
        wa_text("wamid.A", "hello"),
        {"from": "16505551234", "from_user_id": "US.1349", "id": "wamid.B", "timestamp": "1749416384",
         "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "opt_yes", "title": "Yes"}}},
        {"from": "16505551234", "from_user_id": "US.1349", "id": "wamid.C", "timestamp": "1749416385",
         "type": "image", "image": {"id": "1003383421387256", "mime_type": "image/jpeg", "caption": "look"}},
    ])  # fmt: skip
    raw = json.dumps(batch).encode()
    async with running_engine(settings) as engine:
        async with engine.http.get(
            f"{engine.url}/webhooks/whatsapp/{tenant['wa']}",
            params={"hub.mode": "subscribe", "hub.verify_token": "wa-verify", "hub.challenge": "1158201444"},
        ) as resp:
            assert (resp.status, await resp.text()) == (200, "1158201444")
        async with engine.http.get(
            f"{engine.url}/webhooks/whatsapp/{tenant['wa']}",
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        ) as resp:
            assert resp.status == 403
        assert await post(engine, "whatsapp", tenant["wa"], raw, meta_headers("wrong", raw)) == 401
        assert await post(engine, "whatsapp", tenant["wa"], raw, meta_headers(WA_SECRET, raw)) == 200
        assert await post(engine, "whatsapp", tenant["wa"], raw, meta_headers(WA_SECRET, raw)) == 200  # Meta retry
        async with asyncio.timeout(30):
            sent = await recorder.wait_for(3, platform="whatsapp")
        await asyncio.sleep(0.5)
        sent = recorder.sent("whatsapp")
        assert len(sent) == 3
        assert [r.body["text"]["body"] for r in sent] == ["Hi Ann! You said: hello", "Hi Ann!", "Hi Ann!"]
        assert {r.chat for r in sent} == {"16505551234"}
        media = await pool.fetchval("SELECT payload->'media' FROM message_history WHERE external_id = 'wamid.C'")
        assert media["id"] == "1003383421387256"

        # Delivery receipts out of order: read before delivered; then a late 'sent'.
        wamid = sent[0].response["messages"][0]["id"]
        for status in ("read", "delivered", "sent"):
            receipt = {"id": wamid, "status": status, "timestamp": "1749416390", "recipient_id": "16505551234"}
            body = json.dumps(wa_envelope(statuses=[receipt])).encode()
            assert await post(engine, "whatsapp", tenant["wa"], body, meta_headers(WA_SECRET, body)) == 200

        async def read() -> bool:
            sql = "SELECT status FROM channel_messages WHERE platform_message_id = $1"
            return await pool.fetchval(sql, wamid) == "read"

        await wait_until(read)
        await asyncio.sleep(0.3)
    row = await pool.fetchrow(
        "SELECT status, read_at, delivered_at FROM channel_messages WHERE platform_message_id=$1", wamid
    )
    assert row["status"] == "read" and row["read_at"] is not None


async def test_messenger_and_instagram_text_and_postback(
    settings: Settings, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    _, recorder = fake_platforms

    def page(obj: str, page_id: str, mid: str, message: dict[str, Any] | None = None, **event: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {"sender": {"id": "PSID9"}, "recipient": {"id": page_id}, "timestamp": 1700000000000}
        if message is not None:
            ev["message"] = {"mid": mid, **message}
        ev.update(event)
        return {"object": obj, "entry": [{"id": page_id, "time": 1700000000000, "messaging": [ev]}]}

    async with running_engine(settings) as engine:
        fb = json.dumps(page("page", PAGE_ID, "m_1", {"text": "hi fb"})).encode()
        echo = json.dumps(page("page", PAGE_ID, "m_2", {"text": "ours", "is_echo": True})).encode()
        ig = json.dumps(page("instagram", IG_ID, "m_3", {"text": "hi ig"})).encode()
        postback = json.dumps(
            page("page", PAGE_ID, "", None, postback={"title": "Yes", "payload": "opt_yes", "mid": "m_4"})
        ).encode()
        assert await post(engine, "messenger", tenant["fb"], fb, meta_headers(FB_SECRET, fb)) == 200
        assert await post(engine, "messenger", tenant["fb"], echo, meta_headers(FB_SECRET, echo)) == 200
        assert await post(engine, "instagram", tenant["ig"], ig, meta_headers(IG_SECRET, ig)) == 200
        assert await post(engine, "instagram", tenant["ig"], ig, meta_headers(FB_SECRET, ig)) == 401
        assert await post(engine, "messenger", tenant["fb"], postback, meta_headers(FB_SECRET, postback)) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(3, platform="messenger")
        await asyncio.sleep(0.5)
    sent = recorder.sent("messenger")  # the echo of our own message produced nothing
    assert sorted((r.path.split("/")[2], r.body["message"]["text"]) for r in sent) == [
        (IG_ID, "Hi there! You said: hi ig"),
        (PAGE_ID, "Hi there!"),  # the postback
        (PAGE_ID, "Hi there! You said: hi fb"),
    ]
    assert {r.body["recipient"]["id"] for r in sent} == {"PSID9"}


async def test_slack_threads_retries_url_verification_and_own_messages(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    _, recorder = fake_platforms

    def callback(event_id: str, **event: Any) -> bytes:
        doc = {"token": "x", "team_id": TEAM, "api_app_id": "A1", "type": "event_callback", "event_id": event_id,
               "event_time": 1700000000, "event": {"type": "message", "channel": "C0001", "channel_type": "channel",
               "user": "U0001", **event}}  # fmt: skip
        return json.dumps(doc).encode()

    async with running_engine(settings) as engine:
        challenge = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2r", "type": "url_verification"}).encode()
        async with engine.http.post(
            f"{engine.url}/webhooks/slack/{tenant['sl']}", data=challenge, headers=slack_headers(challenge)
        ) as resp:
            assert resp.status == 200 and "3eZbrw1aBm2r" in await resp.text()

        top = callback("Ev1", text="hello", ts="1700000000.000100")
        threaded = callback("Ev2", text="in thread", ts="1700000001.000200", thread_ts="1700000000.000100")
        own = callback("Ev3", text="bot says", ts="1700000002.000300", user="UBOT", bot_id="B1")
        edited = callback("Ev4", subtype="message_changed", ts="1700000003.000400")
        assert await post(engine, "slack", tenant["sl"], top, slack_headers(top)) == 200
        retry = slack_headers(top, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
        assert await post(engine, "slack", tenant["sl"], top, retry) == 200
        assert await post(engine, "slack", tenant["sl"], threaded, slack_headers(threaded)) == 200
        assert await post(engine, "slack", tenant["sl"], own, slack_headers(own)) == 200
        assert await post(engine, "slack", tenant["sl"], edited, slack_headers(edited)) == 200
        stale = slack_headers(top, ts=int(time.time()) - 301)
        assert await post(engine, "slack", tenant["sl"], top, stale) == 401
        async with asyncio.timeout(30):
            await recorder.wait_for(2, platform="slack", method="chat.postMessage")
        await asyncio.sleep(0.5)
    sent = recorder.sent("slack", method="chat.postMessage")
    assert len(sent) == 2
    by_text = {r.body["text"]: r.body for r in sent}
    assert "thread_ts" not in by_text["Hi there! You said: hello"]
    assert by_text["Hi there! You said: in thread"]["thread_ts"] == "1700000000.000100"
    assert (
        await count(
            pool,
            "SELECT count(*) FROM conversations WHERE tenant_id = (SELECT id FROM organizations WHERE slug='multi')",
        )
        == 2
    )


async def test_telegram_button_press_is_answered_and_replied(
    settings: Settings, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    _, recorder = fake_platforms
    press = {"update_id": 1002, "callback_query": {
        "id": "4382bfdwdsb323b2d9", "chat_instance": "-8734", "data": "opt_yes",
        "from": {"id": 111, "is_bot": False, "first_name": "Ann"},
        "message": {"message_id": 7, "date": 1704067200, "text": "Pick one", "chat": {"id": 111, "type": "private"},
                    "from": {"id": 999, "is_bot": True, "first_name": "Bot"}}}}  # fmt: skip
    async with running_engine(settings) as engine:
        assert await engine.post_telegram(tenant["tg"], press, secret="tgsecret") == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(1, platform="telegram", method="answerCallbackQuery")
            await recorder.wait_for(1, platform="telegram", method="sendMessage")
    assert recorder.sent("telegram", method="answerCallbackQuery")[0].body["callback_query_id"] == "4382bfdwdsb323b2d9"


async def test_platform_faults_are_retried_or_recorded_and_chat_rate_holds(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    _, recorder = fake_platforms
    recorder.add_fault(Fault(platform="telegram", chat="201", status=429, retry_after=1, times=1))
    recorder.add_fault(Fault(platform="telegram", chat="202", status=500, times=2))
    recorder.add_fault(Fault(platform="telegram", chat="203", status=403, times=None))
    async with running_engine(settings) as engine:
        for i, chat in enumerate((201, 202, 203)):
            assert await engine.post_telegram(tenant["tg"], telegram_update(i + 1, chat, "x"), secret="tgsecret") == 200
        for i in range(5):  # a burst to one chat: the sender spaces it to 1 message per second
            assert (
                await engine.post_telegram(tenant["tg"], telegram_update(10 + i, 204, f"b{i}"), secret="tgsecret")
                == 200
            )
        async with asyncio.timeout(40):
            await recorder.wait_for(7, platform="telegram", method="sendMessage", ok=True)

        async def failed() -> bool:
            return await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'failed'") == 1

        await wait_until(failed)
    ok = recorder.sent("telegram", method="sendMessage", ok=True)
    assert sorted({r.chat for r in ok}) == ["201", "202", "204"]
    assert len(recorder.sent("telegram", chat="202")) == 3  # two 500s, then delivered
    row = await pool.fetchrow("SELECT error_code, error, attempts FROM channel_messages WHERE status = 'failed'")
    assert row["error_code"] == "403" and row["attempts"] == 1  # permanent: not retried
    burst = sorted(r.received_at for r in recorder.sent("telegram", chat="204"))
    assert len(burst) == 5
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(burst))  # without the limiter: milliseconds


async def test_a_receipt_that_overtakes_the_send_is_applied_when_the_send_is_recorded(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    """The platform's 'delivered' arrives before the sender has stored the platform's message id."""
    _, recorder = fake_platforms
    raw = json.dumps(wa_envelope(messages=[wa_text("wamid.IN", "hi")])).encode()
    async with running_engine(settings) as engine:
        assert await post(engine, "whatsapp", tenant["wa"], raw, meta_headers(WA_SECRET, raw)) == 200
        async with asyncio.timeout(10):
            sent = await recorder.wait_for(1, platform="whatsapp")
        wamid = sent[0].response["messages"][0]["id"]

        async def recorded() -> bool:
            return await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'sent'") == 1

        await wait_until(recorded)
        # Back to the moment between the platform's answer and the sender's UPDATE.
        await pool.execute("UPDATE channel_messages SET platform_message_id = NULL, status = 'sending'")
        receipt = {"id": wamid, "status": "delivered", "timestamp": "1749416390", "recipient_id": "16505551234"}
        body = json.dumps(wa_envelope(statuses=[receipt])).encode()
        assert await post(engine, "whatsapp", tenant["wa"], body, meta_headers(WA_SECRET, body)) == 200

        async def parked() -> bool:
            return await count(pool, "SELECT count(*) FROM pending_receipts") == 1

        await wait_until(parked)
    row = await pool.fetchrow("SELECT id::text, created_at FROM channel_messages")
    await deliveries.mark_sent_many(pool, [(row["id"], row["created_at"], wamid)])
    assert await pool.fetchval("SELECT status FROM channel_messages") == "delivered"
    assert await count(pool, "SELECT count(*) FROM pending_receipts") == 0


async def test_a_slow_platform_does_not_hold_up_another_platforms_replies(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], tenant: dict[str, str]
) -> None:
    """WhatsApp answers every send slowly and its replies queue up beyond the sender's prefetch;
    Telegram replies queued after them still go out while WhatsApp's backlog is waiting."""
    settings = settings.model_copy(update={"shards": 1, "sender_prefetch": 2})
    _, recorder = fake_platforms
    recorder.add_fault(Fault(platform="whatsapp", delay=2.0, times=None))
    async with running_engine(settings) as engine:
        for i in range(6):  # six WhatsApp users, one reply each
            message = wa_text(f"wamid.S{i}", "hello") | {"from": f"1650555{i:04d}", "from_user_id": f"US.{i}"}
            raw = json.dumps(wa_envelope(messages=[message])).encode()
            assert await post(engine, "whatsapp", tenant["wa"], raw, meta_headers(WA_SECRET, raw)) == 200

        async def queued() -> bool:
            return await count(pool, "SELECT count(*) FROM channel_messages") == 6

        await wait_until(queued)  # all six WhatsApp replies are on the outbound queue first
        for i in range(3):
            assert (
                await engine.post_telegram(tenant["tg"], telegram_update(i + 1, 300 + i, "hi"), secret="tgsecret")
                == 200
            )
        async with asyncio.timeout(20):
            await recorder.wait_for(3, platform="telegram", method="sendMessage")
        answered_whatsapp = len([r for r in recorder.sent("whatsapp") if r.status])
        recorder.clear_faults()
        async with asyncio.timeout(30):
            await recorder.wait_for(6, platform="whatsapp")
    assert answered_whatsapp <= 2  # Telegram did not wait for WhatsApp's backlog to drain
