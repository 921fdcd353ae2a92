"""The brain against a real database: save_definitions, kb_search, memory, LISTEN/NOTIFY reloads and
a whole shop conversation with its HTTP tool on a local server."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import yaml
from aiohttp import web

from engine.admin.environment import TenantEnvironment
from engine.admin.sections import DefinitionError, save_definitions
from engine.admin.tenant_file import (
    BRAIN_SECTIONS,
    bot_id,
    channel_id,
    expand_env,
    load_bundle,
    parse_bundle,
    tenant_id,
)
from engine.brain.catalog import Brain
from engine.brain.tools import egress
from engine.brain.tools.egress import EgressPolicy
from engine.brain.tools.runner import CallContext, Toolbox
from engine.crypto import Vault
from engine.models import ChannelType, Contact, Conversation, InboundEvent, MessageType, stable_id
from engine.settings import Settings
from engine.store import knowledge

EXAMPLE = Path(__file__).parents[2] / "examples" / "tenant.yaml"  # its brain sections
TENANT = """
tenant: {slug: acme, name: Acme, timezone: Europe/Madrid}
bots: [{slug: shop, name: Shop, welcome_text: "Hello {name}!", echo: true}, {slug: plain, name: Plain}]
channels: [{slug: tg, type: telegram, bot: shop, secrets: {bot_token: "x"}},
           {slug: tg2, type: telegram, bot: plain, secrets: {bot_token: "y"}}]
