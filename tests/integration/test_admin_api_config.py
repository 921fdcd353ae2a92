"""The tenant, bots, channels, rules, flows, tools, FAQs and documents through the admin API: happy
paths and their errors, with the tenant file's error paths, write-only secrets and the audit log."""

from __future__ import annotations

from typing import Any

import asyncpg

from engine.crypto import Vault
from engine.settings import Settings
from tests.integration.conftest import World

RULE = {"name": "greet", "priority": 5, "conditions": {"contains": ["hello"]}, "actions": [{"reply": {"text": "Hi"}}]}
FLOW = {
    "bot": "shop",
    "slug": "orders",
    "nodes": [
        {"id": "ask", "type": "ask", "prompt": "Order number?", "var": "order", "next": "done"},
        {"id": "done", "type": "end", "text": "Thanks {{order}}"},
    ],
}


async def _audit(pool: asyncpg.Pool, resource: str) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT action, actor FROM audit_logs WHERE resource = $1 ORDER BY created_at", resource)
    return [(r["action"], r["actor"]) for r in rows]


async def test_tenant_get_and_patch(world: World, pool: asyncpg.Pool) -> None:
    status, body, _ = await world.api.call("GET", "/tenant", world.a)
    assert (status, body["slug"], body["timezone"]) == (200, "acme", "Europe/Berlin")
    status, body, _ = await world.api.call("PATCH", "/tenant", world.a, {"timezone": "Mars/Base"})
    assert (status, body["errors"]) == (422, [{"path": "timezone", "message": "unknown time zone 'Mars/Base'"}])
    status, body, _ = await world.api.call("PATCH", "/tenant", world.a, {"name": "Acme Inc"})
    assert (status, body["name"], body["timezone"]) == (200, "Acme Inc", "Europe/Berlin")
    assert await pool.fetchval("SELECT name FROM organizations WHERE slug = 'globex'") == "Globex"
    assert (await _audit(pool, "tenant"))[0][0] == "update"


