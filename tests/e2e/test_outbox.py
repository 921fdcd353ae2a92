"""A reply committed as 'queued' whose broker message was lost (the broker failed between the commit
and the publish) is re-published by the sender's sweeper and delivered once."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from engine.admin.tenant_file import tenant_id
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import load_tenant, running_engine, store_queued, telegram_reply, wait_until


async def test_a_lost_reply_is_swept_and_sent_once(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"requeue_stale_after": 2.0})
    channel = (await load_tenant(settings))["tg"]
    tenant = tenant_id("acme")  # the harness tenant
    reply = telegram_reply(tenant, channel, 4242, "I was lost", time.time())
    await store_queued(pool, reply, age=60)  # its broker message never came: stale
    async with running_engine(settings, workers=0, senders=1):
        async with asyncio.timeout(20):
            sent = await recorder.wait_for(1, platform="telegram", method="sendMessage")

        async def delivered() -> bool:
            return await pool.fetchval("SELECT status FROM channel_messages") == "sent"

        await wait_until(delivered)
        await asyncio.sleep(3.0)  # a second sweep finds nothing stale: no second send
    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == ["I was lost"]
    assert sent[0].chat == "4242"
