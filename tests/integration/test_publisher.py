"""The receiver's publisher on the real broker: events of one shard that arrive while its publish
awaits a confirm go together in the next message, each once and in order; an event alone goes in a
body of its own kind; with a linger, events arriving within it for an idle shard share one message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from engine.bus import envelope
from engine.bus.topology import Topology
from engine.ingress.publisher import EVENTS_PER_MESSAGE, Publisher
from engine.models import ChannelType, InboundEvent, MessageType
from engine.settings import Settings
from tests.harness import queue_messages


def event(n: int, chat: str = "7") -> InboundEvent:
    return InboundEvent("c1", "t1", ChannelType.TELEGRAM, f"e{n}", chat, chat, MessageType.TEXT, 1.0, text=f"hi {n}")


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    publisher = Publisher(settings.amqp_url, Topology.of(settings), "test-receiver", 5.0)
    await publisher.start()
    yield publisher
    await publisher.close()


async def test_events_waiting_for_a_shard_go_together_each_once_in_order(
    settings: Settings, publisher: Publisher
) -> None:
    topology = Topology.of(settings)
    events = [event(n) for n in range(EVENTS_PER_MESSAGE + 50)]  # one conversation, so one shard
    await asyncio.gather(*(publisher.publish([e]) for e in events))  # every webhook answered

    messages = await queue_messages(settings, topology.inbound_queue(topology.shard_of("t1", "c1", "7")))
    assert [len(envelope.decode_events(m.body)) for m in messages] == [EVENTS_PER_MESSAGE, 50]
    decoded = [item for m in messages for item in envelope.decode_events(m.body)]
    assert decoded == events  # none lost, none twice, in arrival order
    assert messages[0].message_id == "c1:e0"


async def test_an_event_alone_goes_in_a_body_of_its_own_kind(settings: Settings, publisher: Publisher) -> None:
    topology = Topology.of(settings)
    await publisher.publish([event(1, chat="8")])
    (message,) = await queue_messages(settings, topology.inbound_queue(topology.shard_of("t1", "c1", "8")))
    assert orjson.loads(message.body)["kind"] == "inbound"
    assert envelope.decode(message.body) == event(1, chat="8")


async def test_events_within_the_linger_of_an_idle_shard_share_one_message(settings: Settings) -> None:
    topology = Topology.of(settings)
    publisher = Publisher(settings.amqp_url, topology, "test-receiver", 5.0, linger=1.0)
    await publisher.start()
    try:
        first = asyncio.create_task(publisher.publish([event(1, chat="9")]))
        await asyncio.sleep(0.05)  # the first webhook found the shard idle; the second comes well within 1 s
        await publisher.publish([event(2, chat="9")])
        await first
    finally:
        await publisher.close()
    messages = await queue_messages(settings, topology.inbound_queue(topology.shard_of("t1", "c1", "9")))
    assert [envelope.decode_events(m.body) for m in messages] == [[event(1, chat="9"), event(2, chat="9")]]
