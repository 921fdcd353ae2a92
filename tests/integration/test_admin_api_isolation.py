"""The isolation matrix, generated from the OpenAPI document: with tenant A's token (every scope),
every operation whose path takes an id is called with tenant B's ids. Each must answer 404 and
change nothing of B's (rows, queued commands, dead letters)."""

from __future__ import annotations

from typing import Any

import asyncpg

from engine.admin.api import openapi
from engine.admin.api.app import ROUTES
from engine.settings import Settings
from tests.api_helpers import seed_conversation, seed_recovery
from tests.harness import queued_inbound
from tests.integration.conftest import World
from tests.integration.test_admin_api_conversations import _dead_letter

B_TABLES = ["organizations", "bots", "bot_configuration", "channels", "channel_contacts", "conversations",
            "message_history", "routing_rules", "bot_flows", "tools", "faqs", "kb_documents", "audit_logs",
            "recovery_campaigns", "channel_templates", "recovery_analytics", "contact_preferences"]  # fmt: skip
# Bodies that pass validation, so that only the id can make the call fail.
BODIES: dict[str, Any] = {"AgentReplyIn": {"text": "hello"}, "ContactPatch": {"tags": ["x"], "opted_out": True}}


async def _snapshot(pool: asyncpg.Pool, tenant: str) -> dict[str, list[str]]:
    out = {}
    for table in B_TABLES:
        column = "id" if table == "organizations" else "tenant_id"
        rows = await pool.fetch(f"SELECT to_jsonb(t)::text AS row FROM {table} t WHERE {column} = $1", tenant)
        out[table] = sorted(r["row"] for r in rows)
    return out


async def _ids_of(pool: asyncpg.Pool, world: World, tenant: str) -> dict[str, str]:
    one = "SELECT id::text FROM {} WHERE tenant_id = $1 LIMIT 1"
    ids = {
        kind: await pool.fetchval(one.format(table), tenant)
        for kind, table in (("bots", "bots"), ("channels", "channels"), ("rules", "routing_rules"),
                            ("flows", "bot_flows"), ("tools", "tools"), ("faqs", "faqs"), ("documents", "kb_documents"),
                            ("conversations", "conversations"), ("contacts", "channel_contacts"),
                            ("campaigns", "recovery_campaigns"), ("templates", "channel_templates"))
    }  # fmt: skip
    (letter,) = (await world.api.call("GET", "/dead-letters", world.b))[1]["items"]
    ids["dead-letters"] = letter["id"]
    return ids


async def test_tenant_a_cannot_reach_tenant_b_by_id(world: World, pool: asyncpg.Pool, settings: Settings) -> None:
    tenants = {r["slug"]: str(r["id"]) for r in await pool.fetch("SELECT slug, id FROM organizations")}
    b = tenants["globex"]
    await seed_conversation(pool, "globex", "900", "human")
    await seed_conversation(pool, "acme", "900", "human")
    await seed_recovery(pool, "globex", "900")  # B's funnel rows and opt-out, which A's calls must not touch
    await _dead_letter(settings, b, world.channels["globex"], "poison")
    ids = await _ids_of(pool, world, b)
    assert all(ids.values()), ids
    before, queued = await _snapshot(pool, b), await queued_inbound(settings)

    doc = openapi.document(ROUTES)
    tried = []
    for path, operations in doc["paths"].items():
        if "{id}" not in path:
            continue
        kind = path.split("/")[1]
        for method, op in operations.items():
            url = path.replace("{id}", ids[kind]).replace("{version}", "1")
            body = None
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                body = BODIES.get(ref, {})
            status, answer, _ = await world.api.call(method.upper(), url, world.a, body)
            assert status == 404, (method, path, status, answer)
            assert answer["error"] == "not_found", (method, path, answer)
            tried.append((method, path))
    # Every operation on an id was tried (the matrix grows with the route table).
    assert len(tried) == sum(1 for r in ROUTES if "{id}" in r.path) >= 25
    assert await _snapshot(pool, b) == before
    assert await queued_inbound(settings) == queued  # no command reached B's conversations
    assert len((await world.api.call("GET", "/dead-letters", world.b))[1]["items"]) == 1
    # ... and B's own token reaches the same ids (the 404s were the tenant, not the ids).
    for kind in (
        "bots",
        "channels",
        "rules",
        "flows",
        "tools",
        "faqs",
        "documents",
        "conversations",
        "contacts",
        "campaigns",
        "templates",
    ):
        assert (await world.api.call("GET", f"/{kind}/{ids[kind]}", world.b))[0] == 200, kind
