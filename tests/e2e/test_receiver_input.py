"""Bad input gets its own status and loses nothing; a down broker means 503 and nothing published."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import pytest

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import load_tenant, queued_inbound, running_engine, telegram_update, wait_until
from tests.proxy import TcpProxy

POLL_UPDATE = {"update_id": 77, "poll": {"id": "1", "question": "?", "options": [], "is_closed": False}}


async def test_bad_input_statuses_and_nothing_published(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_body_bytes": 2048})
    channel = (await load_tenant(settings))["tg"]
    async with running_engine(settings, workers=0, senders=0) as engine:
        url = f"{engine.url}/webhooks/telegram/{channel}"
        good = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-token"}
        cases = [
            (url, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}, b'{"update_id": 1}', 401),
            (url, {}, b'{"update_id": 1}', 401),
            (url, good, b"{not json", 400),
            (url, good, b'{"no_update_id": true}', 400),
            (f"{engine.url}/webhooks/telegram/00000000-0000-0000-0000-000000000000", good, b"{}", 404),
            (f"{engine.url}/webhooks/telegram/not-a-uuid", good, b"{}", 404),
            (f"{engine.url}/webhooks/carrier-pigeon/{channel}", good, b"{}", 404),
            (url, good, b'{"update_id": 1, "message": {"text": "' + b"x" * 4096 + b'"}}', 413),
        ]
        for target, headers, body, status in cases:
            async with engine.http.post(target, data=body, headers=headers) as resp:
                assert resp.status == status, (target, headers, body[:40])
        assert await engine.post_telegram(channel, POLL_UPDATE) == 200  # not handled: dropped
        assert await queued_inbound(settings) == 0
        assert await engine.post_telegram(channel, telegram_update(5, 9, "hi")) == 200
        assert await queued_inbound(settings) == 1


async def test_inactive_channel_is_404(settings: Settings, pool: asyncpg.Pool) -> None:
    channel = (await load_tenant(settings))["tg"]
    await pool.execute("UPDATE channels SET active = false WHERE id = $1", channel)
    async with running_engine(settings, workers=0, senders=0) as engine:
        assert await engine.post_telegram(channel, telegram_update(1, 1, "hi")) == 404
        assert await queued_inbound(settings) == 0


@pytest.mark.slow
async def test_broker_down_answers_503_then_recovers_without_restart(
    settings: Settings, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    amqp = urlsplit(settings.amqp_url)
    proxy = TcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672)
    await proxy.start()
    receiver_settings = settings.model_copy(
        update={"amqp_url": settings.amqp_url.replace(f":{amqp.port or 5672}/", f":{proxy.port}/")}
    )
    channel = (await load_tenant(settings))["tg"]
    async with running_engine(receiver_settings, workers=0, senders=0) as engine:
        assert await engine.post_telegram(channel, telegram_update(1, 7, "before")) == 200
        await proxy.cut()
        for i in range(2, 5):
            assert await engine.post_telegram(channel, telegram_update(i, 7, f"down {i}")) == 503
        assert await queued_inbound(settings) == 1  # only the one accepted before the outage
        await proxy.start()  # the broker is back; the receiver is the same process

        async def accepted() -> bool:
            return await engine.post_telegram(channel, telegram_update(10, 7, "after")) == 200

        await wait_until(accepted, timeout=30, interval=0.5)
    await proxy.cut()
    assert await queued_inbound(settings) == 2  # 'before' and 'after': the 503s published nothing
    async with running_engine(settings, workers=1, senders=1):
        async with asyncio.timeout(30):
            sent = await recorder.wait_for(2, platform="telegram", method="sendMessage")
    assert sorted(r.body["text"] for r in sent) == ["Hi Ann! You said: after", "Hi Ann! You said: before"]
