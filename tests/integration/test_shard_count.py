"""The shard count is fixed for the life of a broker's queues: a process refuses to run with fewer."""

from __future__ import annotations

import dataclasses

import pytest

from engine.bus.connection import connect
from engine.bus.topology import (
    ShardCountMismatch,
    Topology,
    check_shard_count,
    declare_topology,
    delete_topology,
    open_for_shards,
)
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


async def test_a_worker_or_sender_with_fewer_shards_does_not_open_the_bus(settings: Settings) -> None:
    """open_for_shards, how the worker and the sender start: it refuses and closes what it opened."""
    made = dataclasses.replace(Topology.of(settings), shards=6)
    connection, channel = await open_for_shards(settings.amqp_url, "test-shards", made, prefetch=10)
    try:
        await channel.declare_queue(made.inbound_queue(5), passive=True)  # declared by it
        with pytest.raises(ShardCountMismatch):
            await open_for_shards(settings.amqp_url, "test-shards", dataclasses.replace(made, shards=4), prefetch=10)
    finally:
        await delete_topology(await connection.channel(), made)
        await connection.close()
