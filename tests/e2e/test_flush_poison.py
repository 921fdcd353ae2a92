"""Values the database refuses, already on a shard queue (the edge cleans what it receives, but a
message published by an older receiver, or replayed, may still carry them): the batch holding them is
split until they are found, they go to the dead letters with the database's reason, every other
message of the batch commits and is answered, and the worker keeps running."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from engine.admin.tenant_file import tenant_id
from engine.bus import envelope
from engine.bus.connection import events_message, make_message
from engine.bus.consumer import REASON_HEADER
from engine.bus.topology import Topology
from engine.fake_platforms import Recorder
from engine.models import ChannelType, DeliveryStatus, InboundEvent, MessageType, StatusEvent
from engine.settings import Settings
from tests.harness import (
    count,
    load_tenant,
    queue_depths,
    queue_messages,
    running_engine,
    telegram_update,
    wait_until,
)


async def _publish_raw(settings: Settings, items: list[InboundEvent | StatusEvent]) -> None:
    topology = Topology.of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.inbound)
        for item in items:
            shard = topology.shard_of(item.tenant_id, item.channel_id, item.conversation_key)
            message = make_message(item, message_id=f"poison-{item.conversation_key}", correlation_id="x")
            await exchange.publish(message, routing_key=str(shard))


def _reasons(letters: list[AbstractIncomingMessage]) -> dict[str, str]:
    return {m.message_id or "": str((m.headers or {}).get(REASON_HEADER)) for m in letters}


async def test_refused_values_are_dead_lettered_and_the_rest_of_the_batch_commits(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    tenant = tenant_id("acme")
    nul_text = InboundEvent(
        channel, tenant, ChannelType.TELEGRAM, "nul-1", "9001", "9001", MessageType.TEXT, 1.0, text="a\x00b"
    )
    far_future = StatusEvent(channel, tenant, "m-1", DeliveryStatus.DELIVERED, 1e20, "9002")
    # Big batches, so that the poison shares a batch with good messages and must be split out.
    settings = settings.model_copy(update={"flush_interval_ms": 300.0, "batch_size": 1000})
    async with running_engine(settings) as engine:
        posts = [engine.post_telegram(channel, telegram_update(i, 100 + i, f"good {i}")) for i in range(1, 21)]
        results = await asyncio.gather(_publish_raw(settings, [nul_text, far_future]), *posts)
        assert results[1:] == [200] * 20
        async with asyncio.timeout(30):
            await recorder.wait_for(20, platform="telegram", method="sendMessage")

        async def both_dead() -> dict[str, str]:
            found = _reasons(await queue_messages(settings, Topology.of(settings).dead, take=False))
            return found if len(found) == 2 else {}

        reasons = await wait_until(both_dead, timeout=30)
        # The worker is still running: a good message after the poison is answered too.
        assert await engine.post_telegram(channel, telegram_update(99, 199, "after")) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(21, platform="telegram", method="sendMessage")

    assert "CharacterNotInRepertoireError" in reasons["poison-9001"]
    assert "database refused" in reasons["poison-9002"]
    assert await count(pool, "SELECT count(*) FROM message_history WHERE direction = 'inbound'") == 21
    assert await count(pool, "SELECT count(*) FROM inbound_events WHERE event_id = 'nul-1'") == 0


async def test_a_receiver_batch_sets_aside_only_its_refused_event_and_answers_the_others(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    """One broker message carrying several events (what a receiver publishes under load): each event
    goes through its own conversation's lane; the one the database refuses goes to the dead letters
    alone, with its own body; the others are answered once; the message is acked."""
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    tenant = tenant_id("acme")

    def text(n: int, body: str) -> InboundEvent:
        chat = str(500 + n % 3)  # three conversations, each with its messages in order
        return InboundEvent(
            channel, tenant, ChannelType.TELEGRAM, f"b-{n}", chat, chat, MessageType.TEXT, 1.0, text=body,
            reply_to={"chat_id": int(chat)},
        )  # fmt: skip

    items = [text(n, f"good {n}") for n in range(6)]
    items.insert(3, text(9, "a\x00b"))
    topology = Topology.of(settings)
    settings = settings.model_copy(update={"flush_interval_ms": 300.0, "batch_size": 1000})
    async with running_engine(settings) as engine:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            exchange = await (await connection.channel(publisher_confirms=True)).get_exchange(topology.inbound)
            message = events_message([envelope.encode(item) for item in items], "batch-1", "x")
            await exchange.publish(message, routing_key="0")
        async with asyncio.timeout(30):
            await recorder.wait_for(6, platform="telegram", method="sendMessage")
        dead = await wait_until(lambda: queue_messages(settings, topology.dead, take=False), timeout=30)
        # The worker is still running: a message after the batch is answered too.
        assert await engine.post_telegram(channel, telegram_update(99, 199, "after")) == 200
        async with asyncio.timeout(30):
            await recorder.wait_for(7, platform="telegram", method="sendMessage")

    # The engine stopped: a message it had not acked would be back in its queue now.
    assert await queue_depths(settings, *(topology.inbound_queue(k) for k in range(settings.shards))) == 0
    assert [envelope.decode(m.body) for m in dead] == [items[3]]  # the refused event alone
    assert "CharacterNotInRepertoireError" in str((dead[0].headers or {}).get(REASON_HEADER))
    chats = [r.chat for r in recorder.sent("telegram", method="sendMessage")]
    assert sorted(chats) == ["199", "500", "500", "501", "501", "502", "502"]  # each answered once
    assert await count(pool, "SELECT count(*) FROM inbound_events WHERE event_id LIKE 'b-%'") == 6
