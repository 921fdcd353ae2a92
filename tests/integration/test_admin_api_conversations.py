"""Conversations (filters, cursor pages, transcript), the handoff queue, commands into the
conversation's shard, contacts, dead letters, the audit log, and the OpenAPI document and docs page."""

from __future__ import annotations

import aio_pika
import asyncpg
import orjson
from openapi_spec_validator import validate

from engine.admin.api import openapi
from engine.admin.api.app import ROUTES
from engine.bus.connection import make_message, replies_message
from engine.bus.topology import Topology, declare_topology
from engine.models import ChannelType, InboundEvent, OutboundMessage
from engine.settings import Settings
from tests.api_helpers import seed_conversation
from tests.harness import queued_inbound
from tests.integration.conftest import World


async def test_conversations_filters_and_cursor_pages(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    ids = [await seed_conversation(pool, "acme", str(100 + i), "human" if i % 3 == 0 else "bot", minutes_ago=i)
           for i in range(7)]  # fmt: skip
    await seed_conversation(pool, "globex", "100", "human")
    seen, cursor = [], None
    for _ in range(5):
        query = "/conversations?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.call("GET", query, a)
        assert status == 200
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # newest first, each once, nothing of globex
    status, page, _ = await api.call("GET", "/conversations?status=human", a)
    assert [c["id"] for c in page["items"]] == [ids[0], ids[3], ids[6]]
    contact = page["items"][1]["contact_id"]
    assert [c["id"] for c in (await api.call("GET", f"/conversations?contact_id={contact}", a))[1]["items"]] == [ids[3]]
    channel = world.channels["acme"]
    assert len((await api.call("GET", f"/conversations?channel_id={channel}", a))[1]["items"]) == 7
    assert (await api.call("GET", f"/conversations?channel_id={world.channels['globex']}", a))[1]["items"] == []
    since = page["items"][1]["last_message_at"]
    recent = (await api.call("GET", f"/conversations?updated_since={since.replace('+', '%2B')}", a))[1]["items"]
    assert [c["id"] for c in recent] == ids[:4]
    assert (await api.call("GET", "/conversations?status=lost", a))[0] == 422
    assert (await api.call("GET", "/conversations?cursor=garbage", a))[0] == 422

    queue = (await api.call("GET", "/handoff-queue", a))[1]["items"]
    assert [c["id"] for c in queue] == [ids[6], ids[3], ids[0]]  # the longest-waiting first
    status, conversation, _ = await api.call("GET", f"/conversations/{ids[0]}", a)
    assert (status, conversation["status"], conversation["contact_name"]) == (200, "human", "Contact 100")
    status, page, _ = await api.call("GET", f"/conversations/{ids[0]}/messages?limit=2", a)
    assert [(m["direction"], m["text"]) for m in page["items"]] == [("inbound", "message 0"), ("outbound", "message 1")]
    rest = (await api.call("GET", f"/conversations/{ids[0]}/messages?cursor={page['next_cursor']}", a))[1]
    assert [m["text"] for m in rest["items"]] == ["message 2"]
    assert rest["next_cursor"] is None


async def test_commands_go_to_the_conversations_shard(world: World, pool: asyncpg.Pool, settings: Settings) -> None:
    api, a = world.api, world.a
    conversation = await seed_conversation(pool, "acme", "555", "human")
    status, body, _ = await api.call("POST", f"/conversations/{conversation}/messages", a, {"text": "Hello, Ann here"},
                                     {"Idempotency-Key": "k1"})  # fmt: skip
    assert (status, body["action"], body["status"]) == (202, "reply", "accepted")
    again = (await api.call("POST", f"/conversations/{conversation}/messages", a, {"text": "Hello, Ann here"},
                            {"Idempotency-Key": "k1"}))[1]  # fmt: skip
    assert again["id"] == body["id"]  # the same message: the worker's ledger sends it once
    assert (await api.call("POST", f"/conversations/{conversation}/messages", a, {"text": ""}))[0] == 422
    assert (await api.call("POST", f"/conversations/{conversation}/handback", a))[0] == 202
    assert (await api.call("POST", f"/conversations/{conversation}/close", a))[0] == 202
    assert await queued_inbound(settings) == 4

    topology = Topology.of(settings)
    shard = topology.shard_of(str(await pool.fetchval("SELECT tenant_id FROM conversations WHERE id = $1",
                                                      conversation)), world.channels["acme"], "555")  # fmt: skip
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.inbound_queue(shard), passive=True)
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(orjson.loads(message.body)["data"])
    assert [b["action"] for b in bodies] == ["reply", "reply", "handback", "close"]
    assert bodies[0]["text"] == "Hello, Ann here"
    assert bodies[0]["sender"] == "agent:acme-test"
    assert bodies[0]["reply_to"] == {"chat_id": 555}  # from the conversation's last inbound message

    closed = await seed_conversation(pool, "acme", "556", "closed")
    assert (await api.call("POST", f"/conversations/{closed}/messages", a, {"text": "hi"}))[0] == 409
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_logs ORDER BY created_at")]
    assert actions == ["reply", "reply", "handback", "close"]


