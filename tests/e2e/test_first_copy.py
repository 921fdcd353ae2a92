"""The worker's commit claims its replies for their first copy: the sender sends that copy without a
claim of its own. Every other copy (redelivered by the broker, taken off the queue late, or a copy
of the message: a retry or a replay) is claimed, so a reply sent before is not sent again."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import asyncpg
import pytest
from prometheus_client import REGISTRY

from engine.admin.tenant_file import tenant_id
from engine.bus.connection import copy_of, replies_message
from engine.bus.topology import OUTBOUND_TYPES, Topology, declare_topology
from engine.fake_platforms import Recorder
from engine.models import ChannelType, OutboundMessage
from engine.settings import Settings
from tests.harness import load_tenant, queued_replies, running_engine, store_queued, telegram_reply, wait_until


def _claims(by: str) -> float:
    return REGISTRY.get_sample_value("engine_send_claims_total", {"by": by}) or 0.0


def _duplicates() -> float:
    return REGISTRY.get_sample_value("engine_sends_total", {"channel_type": "telegram", "outcome": "duplicate"}) or 0.0


async def _publish(settings: Settings, reply: OutboundMessage, how: str) -> None:
    """The reply's message in its outbound queue: its first copy, or (how) a copy that is not."""
    topology = Topology.of(settings)
    queue_name = topology.outbound_queue(OUTBOUND_TYPES.index(ChannelType.TELEGRAM) * topology.shards)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, topology)  # as the sender will
        exchange = await channel.get_exchange(topology.outbound)
        await exchange.publish(replies_message([reply], first_copy=True), routing_key=topology.outbound_key(reply))
        queue = await channel.declare_queue(queue_name, passive=True)
        if how == "redelivered":  # delivered once, never acked: the broker gives it back as redelivered
            taken = await wait_until(lambda: queue.get(no_ack=False, fail=False))
            await taken.nack(requeue=True)
        elif how == "copied":  # a retry or a replay: a copy of the message, published again
            taken = await wait_until(lambda: queue.get(no_ack=True, fail=False))
            await channel.default_exchange.publish(copy_of(taken, dict(taken.headers or {})), routing_key=queue_name)


@pytest.mark.parametrize("how", ["redelivered", "late", "copied"])
async def test_a_copy_that_is_not_the_first_is_claimed_and_a_reply_sent_before_is_not_sent_again(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder], how: str
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"shards": 1})
    channel = (await load_tenant(settings))["tg"]
    # "late": taken off the queue when the sweeper may have re-published its row already
    created = time.time() - (settings.requeue_stale_after if how == "late" else 0)
    reply = telegram_reply(tenant_id("acme"), channel, 701, "sent before", created)
    await store_queued(pool, reply)
    await pool.execute("UPDATE channel_messages SET status = 'sent', sent_at = now()")  # by an earlier copy
    await _publish(settings, reply, how)
    claims, duplicates = _claims("sender"), _duplicates()

    async def settled_as_duplicate() -> bool:
        return _duplicates() > duplicates

    async with running_engine(settings, workers=0, senders=1):
        await wait_until(settled_as_duplicate)
    assert _claims("sender") == claims + 1
    assert recorder.sent("telegram", method="sendMessage") == []
    assert await queued_replies(settings) == []  # acked: after the sender stopped, nothing came back


async def test_a_first_copy_is_sent_on_the_claim_of_the_commit_that_created_its_row(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"shards": 1})
    channel = (await load_tenant(settings))["tg"]
    reply = telegram_reply(tenant_id("acme"), channel, 702, "first copy", time.time())
    await store_queued(pool, reply)
    await _publish(settings, reply, "first")
    by_commit, by_sender = _claims("commit"), _claims("sender")
    async with running_engine(settings, workers=0, senders=1):
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")

        async def recorded() -> bool:
            return await pool.fetchval("SELECT status FROM channel_messages") == "sent"

        await wait_until(recorded)
    assert (_claims("commit"), _claims("sender")) == (by_commit + 1, by_sender)
    assert await pool.fetchval("SELECT attempts FROM channel_messages") == 1
    assert [r.body["text"] for r in recorder.sent("telegram", method="sendMessage")] == ["first copy"]
