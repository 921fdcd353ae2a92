"""A reply committed as 'queued' whose broker message was lost (the broker failed between the commit
and the publish) is re-published by the sender's sweeper and delivered once."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson

from engine.fake_platforms import Recorder
from engine.models import ChannelType, OutboundMessage, stable_id
from engine.settings import Settings
from engine.values import utc
from tests.harness import load_tenant, running_engine, wait_until

INSERT = """
INSERT INTO channel_messages (id, tenant_id, channel_id, conversation_id, body, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, now() - interval '1 minute')
"""


async def test_a_lost_reply_is_swept_and_sent_once(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"requeue_stale_after": 2.0})
    channel = (await load_tenant(settings))["tg"]
    tenant = await pool.fetchval("SELECT tenant_id::text FROM channels WHERE id = $1", channel)
    reply = OutboundMessage(
        id=str(stable_id("lost-reply")), created_at=time.time(), tenant_id=tenant, channel_id=channel,
        channel_type=ChannelType.TELEGRAM, conversation_id=str(stable_id("conv")), conversation_key="4242",
        text="I was lost", reply_to={"chat_id": 4242},
    )  # fmt: skip
    await pool.execute(
        INSERT, reply.id, tenant, channel, reply.conversation_id, orjson.dumps(reply).decode(), utc(reply.created_at)
    )
    async with running_engine(settings, workers=0, senders=1):
        async with asyncio.timeout(20):
            sent = await recorder.wait_for(1, platform="telegram", method="sendMessage")

        async def delivered() -> bool:
            return await pool.fetchval("SELECT status FROM channel_messages") == "sent"

        await wait_until(delivered)
        await asyncio.sleep(3.0)  # a second sweep finds nothing stale: no second send
    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == ["I was lost"]
    assert sent[0].chat == "4242"