"""
TID = tenant_id("acme")
SHOP = bot_id(TID, "shop")
IN_HOURS = datetime(2026, 1, 14, 10, 30, tzinfo=ZoneInfo("Europe/Madrid")).timestamp()  # a Wednesday


@pytest.fixture
async def shop_api(aiohttp_server: Any) -> str:
    async def order(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer tok-123"
        return web.json_response({"status": "shipped", "eta": "Friday", "key": request.headers["Idempotency-Key"]})

    app = web.Application()
    app.router.add_get("/api/orders/{n}", order)
    return str((await aiohttp_server(app)).make_url("")) + "/api/orders/{{number}}"


@pytest.fixture
def section(shop_api: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("SHOP_API_TOKEN", "tok-123")
    data = {
        k: v
        for k, v in yaml.safe_load(
            expand_env(EXAMPLE.read_text(), TenantEnvironment.allowing("SHOP_API_TOKEN"))
        ).items()
        if k in BRAIN_SECTIONS
    }
    data["tools"][0]["url"] = shop_api
    return data


@pytest.fixture
async def tenant(pool: asyncpg.Pool, vault: Vault, section: dict[str, Any]) -> dict[str, Any]:
    await load_bundle(pool, vault, parse_bundle(TENANT))
    async with pool.acquire() as conn:
        await save_definitions(
            conn, TID, section, {"shop": SHOP}, known_channels={"tg": channel_id(TID, "tg")}, vault=vault
        )
    return section


@pytest.fixture
async def brain(pool: asyncpg.Pool, settings: Settings, tenant: Any) -> AsyncIterator[Brain]:
    async with egress.session(EgressPolicy.parse("127.0.0.1", ""), 30) as http:
        b = Brain(pool, http, settings)
        await b.start()
        yield b
        await b.stop()


class Chat:
    def __init__(self, brain: Brain, channel: str = "tg", key: str = "chat-1") -> None:
        cid = channel_id(TID, channel)
        self.brain = brain
        self.conv = Conversation(str(stable_id("conv", key)), TID, cid, "contact-" + key, key)
        self.contact = Contact("contact-" + key, TID, cid, "u-" + key, name="Ana")
        self.n = 0

    async def send(self, text: str | None = None, payload: str | None = None, at: float = IN_HOURS) -> list[str]:
        self.n += 1
        event = InboundEvent(
            self.conv.channel_id, TID, ChannelType.TELEGRAM, f"{self.conv.key}-{self.n}", self.conv.key,
            self.contact.key, MessageType.BUTTON if payload else MessageType.TEXT, at, text=text, payload=payload,
        )  # fmt: skip
        self.outcome = await self.brain.respond(event, self.conv, self.contact)
        self.conv.is_new = False
        return [r.text for r in self.outcome.replies]


async def test_save_is_idempotent_and_versions_flows(
    pool: asyncpg.Pool, settings: Settings, vault: Vault, tenant: dict[str, Any]
) -> None:
    count = (
        "SELECT (SELECT count(*) FROM routing_rules), (SELECT count(*) FROM bot_flows), (SELECT count(*) FROM tools)"
    )
    before = await pool.fetchrow(count)
    assert tuple(before) == (4, 3, 1)  # the example's flows: main, orders, cart_help
    async with pool.acquire() as conn:
        listener = await asyncpg.connect(settings.database_url)
        notes: list[str] = []
        await listener.add_listener("engine_definitions", lambda *a: notes.append(a[3]))
        await save_definitions(conn, TID, tenant, {"shop": SHOP}, vault=vault)  # the same file again
        await asyncio.sleep(0.2)
        assert notes == []  # nothing changed, so no worker reloads
        edited = copy.deepcopy(tenant)
        edited["flows"][1]["nodes"][2]["text"] = "Your order {{order}} is {{result.status}}."
        edited["rules"] = edited["rules"][1:]
        await save_definitions(conn, TID, edited, {"shop": SHOP}, vault=vault)
        await asyncio.sleep(0.2)
        assert notes and set(notes) == {TID}
        await listener.close()
    versions = await pool.fetch("SELECT slug, version FROM bot_flows ORDER BY slug, version")
    assert [(r["slug"], r["version"]) for r in versions] == [
        ("cart_help", 1),
        ("main", 1),
        ("orders", 1),
        ("orders", 2),
    ]
    assert await pool.fetchval("SELECT count(*) FROM routing_rules") == 3
    default = await pool.fetchval("SELECT default_flow_id::text FROM bots WHERE id = $1", SHOP)
    assert default == str(stable_id(TID, "flow", SHOP, "main"))
    secrets = await pool.fetchval("SELECT secrets FROM tools")
    assert vault.decrypt(secrets) == {"api_token": "tok-123"}


async def test_invalid_section_writes_nothing(pool: asyncpg.Pool, vault: Vault, tenant: dict[str, Any]) -> None:
    bad = copy.deepcopy(tenant)
    bad["rules"][0]["conditions"] = {"regex": "("}
    bad["documents"][0]["language"] = "klingon"
    with pytest.raises(DefinitionError) as err:
        async with pool.acquire() as conn:
            await save_definitions(conn, TID, bad, {"shop": SHOP}, vault=vault)
    assert err.value.problems[0].startswith("rules[0].conditions.regex: invalid regex")
    bad["rules"][0]["conditions"] = None
    with pytest.raises(DefinitionError, match=r"documents\[0\].language: unknown text search configuration"):
        async with pool.acquire() as conn:
            await save_definitions(conn, TID, bad, {"shop": SHOP}, vault=vault)


async def test_kb_search_and_memory(pool: asyncpg.Pool, tenant: Any) -> None:
    hits = await knowledge.search_documents(pool, TID, SHOP, "how long does express delivery take?")
    assert hits[0]["slug"] == "shipping-policy"
    assert "delivery" in hits[0]["snippet"].lower()
    assert await knowledge.search_documents(pool, TID, SHOP, "the and of") == []
    async with egress.session(EgressPolicy.parse("127.0.0.1", ""), 30) as http:
        box = Toolbox(pool, http, {})
        ctx = CallContext(TID, SHOP, "conv-1", "contact-1", "k1")
        run, value = await box.call("memory_set", {"key": "size", "value": {"shoe": 38}}, ctx)
        assert run.status == "ok"
        _, value = await box.call("memory_get", {"key": "size"}, ctx)
        assert value == {"shoe": 38}
        _, value = await box.call("memory_get", {"key": "size", "scope": "bot"}, ctx)
        assert value is None
        run, _ = await box.call("memory_get", {}, ctx)
        assert (run.status, run.error) == ("error", "ToolError: a memory needs a key")
        run, hits = await box.call("kb_search", {"query": "warranty repair"}, ctx)
        assert run.status == "ok"
        assert hits[0]["slug"] == "warranty"


async def test_shop_conversation_end_to_end(brain: Brain, pool: asyncpg.Pool) -> None:
    chat = Chat(brain)
    replies = await chat.send("hello")
    assert replies == ["Hi Ana! Welcome to the shop.", "What can I do for you?"]
    assert [b.id for b in chat.outcome.replies[1].buttons] == ["orders", "faq", "agent"]
    assert await chat.send(payload="orders") == ["What's your order number? (5 digits, e.g. 12345)"]
    assert await chat.send("my order is ABC") == [
        "That doesn't look like an order number: it has 5 digits, e.g. 12345."
    ]
    assert await chat.send("#12345") == ["Order #12345: shipped (estimated delivery Friday)."]
    run = chat.outcome.tool_runs[0]
    assert (run.tool_name, run.status, run.attempts, run.conversation_id) == ("order_status", "ok", 1, chat.conv.id)
    assert run.response["body"]["key"] == run.idempotency_key  # type: ignore[index]
    assert "tok-123" not in str(run.request)
    assert chat.conv.flow_id is None
    assert await chat.send("how long does shipping take?") == ["Hi Ana! Welcome to the shop.", "What can I do for you?"]
    assert await chat.send("what is your delivery time?") == [
        "Orders ship within 24 hours and arrive in 2-4 business days."
    ]
    assert await chat.send("I want an AGENT") == ["Connecting you with an agent, Ana. They'll reply here shortly."]
    assert chat.conv.status == "human"
    assert "queue:support" in chat.conv.tags
    assert await chat.send("hello?") == []  # silent while a human has it
    chat.conv.status = "bot"  # handed back
    assert await chat.send("order please") == ["What's your order number? (5 digits, e.g. 12345)"]


async def test_after_hours_and_fallback_greeting(brain: Brain) -> None:
    saturday = datetime(2026, 1, 17, 12, 0, tzinfo=ZoneInfo("Europe/Madrid")).timestamp()
    chat = Chat(brain, key="chat-2")
    replies = await chat.send("agent", at=saturday)
    assert replies[0].startswith("Our team is available Monday to Friday")
    assert chat.conv.status == "bot"
    assert "after-hours-agent" in chat.conv.tags
    plain = Chat(brain, channel="tg2", key="chat-3")  # a bot without flows: the spine's greeting
    assert await plain.send("hey") == ["Hello Ana! You said: hey"]


async def test_notify_reloads_the_tenant_and_running_conversations_keep_their_version(
    brain: Brain, pool: asyncpg.Pool, vault: Vault, tenant: dict[str, Any]
) -> None:
    chat = Chat(brain, key="chat-4")
    await chat.send("where is my order")
    assert chat.conv.flow_version == 1
    before = brain.tenants[TID].version
    edited = copy.deepcopy(tenant)
    edited["flows"][1]["nodes"][2]["text"] = "v2: {{order}} is {{result.status}}"
    edited["rules"][3]["conditions"]["all"][1]["any"][0]["contains"].append("parcel")
    async with pool.acquire() as conn:
        await save_definitions(conn, TID, edited, {"shop": SHOP}, vault=vault)
    for _ in range(100):  # within a second
        if brain.tenants[TID].version != before:
            break
        await asyncio.sleep(0.01)
    assert brain.tenants[TID].version != before
    assert await chat.send("12345") == ["Order 12345: shipped (estimated delivery Friday)."]  # still v1
    fresh = Chat(brain, key="chat-5")
    await fresh.send("my parcel")  # the edited rule
    assert fresh.conv.flow_version == 2
    assert await fresh.send("54321") == ["v2: 54321 is shipped"]


async def test_a_new_brain_fetches_an_old_flow_version(
    pool: asyncpg.Pool, settings: Settings, vault: Vault, tenant: dict[str, Any]
) -> None:
    async with egress.session(EgressPolicy.parse("127.0.0.1", ""), 30) as http:
        first = Brain(pool, http, settings)
        await first.start()
        chat = Chat(first, key="chat-6")
        await chat.send("order")
        await first.stop()
        edited = copy.deepcopy(tenant)
        edited["flows"][1]["nodes"][2]["text"] = "v2"
        async with pool.acquire() as conn:
            await save_definitions(conn, TID, edited, {"shop": SHOP}, vault=vault)
        second = Brain(pool, http, settings)  # a restarted worker: only the latest versions loaded
        await second.start()
        chat.brain = second
        assert await chat.send("12345") == ["Order 12345: shipped (estimated delivery Friday)."]
        await second.stop()