async def test_bots_crud(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    status, bots, _ = await api.call("GET", "/bots", a)
    assert (status, [b["slug"] for b in bots]) == (200, ["shop"])
    status, body, _ = await api.call("POST", "/bots", a, {"slug": "Bad Slug", "name": "x", "colour": 1})
    assert status == 422
    assert {e["path"] for e in body["errors"]} == {"bots[0].slug", "bots[0].colour"}
    status, bot, _ = await api.call("POST", "/bots", a, {"slug": "helper", "name": "Helper", "echo": False})
    assert (status, bot["echo"]) == (201, False)
    assert (await api.call("POST", "/bots", a, {"slug": "helper", "name": "Again"}))[0] == 409
    status, bot, _ = await api.call("PUT", f"/bots/{bot['id']}", a, {"slug": "helper", "name": "Helper 2"})
    assert (status, bot["name"]) == (200, "Helper 2")
    status, body, _ = await api.call("PUT", f"/bots/{bot['id']}", a, {"slug": "other", "name": "x"})
    assert (status, body["errors"][0]["path"]) == (422, "bots[0].slug")
    assert (await api.call("GET", f"/bots/{bot['id']}", a))[1]["name"] == "Helper 2"
    assert (await api.call("DELETE", f"/bots/{bot['id']}", a))[0] == 204
    assert (await api.call("GET", f"/bots/{bot['id']}", a))[0] == 404
    assert (await api.call("GET", "/bots/not-a-uuid", a))[0] == 404
    assert [x[0] for x in await _audit(pool, "bots")] == ["create", "update", "delete"]


async def test_channel_secrets_are_write_only(world: World, pool: asyncpg.Pool, settings: Settings) -> None:
    api, a = world.api, world.a
    status, channels, _ = await api.call("GET", "/channels", a)
    assert status == 200
    (tg,) = channels
    assert tg["secret_names"] == ["bot_token", "secret_token"]
    assert tg["webhook_url"].endswith(f"/webhooks/telegram/{world.channels['acme']}")
    new = {"slug": "wa", "type": "whatsapp", "bot": "shop", "external_id": "555",
           "secrets": {"access_token": "wa-access-SECRET", "app_secret": "app-SECRET", "verify_token": "v-SECRET"}}  # fmt: skip
    status, channel, _ = await api.call("POST", "/channels", a, new)
    assert status == 201
    assert "SECRET" not in str(channel)
    assert channel["secret_names"] == ["access_token", "app_secret", "verify_token"]
    status, body, _ = await api.call("POST", "/channels", a, {**new, "slug": "wa2", "bot": "nobot"})
    assert (status, body["errors"][0]["path"]) == (422, "channels[0].bot")
    assert body["errors"][0]["message"].startswith("unknown bot 'nobot'")
    status, body, _ = await api.call("POST", "/channels", a, {**new, "slug": "wa3", "secrets": {"x": "env:HOME"}})
    assert (status, body["errors"][0]["path"]) == (422, "channels[0].secrets.x")
    # A PUT with one secret replaces that one and keeps the others.
    status, channel, _ = await api.call("PUT", f"/channels/{channel['id']}", a,
                                        {**new, "active": False, "secrets": {"access_token": "rotated-SECRET"}})  # fmt: skip
    assert (status, channel["active"], channel["secret_names"]) == (200, False, sorted(new["secrets"]))
    vault = Vault(settings.master_key)
    stored = vault.decrypt(await pool.fetchval("SELECT credentials FROM channels WHERE slug = 'wa'"))
    assert stored == {**new["secrets"], "access_token": "rotated-SECRET"}  # type: ignore[dict-item]
    audit = " ".join(str(dict(r)) for r in await pool.fetch("SELECT * FROM audit_logs"))
    assert "SECRET" not in audit
    assert (await api.call("DELETE", f"/channels/{channel['id']}", a))[0] == 204


async def test_rules_with_tenant_file_error_paths(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    status, rule, _ = await api.call("POST", "/rules", a, RULE)
    assert (status, rule["priority"], rule["conditions"]) == (201, 5, {"contains": ["hello"]})
    bad = {**RULE, "name": "bad", "conditions": {"all": [{"contains": ["x"]}, {"regex": "("}]},
           "actions": [{"start_flow": {"bot": "shop", "flow": "nope"}}]}  # fmt: skip
    status, body, _ = await api.call("POST", "/rules", a, bad)
    assert status == 422
    assert body["errors"][0]["path"] == "rules[0].conditions.all[1].regex"
    assert body["errors"][0]["message"].startswith("invalid regex '('")
    status, body, _ = await api.call("POST", "/rules", a, {**bad, "conditions": None})
    assert body["errors"] == [
        {"path": "rules[0].actions[0].start_flow.flow", "message": "bot 'shop' has no flow 'nope'"}
    ]
    status, rule, _ = await api.call("PUT", f"/rules/{rule['id']}", a, {**RULE, "priority": 7})
    assert (status, rule["priority"]) == (200, 7)
    assert [r["name"] for r in (await api.call("GET", "/rules", a))[1]] == ["agent", "greet"]
    assert (await api.call("DELETE", f"/rules/{rule['id']}", a))[0] == 204
    assert (await api.call("DELETE", f"/rules/{rule['id']}", a))[0] == 404


async def test_flows_are_versioned_and_validated(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    bad = {**FLOW, "nodes": [{"id": "ask", "type": "ask", "prompt": "x", "var": "order", "next": "x"}]}
    status, body, _ = await api.call("POST", "/flows/validate", a, bad)
    assert (status, body["valid"]) == (200, False)
    assert body["errors"] == [{"path": "flows[0].nodes[ask].next", "message": "no node 'x'"}]
    status, body, _ = await api.call("POST", "/flows", a, bad)
    assert (status, body["errors"][0]["path"]) == (422, "flows[0].nodes[ask].next")
    assert await pool.fetchval("SELECT count(*) FROM bot_flows WHERE slug = 'orders'") == 0
    assert (await api.call("POST", "/flows/validate", a, FLOW))[1] == {"valid": True, "errors": [], "warnings": []}

    status, flow, _ = await api.call("POST", "/flows", a, FLOW)
    assert (status, flow["version"], flow["default"]) == (201, 1, False)
    assert (await api.call("PUT", f"/flows/{flow['id']}", a, FLOW))[1]["version"] == 1  # unchanged: same version
    changed = {**FLOW, "nodes": [FLOW["nodes"][0], {"id": "done", "type": "end", "text": "Got it"}]}
    status, flow2, _ = await api.call("PUT", f"/flows/{flow['id']}", a, changed)
    assert (status, flow2["version"], flow2["id"]) == (200, 2, flow["id"])
    status, versions, _ = await api.call("GET", f"/flows/{flow['id']}/versions", a)
    assert [v["version"] for v in versions] == [2, 1]
    old = (await api.call("GET", f"/flows/{flow['id']}/versions/1", a))[1]
    assert old["definition"]["nodes"][1]["text"] == "Thanks {{order}}"
    assert (await api.call("GET", f"/flows/{flow['id']}/versions/9", a))[0] == 404
    assert (await api.call("POST", "/flows", a, FLOW))[0] == 409
    status, body, _ = await api.call("PUT", f"/flows/{flow['id']}", a, {**FLOW, "slug": "renamed"})
    assert (status, body["errors"][0]["path"]) == (422, "flows[0].slug")
    # default: true makes it the bot's default flow, and takes it from the previous one
    status, flow3, _ = await api.call("PUT", f"/flows/{flow['id']}", a, {**changed, "default": True})
    assert (status, flow3["default"], flow3["version"]) == (200, True, 3)
    defaults = {f["slug"]: f["default"] for f in (await api.call("GET", "/flows", a))[1]}
    assert defaults == {"main": False, "orders": True}
    assert [x[0] for x in await _audit(pool, "flows")] == ["create", "update", "update", "update"]
    after = await pool.fetchval(
        "SELECT after FROM audit_logs WHERE resource = 'flows' ORDER BY created_at DESC LIMIT 1"
    )
    assert after == {"id": flow["id"], "version": 3}


async def test_tools_faqs_documents(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    (tool,) = (await api.call("GET", "/tools", a))[1]
    assert (tool["slug"], tool["secret_names"]) == ("lookup", ["key"])
    assert "tool-secret-value" not in str(tool)
    # Secrets are write-only: a PUT without them keeps them; env: references are refused.
    status, tool2, _ = await api.call("PUT", f"/tools/{tool['id']}", a,
                                      {"slug": "lookup", "url": "https://example.com/v2/{{secret.key}}"})  # fmt: skip
    assert (status, tool2["config"]["url"], tool2["secret_names"]) == (
        200,
        "https://example.com/v2/{{secret.key}}",
        ["key"],
    )
    status, body, _ = await api.call("POST", "/tools", a, {"slug": "t2", "url": "https://x.example/{{secret.k}}",
                                                            "secrets": {"k": "env:ENGINE_MASTER_KEY"}})  # fmt: skip
    assert (status, body["errors"][0]["path"]) == (422, "tools[0].secrets.k")
    status, body, _ = await api.call("POST", "/tools", a, {"slug": "t3", "url": "ftp://x"})
    assert (status, body["errors"][0]["path"]) == (422, "tools[0].url")
    assert (await api.call("DELETE", f"/tools/{tool['id']}", a))[0] == 204

    status, faq, _ = await api.call("POST", "/faqs", a, {"bot": "shop", "question": "Do you ship?", "answer": "Yes"})
    assert status == 201
    status, body, _ = await api.call("POST", "/faqs", a, {"bot": "nobody", "question": "q", "answer": "a"})
    assert body["errors"] == [{"path": "faqs[0].bot", "message": "unknown bot 'nobody'"}]
    status, faq, _ = await api.call("PUT", f"/faqs/{faq['id']}", a, {"bot": "shop", "question": "Do you ship?",
                                                                      "answer": "Worldwide", "keywords": ["ship"]})  # fmt: skip
    assert (status, faq["answer"], faq["keywords"]) == (200, "Worldwide", ["ship"])
    assert len((await api.call("GET", "/faqs", a))[1]) == 2
    assert (await api.call("DELETE", f"/faqs/{faq['id']}", a))[0] == 204

    doc = {"bot": "shop", "slug": "shipping", "title": "Shipping", "body": "We ship everywhere."}
    status, created, _ = await api.call("POST", "/documents", a, doc)
    assert (status, created["language"]) == (201, "english")
    status, body, _ = await api.call("POST", "/documents", a, {**doc, "slug": "x", "language": "klingon"})
    assert body["errors"][0] == {"path": "documents[0].language",
                                 "message": "unknown text search configuration 'klingon'"}  # fmt: skip
    status, updated, _ = await api.call("PUT", f"/documents/{created['id']}", a, {**doc, "body": "Not to Mars."})
    assert (status, updated["body"]) == (200, "Not to Mars.")
    assert (await api.call("GET", f"/documents/{created['id']}", a))[1]["body"] == "Not to Mars."
    assert (await api.call("DELETE", f"/documents/{created['id']}", a))[0] == 204
    rows: list[Any] = await pool.fetch("SELECT resource, action FROM audit_logs ORDER BY created_at")
    assert [(r["resource"], r["action"]) for r in rows] == [
        ("tools", "update"), ("tools", "delete"), ("faqs", "create"), ("faqs", "update"), ("faqs", "delete"),
        ("documents", "create"), ("documents", "update"), ("documents", "delete"),
    ]  # fmt: skip
