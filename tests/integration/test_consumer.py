"""The one shard consumer, on the real broker: how each delivery is settled (ack, requeue, retry with
the attempt header, dead-letter with reason and origin), the in-flight bookkeeping a hand-over waits
on, and consumers restored after the connection to the broker is cut and comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest

from engine.bus.connection import connect, open_channel
from engine.bus.consumer import ATTEMPT_HEADER, ORIGIN_HEADER, REASON_HEADER, Delivery, ShardConsumer
from engine.bus.shards import Membership
from engine.bus.topology import Topology, declare_topology
from engine.settings import Settings
from tests.harness import queue_messages, wait_until
from tests.proxy import TcpProxy

Handler = Callable[[ShardConsumer, Delivery], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def consuming(
    settings: Settings, pool: asyncpg.Pool, handler: Handler, amqp_url: str | None = None
) -> AsyncIterator[ShardConsumer]:
    """A consumer of every inbound shard (one member owns them all), each delivery handled in a task."""
    topology = Topology.of(settings)
    connection = await connect(amqp_url or settings.amqp_url, "test-consumer")
    channel = await open_channel(connection, prefetch=10)
    await declare_topology(channel, topology)
    consumer = ShardConsumer(channel, Membership(pool, "worker", settings.lease_ttl), topology.inbound_shards())
    tasks: set[asyncio.Task[None]] = set()

    def on_delivery(delivery: Delivery) -> None:
        task: asyncio.Task[None] = asyncio.create_task(handler(consumer, delivery))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def on_release(shard: int) -> None:
        await consumer.wait_idle(shard, 5)

    follower = asyncio.create_task(consumer.follow(on_delivery, on_release, 0.2))
    try:
        await wait_until(lambda: _owns_all(consumer, settings.shards), timeout=10)
        yield consumer
    finally:
        follower.cancel()
        await asyncio.gather(follower, *tasks, return_exceptions=True)
        await consumer.stop()
        await connection.close()


async def _owns_all(consumer: ShardConsumer, shards: int) -> bool:
    return len(consumer.consumers) == shards


async def _publish(settings: Settings, body: bytes, message_id: str, shard: int = 0) -> None:
    topology = Topology.of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        message = aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=topology.inbound_queue(shard))


async def test_a_failing_message_is_retried_with_its_attempt_count_then_dead_lettered_with_reason_and_origin(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    seen: list[int] = []

    async def always_fails(consumer: ShardConsumer, delivery: Delivery) -> None:
        seen.append(delivery.attempts)
        await consumer.retry(delivery, "ValueError('boom')")

    async with consuming(settings, pool, always_fails) as consumer:
        await _publish(settings, b"x", "m-1", shard=1)
        await wait_until(lambda: _eventually(len(seen) == consumer.max_attempts), timeout=20)
        await wait_until(lambda: _eventually(consumer.in_flight[1] == 0))
    dead = await queue_messages(settings, Topology.of(settings).dead)
    assert seen == [0, 1, 2]  # exactly max_attempts tries, through the retry queue
    assert len(dead) == 1
    headers = dead[0].headers or {}
    assert dead[0].message_id == "m-1"
    assert headers[REASON_HEADER] == "ValueError('boom')"
    assert headers[ORIGIN_HEADER] == Topology.of(settings).inbound_queue(1)
    assert headers[ATTEMPT_HEADER] == 2


async def test_requeue_gives_the_message_back_and_ack_settles_it_once(settings: Settings, pool: asyncpg.Pool) -> None:
    seen: list[str] = []

    async def requeue_first(consumer: ShardConsumer, delivery: Delivery) -> None:
        seen.append(delivery.message.message_id or "")
        if len(seen) == 1:
            await consumer.requeue(delivery)
        else:
            await consumer.ack(delivery)
            with pytest.raises(RuntimeError, match="settled twice"):
                await consumer.ack(delivery)

    async with consuming(settings, pool, requeue_first) as consumer:
        await _publish(settings, b"x", "m-2")
        await wait_until(lambda: _eventually(len(seen) == 2))
        await asyncio.sleep(0.5)  # an ack that did not reach the broker would bring it back
        assert seen == ["m-2", "m-2"]
        assert consumer.in_flight[0] == 0
    assert await queue_messages(settings, Topology.of(settings).dead) == []


async def test_wait_idle_returns_only_once_every_delivery_of_the_shard_is_settled(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    held: list[Delivery] = []

    async def hold(consumer: ShardConsumer, delivery: Delivery) -> None:
        held.append(delivery)

    async with consuming(settings, pool, hold) as consumer:
        await _publish(settings, b"x", "a", shard=2)
        await _publish(settings, b"y", "b", shard=2)
        await wait_until(lambda: _eventually(len(held) == 2))
        assert not await consumer.wait_idle(2, 0.2)
        await consumer.ack(held[0])
        assert not await consumer.wait_idle(2, 0.2)
        await consumer.dead_letter(held[1], "set aside", "test")
        assert await consumer.wait_idle(2, 0.2)


async def test_ack_many_never_acks_a_message_still_in_flight(settings: Settings, pool: asyncpg.Pool) -> None:
    """ack_many joins acks into a multiple-ack; a message taken before them and not settled yet (here
    the third) must stay with the broker: handed back, it comes again, and nothing else does."""
    held: list[Delivery] = []

    async def hold(consumer: ShardConsumer, delivery: Delivery) -> None:
        held.append(delivery)

    async with consuming(settings, pool, hold) as consumer:
        for name in "abcd":
            await _publish(settings, name.encode(), name, shard=3)
        await wait_until(lambda: _eventually(len(held) == 4))
        assert [d.message.message_id for d in held] == ["a", "b", "c", "d"]
        await consumer.ack_many([held[0], held[1], held[3]])
        await consumer.requeue(held[2])
        await wait_until(lambda: _eventually(len(held) == 5))
        await consumer.ack_many([held[4]])
        await asyncio.sleep(0.5)  # a message left unacked (or acked twice) would come back
        assert [d.message.message_id for d in held] == ["a", "b", "c", "d", "c"]
        assert consumer.in_flight[3] == 0
    assert await queue_messages(settings, Topology.of(settings).dead) == []


async def test_a_message_of_several_parts_is_acked_once_after_its_last_part_and_sets_aside_only_its_own(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Parts settle one by one (ack, ack_many, dead-letter, retry); the message stays with us until
    the last, then is acked once; what a part sets aside or retries is that part's body alone."""
    held: list[Delivery] = []

    async def hold(consumer: ShardConsumer, delivery: Delivery) -> None:
        held.append(delivery)

    async with consuming(settings, pool, hold) as consumer:
        await _publish(settings, b"abcd", "m-parts", shard=1)
        await wait_until(lambda: _eventually(len(held) == 1))
        parts = [part for part, _ in consumer.parts(held[0], list("abcd"), lambda n: f"part {n}".encode())]
        await consumer.ack(parts[0])
        await consumer.dead_letter(parts[1], "refused", "test")
        await consumer.retry(parts[2], "boom")
        assert consumer.in_flight[1] == 1  # the last part is not settled: the message is still ours
        with pytest.raises(RuntimeError, match="settled twice"):
            await consumer.ack(parts[0])
        await consumer.ack_many([parts[3]])
        assert consumer.in_flight[1] == 0
        assert held[0].settled
        await wait_until(lambda: _eventually(len(held) == 2))  # the retried part comes back, alone
        assert held[1].message.body == b"part c"
        assert held[1].attempts == 1
        await consumer.ack(held[1])
        await asyncio.sleep(0.5)  # a message left unacked would come back
        assert len(held) == 2
    dead = await queue_messages(settings, Topology.of(settings).dead)
    assert [m.body for m in dead] == [b"part b"]
    assert (dead[0].headers or {})[REASON_HEADER] == "refused"


async def test_consumers_come_back_after_the_broker_connection_is_cut(settings: Settings, pool: asyncpg.Pool) -> None:
    """The robust channel restores consumers only on queues declared through it: a message
    published after the cut and the reconnect must still be delivered."""
    amqp = urlsplit(settings.amqp_url)
    proxy = TcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672)
    await proxy.start()
    url = settings.amqp_url.replace(f":{amqp.port or 5672}/", f":{proxy.port}/")
    got: list[str] = []

    async def ack(consumer: ShardConsumer, delivery: Delivery) -> None:
        got.append(delivery.message.message_id or "")
        await consumer.ack(delivery)

    async with consuming(settings, pool, ack, amqp_url=url):
        await _publish(settings, b"x", "before", shard=3)
        await wait_until(lambda: _eventually(got == ["before"]))
        await proxy.cut()
        await asyncio.sleep(1.0)
        await proxy.start()  # same port: the robust connection reconnects by itself
        await _publish(settings, b"y", "after", shard=3)
        await wait_until(lambda: _eventually(got == ["before", "after"]), timeout=30)
    await proxy.cut()


async def _eventually(value: bool) -> bool:
    return value
