"""ENGINE_QUEUE_TYPE=quorum: shard, retry and outbound queues are quorum queues, and the whole path
(including single-active-consumer, the retry queue's TTL and dead-lettering) works on them."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg

from engine.bus.topology import Topology
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, telegram_update


async def test_quorum_queues_carry_the_whole_path(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"queue_type": "quorum"})
    channel = (await load_tenant(settings))["tg"]
    async with running_engine(settings, workers=2) as engine:
        for i in range(1, 31):
            assert await engine.post_telegram(channel, telegram_update(i, 400 + i % 3, f"m{i}")) == 200
        async with asyncio.timeout(60):
            await recorder.wait_for(30, platform="telegram", method="sendMessage")
    for chat in (400, 401, 402):
        texts = [r.body["text"] for r in recorder.sent("telegram", method="sendMessage") if r.chat == str(chat)]
        assert texts == [f"Hi Ann! You said: m{i}" for i in range(1, 31) if 400 + i % 3 == chat]
    assert await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'sent'") == 30

    # Declaring with the same arguments is a no-op only if they match what the queue has: quorum.
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        ch = await connection.channel()
        _, queues, _ = Topology.of(settings).declarations()
        declared = [q for q in queues if not q.name.endswith(".dead")]
        assert len(declared) == 2 * settings.shards + Topology.of(settings).outbound_slots
        for q in declared:  # raises ChannelPreconditionFailed on a classic queue
            await ch.declare_queue(q.name, durable=True, arguments={**q.arguments, "x-queue-type": "quorum"})