async def test_contacts(world: World, pool: asyncpg.Pool, settings: Settings) -> None:
    api, a = world.api, world.a
    await seed_conversation(pool, "acme", "700")
    status, page, _ = await api.call("GET", "/contacts", a)
    (contact,) = page["items"]
    assert (contact["external_id"], contact["attributes"], contact["opted_out"]) == ("700", {"tier": "gold"}, False)
    status, contact, _ = await api.call("PATCH", f"/contacts/{contact['id']}", a, {"tags": ["vip"], "opted_out": True})
    assert (status, contact["tags"], contact["opted_out"], contact["opt_out_source"]) == (200, ["vip"], True, "api")
    # The one opt-out: the scheduler's contact_preferences row, written as a STOP word writes it.
    pref = await pool.fetchrow("SELECT marketing_opt_out, source FROM contact_preferences WHERE contact_id = $1",
                               contact["id"])  # fmt: skip
    assert (pref["marketing_opt_out"], pref["source"]) == (True, "api")
    assert [c["id"] for c in (await api.call("GET", "/contacts?tag=vip", a))[1]["items"]] == [contact["id"]]
    assert (await api.call("GET", "/contacts?tag=nope", a))[1]["items"] == []
    status, body, _ = await api.call("PATCH", f"/contacts/{contact['id']}", a, {"attributes": {"tier": None}})
    assert status == 202  # through the conversation's shard: the worker holds the contact's attributes
    assert await queued_inbound(settings) == 1
    assert (await api.call("PATCH", f"/contacts/{contact['id']}", a, {"tags": "vip"}))[0] == 422
    status, body, _ = await api.call("PATCH", f"/contacts/{contact['id']}", a, {"opted_out": False})
    assert (status, body["opted_out"], body["opted_out_at"], body["tags"]) == (200, False, None, ["vip"])
    assert await pool.fetchval("SELECT marketing_opt_out FROM contact_preferences WHERE contact_id = $1",
                               contact["id"]) is False  # fmt: skip


async def _dead_letter(settings: Settings, tenant_id: str, channel_id: str, event_id: str) -> None:
    event = InboundEvent(channel_id, tenant_id, "telegram", event_id, "42", "42", "text", 1.0, text="boom")  # type: ignore[arg-type]
    topology = Topology.of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        message = make_message(event, message_id=f"{channel_id}:{event_id}", correlation_id="42")
        message.headers = {"x-reason": "ValueError('boom')", "x-queue": topology.inbound_queue(1)}
        await channel.default_exchange.publish(message, routing_key=topology.dead)


async def test_dead_letters_of_the_tenant_only(world: World, pool: asyncpg.Pool, settings: Settings) -> None:
    api, a = world.api, world.a
    tenants = {r["slug"]: str(r["id"]) for r in await pool.fetch("SELECT slug, id FROM organizations")}
    await _dead_letter(settings, tenants["acme"], world.channels["acme"], "e1")
    await _dead_letter(settings, tenants["globex"], world.channels["globex"], "e2")
    status, body, _ = await api.call("GET", "/dead-letters", a)
    assert status == 200
    (letter,) = body["items"]
    assert (letter["reason"], letter["kind"], letter["conversation_key"]) == ("ValueError('boom')", "inbound", "42")
    assert len((await api.call("GET", "/dead-letters", world.b))[1]["items"]) == 1
    assert (await api.call("POST", f"/dead-letters/{letter['id']}/replay", world.b))[0] == 404
    status, replayed, _ = await api.call("POST", f"/dead-letters/{letter['id']}/replay", a)
    assert (status, replayed["queue"]) == (200, letter["queue"])
    assert (await api.call("GET", "/dead-letters", a))[1]["items"] == []
    assert len((await api.call("GET", "/dead-letters", world.b))[1]["items"]) == 1
    assert await queued_inbound(settings) == 1  # back on its shard
    audit = (await api.call("GET", "/audit-logs", a))[1]["items"]
    assert [(x["action"], x["resource"], x["actor"]) for x in audit] == [
        ("replay", "dead-letters", f"token:{a[:12]} (acme-test)")
    ]
    assert (await api.call("GET", "/audit-logs", world.b))[1]["items"] == []


async def test_a_dead_letter_carrying_replies_belongs_to_their_tenant(
    world: World, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenants = {r["slug"]: str(r["id"]) for r in await pool.fetch("SELECT slug, id FROM organizations")}
    replies = [
        OutboundMessage(id=f"00000000-0000-0000-0000-00000000000{n}", created_at=1.0, tenant_id=tenants["acme"],
                        channel_id=world.channels["acme"], channel_type=ChannelType.TELEGRAM,
                        conversation_id="00000000-0000-0000-0000-0000000000aa", conversation_key="77", text=f"r{n}")
        for n in (1, 2)
    ]  # fmt: skip
    topology = Topology.of(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        message = replies_message(replies)
        message.headers = {"x-reason": "RuntimeError('x')", "x-queue": topology.outbound_queue(0)}
        await channel.default_exchange.publish(message, routing_key=topology.dead)
    (letter,) = (await world.api.call("GET", "/dead-letters", world.a))[1]["items"]
    assert (letter["kind"], letter["conversation_key"], letter["queue"]) == (
        "outbound",
        "77",
        topology.outbound_queue(0),
    )
    assert (await world.api.call("GET", "/dead-letters", world.b))[1]["items"] == []


async def test_the_openapi_document_validates_and_the_docs_page_is_local(world: World) -> None:
    doc = openapi.document(ROUTES)
    validate(doc)  # OpenAPI 3.1 (openapi-spec-validator)
    status, served, _ = await world.api.call("GET", "/openapi.json", None)
    assert (status, served) == (200, orjson.loads(orjson.dumps(doc)))
    assert served["openapi"] == "3.1.0"
    operations = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
    assert operations == {(r.method, r.path) for r in ROUTES}
    flow = served["paths"]["/flows"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert flow == {"$ref": "#/components/schemas/FlowDef"}
    assert "nodes" in served["components"]["schemas"]["FlowDef"]["properties"]
    status, page, _ = await world.api.call("GET", "/docs", None)
    assert status == 200 and "openapi.json" in page
    assert "<script src" not in page and "https://" not in page  # nothing loaded from elsewhere
    status, body, _ = await world.api.call("GET", "/nothing-here", world.a)
    assert (status, body["error"]) == (404, "not_found")
