"""Replies travel to the sender in batches: the replies of one worker flush for one outbound queue
share one broker message. Each reply is still sent once, in order per chat, and a reply that makes
the sender fail is set aside alone while the rest of its message is delivered."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import asyncpg

from engine.admin.tenant_file import tenant_id
from engine.bus import envelope
from engine.bus.connection import replies_message
from engine.bus.consumer import ORIGIN_HEADER, REASON_HEADER
from engine.bus.topology import OUTBOUND_TYPES, Topology
from engine.fake_platforms import Recorder
from engine.models import ChannelType
from engine.settings import Settings
from tests.harness import (
    count,
    load_tenant,
    queued_replies,
    running_engine,
    store_queued,
    telegram_reply,
    telegram_update,
    wait_until,
)

CHATS = range(500, 520)


async def test_one_flush_publishes_its_replies_in_one_message_and_each_is_sent_once_in_order(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    # One shard, and a flush interval long enough that the updates below share a batch or two.
    settings = settings.model_copy(update={"shards": 1, "flush_interval_ms": 400.0})
    channel = (await load_tenant(settings))["tg"]
    async with running_engine(settings, workers=1, senders=0) as engine:
        statuses = await asyncio.gather(
            *(engine.post_telegram(channel, telegram_update(n, chat, f"hi {n}")) for n, chat in enumerate(CHATS, 1))
        )
        assert statuses == [200] * len(CHATS)
        await wait_until(lambda: _at_least(pool, "SELECT count(*) FROM channel_messages", len(CHATS)))
        messages = await wait_until(lambda: queued_replies(settings))
        while sum(map(len, messages)) < len(CHATS):  # a later batch may still be publishing
            await asyncio.sleep(0.1)
            messages = await queued_replies(settings)

        assert sum(map(len, messages)) == len(CHATS)
        assert len(messages) < len(CHATS)  # batched: fewer broker messages than replies
        assert sorted(r.conversation_key for batch in messages for r in batch) == sorted(map(str, CHATS))

        engine.start_sender()
        async with asyncio.timeout(30):
            await recorder.wait_for(len(CHATS), platform="telegram", method="sendMessage")
        sent_rows = "SELECT count(*) FROM channel_messages WHERE status = 'sent'"
        await wait_until(lambda: _at_least(pool, sent_rows, len(CHATS)))
        await asyncio.sleep(0.5)  # anything sent twice would arrive by now
    sent = recorder.sent("telegram", method="sendMessage")
    assert sorted(r.chat for r in sent) == sorted(map(str, CHATS))  # each chat answered exactly once


async def test_a_reply_the_sender_fails_on_is_set_aside_alone_and_the_rest_of_its_message_is_sent(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"shards": 1})
    channel = (await load_tenant(settings))["tg"]
    tenant = tenant_id("acme")  # the harness tenant

    now = time.time()
    first, last = telegram_reply(tenant, channel, 601, "one", now), telegram_reply(tenant, channel, 603, "three", now)
    broken = telegram_reply(tenant, channel, 602, "two", 1e20)  # 1e20: no date
    for r in (first, last):
        await store_queued(pool, r)
    topology = Topology.of(settings)
    async with running_engine(settings, workers=0, senders=1):
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            amqp = await connection.channel()
            exchange = await amqp.get_exchange(topology.outbound)
            await exchange.publish(replies_message([first, broken, last]), routing_key=topology.outbound_key(first))
            async with asyncio.timeout(20):
                await recorder.wait_for(2, platform="telegram", method="sendMessage")
            dead_queue = await amqp.declare_queue(topology.dead, passive=True)
            dead = await wait_until(lambda: dead_queue.get(no_ack=True, fail=False))
    slot = OUTBOUND_TYPES.index(ChannelType.TELEGRAM) * topology.shards
    assert await queued_replies(settings) == []  # settled: after the sender stopped, nothing came back

    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == ["one", "three"]
    assert [r.id for r in envelope.decode_replies(dead.body)] == [broken.id]  # only the failed reply
    headers = dead.headers or {}
    assert "Error" in str(headers[REASON_HEADER])
    assert headers[ORIGIN_HEADER] == topology.outbound_queue(slot)
    assert await count(pool, "SELECT count(*) FROM channel_messages WHERE status = 'sent'") == 2


async def _at_least(pool: asyncpg.Pool, sql: str, n: int) -> bool:
    return await count(pool, sql) >= n
