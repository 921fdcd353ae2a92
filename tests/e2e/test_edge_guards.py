"""Bad input at the receiver gets its documented status and enqueues nothing: values PostgreSQL would
refuse, bodies of the wrong shape, a body for another account, too many events, a body that never
finishes, more requests than the receiver takes at once, a secret header that is not UTF-8, a database
that is away during the channel lookup; /metrics is not served on the webhook port."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from engine import metrics
from engine.settings import Settings
from tests.harness import count, load_tenant, queued_inbound, running_engine, telegram_update, wait_until
from tests.proxy import TcpProxy

PHONE_ID, OTHER_PHONE_ID, APP_SECRET = "106540352242922", "999000111222333", "wa-app-secret"
BUNDLE = f"""
tenant: {{slug: edge, name: Edge}}
bots: [{{slug: b, name: B, welcome_text: "Hi!", echo: true}}]
channels:
  - {{slug: tg, type: telegram, bot: b, external_id: edge_bot, secrets: {{bot_token: "1:T", secret_token: tg-secret}}}}
  - slug: wa
    type: whatsapp
    bot: b
    external_id: "{PHONE_ID}"
    secrets: {{access_token: t, app_secret: {APP_SECRET}, verify_token: v}}
"""
TG = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret"}


def wa_body(messages: list[dict[str, Any]], statuses: list[dict[str, Any]] = (), phone_id: str = PHONE_ID) -> bytes:  # type: ignore[assignment]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_id},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "16505551234"}],
        "messages": messages,
        "statuses": list(statuses),
    }
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(doc).encode()


def wa_text(i: int, ts: Any = "1749416383") -> dict[str, Any]:
    return {"from": "16505551234", "id": f"wamid.{i}", "timestamp": ts, "type": "text", "text": {"body": f"m{i}"}}


def wa_headers(body: bytes) -> dict[str, str]:
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}


async def raw_request(port: int, head: bytes, body: bytes = b"", *, wait: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are (headers that aiohttp's client would not send) and read the status line
    and headers of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(wait):
            status_line = await reader.readline()
            headers = await reader.readuntil(b"\r\n\r\n")
        return int(status_line.split()[1]), headers
    finally:
        writer.close()


def telegram_with(**message: Any) -> dict[str, Any]:
    update = telegram_update(3, 5, "x")
    update["message"].update(message)
    return update


async def test_bad_input_gets_its_status_and_enqueues_nothing(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_events_per_request": 3, "body_read_timeout": 0.5})
    ids = await load_tenant(settings, BUNDLE)
    async with running_engine(settings, workers=0, senders=0) as engine:
        tg, wa = f"{engine.url}/webhooks/telegram/{ids['tg']}", f"{engine.url}/webhooks/whatsapp/{ids['wa']}"
        cases: list[tuple[str, dict[str, str], bytes, int]] = [
            (tg, TG, json.dumps(telegram_with(text=5)).encode(), 400),  # text is not a string
            (tg, TG, json.dumps(telegram_with(date="soon")).encode(), 400),  # float("soon") raised
            (tg, TG, json.dumps(telegram_with(date=1e20)).encode(), 400),  # PostgreSQL refuses the year
            (wa, wa_headers(b := wa_body([], [{"id": "wamid.S", "status": "read", "timestamp": "1e20",
                                                "recipient_id": "1"}])), b, 400),
            (wa, wa_headers(b := wa_body([wa_text(1, "nan")])), b, 400),
            (wa, wa_headers(b := wa_body([wa_text(i) for i in range(4)])), b, 413),  # 4 events > 3
            (wa, wa_headers(b := wa_body([wa_text(9)], phone_id=OTHER_PHONE_ID)), b, 200),  # another number's
        ]  # fmt: skip
        unbound_before = metrics.EVENTS_UNBOUND.labels("whatsapp")._value.get()
        for target, headers, body, status in cases:
            async with engine.http.post(target, data=body, headers=headers) as resp:
                assert resp.status == status, (target, body[:80], await resp.text())
        assert metrics.EVENTS_UNBOUND.labels("whatsapp")._value.get() == unbound_before + 1

        port = int(urlsplit(engine.url).port or 0)
        path = f"/webhooks/telegram/{ids['tg']}".encode()
        # A secret header that is not UTF-8: 401, not a 500 with a traceback.
        head = (
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Telegram-Bot-Api-Secret-Token: \xff\xfe\r\n\r\n"
        )
        assert (await raw_request(port, head, b"{}"))[0] == 401
        # A body that never finishes: 408 after the read timeout, not a connection held for minutes.
        head = (
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Telegram-Bot-Api-Secret-Token: tg-secret\r\n\r\n"
        )
        assert (await raw_request(port, head, b'{"update_id"'))[0] == 408
        async with engine.http.get(f"{engine.url}/metrics") as resp:
            assert resp.status == 404  # not on the public webhook port unless ENGINE_METRICS_ON_WEBHOOK_PORT
        assert await queued_inbound(settings) == 0

        assert await engine.post_telegram(ids["tg"], telegram_update(5, 9, "a\x00b"), secret="tg-secret") == 200
        assert await queued_inbound(settings) == 1


async def test_requests_over_the_inflight_cap_get_503_at_once(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_inflight": 1, "body_read_timeout": 5.0})
    ids = await load_tenant(settings, BUNDLE)
    async with running_engine(settings, workers=0, senders=0) as engine:
        port = int(urlsplit(engine.url).port or 0)
        path = f"/webhooks/telegram/{ids['tg']}".encode()
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:  # one request holds the only slot: its body is still on the way
            writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
                         b"X-Telegram-Bot-Api-Secret-Token: tg-secret\r\n\r\n{")  # fmt: skip
            await writer.drain()
            await asyncio.sleep(0.3)
            body = json.dumps(telegram_update(1, 1, "hi")).encode()
            async with engine.http.post(f"{engine.url}/webhooks/telegram/{ids['tg']}", data=body, headers=TG) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
        finally:
            writer.close()
        assert await queued_inbound(settings) == 0

        async def slot_free() -> bool:
            return await engine.post_telegram(ids["tg"], telegram_update(2, 1, "hi"), secret="tg-secret") == 200

        await wait_until(slot_free, timeout=10, interval=0.2)
        assert await queued_inbound(settings) == 1


async def test_database_away_during_channel_lookup_is_503_with_retry_after(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    ids = await load_tenant(settings, BUNDLE)
    pg = urlsplit(settings.database_url)
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    await proxy.start()
    receiver = settings.model_copy(
        update={"database_url": settings.database_url.replace(f":{pg.port or 5432}/", f":{proxy.port}/")}
    )
    async with running_engine(receiver, workers=0, senders=0) as engine:
        await proxy.cut()
        body = json.dumps(telegram_update(1, 1, "hi")).encode()
        async with engine.http.post(f"{engine.url}/webhooks/telegram/{ids['tg']}", data=body, headers=TG) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) > 0
        assert await queued_inbound(settings) == 0
        await proxy.start()
    await proxy.cut()
    assert await count(pool, "SELECT count(*) FROM channels") == 2
