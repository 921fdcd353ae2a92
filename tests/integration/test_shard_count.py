"""The shard count is fixed for the life of a broker's queues: a process refuses to run with fewer."""

from __future__ import annotations

import dataclasses

import pytest

from engine.bus.connection import connect
from engine.bus.topology import ShardCountMismatch, Topology, check_shard_count, declare_topology, delete_topology
from engine.settings import Settings


async def test_fewer_shards_than_the_queues_were_made_with_is_refused_and_more_is_not(settings: Settings) -> None:
    made = dataclasses.replace(Topology.of(settings), shards=6)
    connection = await connect(settings.amqp_url, "test-shard-count")
    try:
        await declare_topology(await connection.channel(), made)
        await check_shard_count(connection, made)  # the same count
        await check_shard_count(connection, dataclasses.replace(made, shards=8))  # more: new queues are safe
        with pytest.raises(ShardCountMismatch, match=rf"{made.prefix}\.inbound\.4\b.*ENGINE_SHARDS=4"):
            await check_shard_count(connection, dataclasses.replace(made, shards=4))
        channel = await connection.channel()  # the connection is still usable after the probes
        await channel.declare_queue(made.inbound_queue(0), passive=True)
    finally:
        await delete_topology(await connection.channel(), made)
        await connection.close()
