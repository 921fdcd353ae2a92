"""`engine sender`: consume the outbound queues this process owns (one per platform and shard) and
deliver each reply through its platform's API (engine.outbound.sender)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson

from engine import heap
from engine.bus.consumer import ShardConsumer
from engine.bus.shards import Membership
from engine.bus.topology import Topology, open_for_shards
from engine.outbound.sender import Sender
from engine.settings import Settings
from engine.store.channels import ChannelDirectory
from engine.store.credentials import check_master_key
from engine.store.pool import create_pool
from workers.runtime import run, until_stop_or_failure

log = logging.getLogger(__name__)


class SenderProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer: ShardConsumer | None = None  # once running: which shards it consumes

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        topology = Topology.of(s)
        pool = await create_pool(s.database_url, max_size=10, reset=False)
        keyed = await create_pool(s.database_url, max_size=4, reset=False, keyed=True)  # claims and records
        vault = await check_master_key(pool, s.master_key)  # refuses to start with a wrong key
        directory = ChannelDirectory(pool, vault, s.channel_cache_ttl)
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s.send_timeout), json_serialize=lambda o: orjson.dumps(o).decode()
        )
        membership = Membership(pool, "sender", s.lease_ttl)
        connection, channel = await open_for_shards(s.amqp_url, membership.me, topology, s.sender_prefetch)
        self.consumer = consumer = ShardConsumer(channel, membership, topology.outbound_shards())
        sender = Sender(s, pool, keyed, http, directory, consumer, await channel.get_exchange(topology.outbound))
        heap.freeze()  # what is alive now lives as long as the process
        tasks = [
            asyncio.create_task(
                consumer.follow(sender.on_delivery, sender.release_shard, s.heartbeat_interval), name="membership"
            ),
            asyncio.create_task(sender.sweep_loop(), name="sweeper"),
        ]
        log.info("sender %s started", membership.me)
        died = await until_stop_or_failure(stop, tasks)

        for task in tasks:
            task.cancel()
        await consumer.stop()
        if not await sender.lanes.drain(s.shutdown_grace):
            log.warning("grace period over: unsent replies go back to the broker")
            await sender.lanes.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await membership.leave()
        await channel.close()
        await connection.close()
        await http.close()
        await keyed.close()
        await pool.close()
        log.info("sender %s stopped", membership.me)
        if died:
            raise SystemExit(1)


def main(settings: Settings) -> None:
    run(SenderProcess(settings).run, settings)
