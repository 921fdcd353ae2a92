"""Pure pieces of the spine: lanes, shard assignment, envelopes, the tenant file, the vault."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from engine.admin.tenant_file import BundleError, parse_bundle
from engine.bus import envelope
from engine.bus.lanes import Lanes
from engine.bus.shards import assign
from engine.bus.topology import Topology
from engine.crypto import CredentialError, Vault, generate_key
from engine.models import Button, ChannelType, ConversationCommand, InboundEvent, MessageType, OutboundMessage


async def test_lanes_keep_order_per_key_and_run_keys_concurrently() -> None:
    lanes, seen = Lanes(), []
    running: set[str] = set()
    overlap = []

    def job(key: str, i: int):
        async def run() -> None:
            running.add(key)
            overlap.append(len(running))
            await asyncio.sleep(random.random() / 1000)
            seen.append((key, i))
            running.discard(key)

        return run

    for i in range(20):
        for key in ("a", "b", "c"):
            lanes.submit(key, job(key, i))
    assert await lanes.drain(5)
    for key in ("a", "b", "c"):
        assert [i for k, i in seen if k == key] == list(range(20))
    assert max(overlap) > 1  # different keys did run at the same time
    assert len(lanes) == 0


async def test_a_failing_job_does_not_stop_its_lane() -> None:
    lanes, seen = Lanes(), []

    async def boom() -> None:
        raise RuntimeError("x")

    async def ok() -> None:
        seen.append(1)

    lanes.submit("k", boom)
    lanes.submit("k", ok)
    assert await lanes.drain(5)
    assert seen == [1]


def test_rendezvous_assignment_is_a_partition_and_moves_little() -> None:
    members = ["w-a", "w-b", "w-c"]
    owned = {m: assign(16, members, m) for m in members}
    assert set().union(*owned.values()) == set(range(16))
    assert sum(len(s) for s in owned.values()) == 16
    assert all(owned.values())  # every member gets some
    after = {m: assign(16, ["w-a", "w-b"], m) for m in ("w-a", "w-b")}
    for m in ("w-a", "w-b"):
        assert owned[m] <= after[m]  # a member leaving moves only its own shards
    assert assign(4, [], "anyone") == {0, 1, 2, 3}


def test_shard_of_is_stable_and_in_range() -> None:
    t = Topology("engine", 16)
    assert t.shard_of("t", "c", "chat-1") == t.shard_of("t", "c", "chat-1")
    assert {t.shard_of("t", "c", f"chat-{i}") for i in range(500)} == set(range(16))
    assert t.shard_of("t", "c", "x") == 9  # crc32: the same on every host and run


def test_envelope_round_trip_and_rejects() -> None:
    event = InboundEvent("c", "t", ChannelType.SLACK, "e1", "C1", "U1", MessageType.TEXT, 1.5, text="hi")
    assert envelope.decode(envelope.encode(event)) == event
    out = OutboundMessage("id", 2.0, "t", "c", ChannelType.TELEGRAM, "conv", "k", "hi", (Button("y", "Yes"),))
    assert envelope.decode(envelope.encode(out)) == out
    command = ConversationCommand("c", "t", "k", "handback", 3.0)
    assert envelope.decode(envelope.encode(command)) == command
    for bad in (b"nope", b'{"v": 2, "kind": "inbound", "data": {}}', b'{"v": 1, "kind": "inbound", "data": {}}'):
        with pytest.raises(envelope.EnvelopeError):
            envelope.decode(bad)


def test_bundle_errors_name_the_bad_field() -> None:
    base = "tenant: {slug: acme, name: A}\nbots: [{slug: shop, name: S}]\n"
    cases = {
        "channels: [{slug: x, type: fax}]": "channels[0].type",
        "channels: [{slug: x, type: telegram, bot: shp}]": "channels[0].bot: unknown bot 'shp'",
        "channels: [{slug: x, type: telegram, colour: red}]": "channels[0].colour",
        "channels: [{slug: X!, type: telegram}]": "channels[0].slug",
    }
    for extra, message in cases.items():
        with pytest.raises(BundleError, match=re.escape(message)):
            parse_bundle(base + extra)
    with pytest.raises(BundleError, match=re.escape("tenant.timezone: Value error, unknown time zone")):
        parse_bundle("tenant: {slug: acme, name: A, timezone: Mars/Base}")
    with pytest.raises(BundleError, match="not valid YAML"):
        parse_bundle("tenant: [")


def test_vault_encrypts_and_rotates() -> None:
    old, new = generate_key(), generate_key()
    token = Vault(old).encrypt({"bot_token": "123:ABC"})
    assert b"123:ABC" not in token
    both = Vault(f"{new},{old}")
    rotated = both.rotate(token)
    assert Vault(new).decrypt(rotated) == {"bot_token": "123:ABC"}
    with pytest.raises(CredentialError):
        Vault(new).decrypt(token)
    with pytest.raises(CredentialError, match="ENGINE_MASTER_KEY is not set"):
        Vault("")


def test_state_entry_restores_a_snapshot_after_a_failed_attempt() -> None:
    from engine.models import Contact, Conversation
    from engine.worker.conversations import Entry

    entry = Entry(
        Conversation("c", "t", "ch", "k", "key", variables={"a": 1}, tags=["x"]), Contact("k", "t", "ch", "u"), 0
    )
    saved = entry.snapshot()
    entry.conversation.variables["a"] = 2
    entry.conversation.tags.append("y")
    entry.conversation.node_id = "half-way"
    entry.contact.attributes["vip"] = True
    entry.restore(saved)
    assert (entry.conversation.variables, entry.conversation.tags, entry.conversation.node_id) == (
        {"a": 1},
        ["x"],
        None,
    )
    assert entry.contact.attributes == {}
