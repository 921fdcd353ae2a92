"""How a flush's replies, and the inbound events a receiver publishes together, are packed into broker
messages, and read back."""

from __future__ import annotations

import pytest

from engine.bus import envelope
from engine.bus.topology import Topology
from engine.models import ChannelType, DeliveryStatus, InboundEvent, MessageType, OutboundMessage, StatusEvent


def reply(n: int, chat: str, tenant: str = "t1", channel_type: ChannelType = ChannelType.TELEGRAM) -> OutboundMessage:
    return OutboundMessage(
        id=f"r{n}", created_at=1.0, tenant_id=tenant, channel_id="c1", channel_type=channel_type,
        conversation_id=f"conv-{chat}", conversation_key=chat, text=f"reply {n}",
    )  # fmt: skip


def test_replies_are_grouped_by_queue_and_tenant_in_order_and_capped() -> None:
    topology = Topology("p", 2)
    chats = [str(n) for n in range(40)]
    replies = [reply(n, chats[n % 40]) for n in range(120)]
    replies.append(reply(120, "0", tenant="t2"))  # another tenant on the same queue
    replies.append(reply(121, "0", channel_type=ChannelType.SLACK))  # another platform

    groups = topology.group_replies(replies, most=25)

    assert sorted(r.id for _, group in groups for r in group) == sorted(r.id for r in replies)  # none lost
    for key, group in groups:
        assert 1 <= len(group) <= 25
        assert {topology.outbound_key(r) for r in group} == {key}
        assert len({r.tenant_id for r in group}) == 1
        ids = [int(r.id[1:]) for r in group]
        assert ids == sorted(ids)  # each group keeps the staging order (so each chat's order)
    assert len(groups) < len(replies) / 10


def test_a_replies_body_reads_back_as_its_replies_and_a_single_reply_body_too() -> None:
    replies = [reply(1, "5"), reply(2, "5")]
    assert envelope.decode_replies(envelope.encode_replies(replies)) == replies
    assert envelope.decode_replies(envelope.encode(replies[0])) == [replies[0]]
    with pytest.raises(envelope.EnvelopeError):
        envelope.decode(envelope.encode_replies(replies))  # never taken for an inbound item
    with pytest.raises(envelope.EnvelopeError):
        envelope.decode_replies(b'{"v": 1, "kind": "inbound", "data": {}}')


def test_an_events_body_reads_back_as_its_items_in_order_and_a_single_item_body_too() -> None:
    inbound = InboundEvent("c1", "t1", ChannelType.TELEGRAM, "e1", "5", "5", MessageType.TEXT, 1.0, text="hi")
    status = StatusEvent("c1", "t1", "m-1", DeliveryStatus.DELIVERED, 2.0, "5")
    bodies = [envelope.encode(inbound), envelope.encode(status)]
    assert envelope.decode_events(envelope.join_events(bodies)) == [inbound, status]
    assert envelope.join_events(bodies[:1]) == bodies[0]  # one event: the body of its own kind
    assert envelope.decode_events(bodies[0]) == [inbound]
    with pytest.raises(envelope.EnvelopeError, match="version"):
        envelope.decode_events(b'{"v":1,"kind":"events","data":[{"v":2,"kind":"inbound","data":{}}]}')
    with pytest.raises(envelope.EnvelopeError):
        envelope.decode(envelope.join_events(bodies))  # never taken for one item
    with pytest.raises(envelope.EnvelopeError, match="without events"):  # would be a message never settled
        envelope.decode_events(b'{"v":1,"kind":"events","data":[]}')
    outbound = envelope.encode(reply(1, "5"))
    for body in (outbound, envelope.join_events([bodies[0], outbound])):  # replies travel on outbound shards
        with pytest.raises(envelope.EnvelopeError, match="outbound message on an inbound shard"):
            envelope.decode_events(body)
