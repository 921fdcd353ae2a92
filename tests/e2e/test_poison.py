"""A poison message goes aside with its reason while its shard keeps flowing; an operator lists it
and replays it to the queue it came from."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from engine.admin.commands import dead_letters
from engine.bus.topology import Topology
from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import dead_letter_count, load_tenant, queued_inbound, running_engine, telegram_update, wait_until


async def test_unreadable_message_is_dead_lettered_listed_and_replayed(
    settings: Settings, fake_platforms: tuple[str, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    _, recorder = fake_platforms
    channel = (await load_tenant(settings))["tg"]
    topology = Topology.of(settings)
    async with running_engine(settings) as engine:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            ch = await connection.channel()
            poison = aio_pika.Message(b'{"v": 99, "kind": "inbound", "data": {}}', message_id="poison-1")
            await ch.default_exchange.publish(poison, routing_key=topology.inbound_queue(0))
        assert await engine.post_telegram(channel, telegram_update(1, 5, "still flowing")) == 200
        async with asyncio.timeout(20):
            await recorder.wait_for(1, platform="telegram", method="sendMessage")

        async def dead() -> bool:
            return await dead_letter_count(settings) == 1

        await wait_until(dead)

    assert await dead_letters(settings, replay=False, limit=10) == 0
    listed = capsys.readouterr().out
    assert f"poison-1\t{topology.inbound_queue(0)}\tunsupported envelope version 99" in listed
    assert await dead_letter_count(settings) == 1  # listing leaves it there

    assert await dead_letters(settings, replay=True, limit=10) == 0
    assert await dead_letter_count(settings) == 0
    assert await queued_inbound(settings) == 1  # back on its shard, for a fixed worker to take
