"""`engine worker`: consume the shard queues this process owns and run each conversation in order
(engine.worker.pipeline), flushing many messages' effects in one transaction (engine.worker.batch)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engine import heap
from engine.brain.catalog import Brain
from engine.brain.tools import egress
from engine.bus.consumer import ShardConsumer
from engine.bus.shards import Membership
from engine.bus.topology import Topology, open_for_shards
from engine.settings import Settings
from engine.store.credentials import check_master_key
from engine.store.pool import create_pool
from engine.worker.batch import Flusher
from engine.worker.conversations import ConversationCache
from engine.worker.pipeline import Pipeline
from workers.runtime import run, until_stop_or_failure

log = logging.getLogger(__name__)


class WorkerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer: ShardConsumer | None = None  # once running: which shards it consumes

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        topology = Topology.of(s)
        pool = await create_pool(s.database_url, max_size=5, reset=False)
        # The flush's statements find their rows by key: planned once per connection (docs/performance.md).
        keyed = await create_pool(s.database_url, max_size=1, reset=False, keyed=True)  # one flush at a time
        await check_master_key(pool, s.master_key)  # no tool may run with missing or wrong secrets
        # Tools' HTTP: no loopback / private / metadata address unless the operator allows it.
        http = egress.session(egress.EgressPolicy.parse(s.tool_allow_hosts, s.tool_allow_networks), s.send_timeout)
        brain = Brain(pool, http, s)
        await brain.start()
        # The compiled definitions are large and long-lived (a 4x routing throughput difference in tests/bench).
        heap.freeze()
        cache = ConversationCache(pool, max_entries=s.conversation_cache)
        membership = Membership(pool, "worker", s.lease_ttl)
        connection, channel = await open_for_shards(s.amqp_url, membership.me, topology, s.prefetch)
        outbound = await channel.get_exchange(topology.outbound)

        self.consumer = consumer = ShardConsumer(channel, membership, topology.inbound_shards())
        flusher = Flusher(
            keyed, consumer, outbound, topology, cache, batch_size=s.batch_size, interval_ms=s.flush_interval_ms
        )
        pipeline = Pipeline(brain, cache, consumer, flusher, s.shutdown_grace)
        membership_task = asyncio.create_task(
            consumer.follow(pipeline.on_delivery, pipeline.release_shard, s.heartbeat_interval), name="membership"
        )
        flusher_task = asyncio.create_task(flusher.run(), name="flusher")
        log.info("worker %s started", membership.me)
        died = await until_stop_or_failure(stop, [membership_task, flusher_task])

        # Stop taking work, finish what is in flight, flush and ack, then close in reverse order.
        membership_task.cancel()  # no more shard changes
        await consumer.stop()
        if not await pipeline.lanes.drain(s.shutdown_grace):
            log.warning("grace period over: unfinished messages go back to the broker")
            await pipeline.lanes.cancel()
        flusher.stopping = True  # the final flush does not wait out a database outage
        async with flusher.lock:  # never cancel the flusher in the middle of a flush
            flusher_task.cancel()
        await asyncio.gather(membership_task, flusher_task, return_exceptions=True)
        try:
            await flusher.flush()
        except Exception:  # the broker will redeliver whatever we could not commit and ack
            log.exception("final flush failed")
        with contextlib.suppress(Exception):
            await membership.leave()
        await channel.close()
        await connection.close()
        await brain.stop()
        await http.close()
        await keyed.close()
        await pool.close()
        log.info("worker %s stopped", membership.me)
        if died:
            raise SystemExit(1)


def main(settings: Settings) -> None:
    run(WorkerProcess(settings).run, settings)
