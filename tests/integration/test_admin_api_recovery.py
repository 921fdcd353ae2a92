"""Recovery campaigns and templates through the admin API: CRUD with the tenant file's validation and
error paths (`campaigns[0].steps[0].template`), identity rules (409, slug cannot change, 404), a
template a campaign needs cannot be deleted, archive instead of delete, and the analytics query."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.integration.conftest import World

TEMPLATE = {"name": "payment_notice", "language": "en_US", "category": "utility", "text": "Your payment failed.",
            "components": [{"type": "body", "parameters": ["{{contact.name | there}}"]}]}  # fmt: skip
CAMPAIGN = {"slug": "dunning", "type": "payment_failed", "category": "utility", "triggers": ["payment_failed"],
            "steps": [{"delay": "10m", "template": "payment_notice"}, {"delay": "1d", "text": "Still failing."}]}  # fmt: skip


def _paths(body: dict[str, Any]) -> set[str]:
    return {e["path"] for e in body["errors"]}


async def test_templates_crud_and_validation(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    status, templates, _ = await api.call("GET", "/templates", a)
    assert (status, [t["name"] for t in templates]) == (200, ["cart_reminder"])  # from the tenant file
    status, body, _ = await api.call("POST", "/templates", a, {**TEMPLATE, "name": "Bad Name", "category": "spam",
                                                               "components": [{"type": "button"}]})  # fmt: skip
    assert status == 422
    assert _paths(body) == {"templates[0].name", "templates[0].category", "templates[0].components[0]"}
    status, made, _ = await api.call("POST", "/templates", a, TEMPLATE)
    assert (status, made["category"], made["status"]) == (201, "utility", "approved")
    assert (await api.call("POST", "/templates", a, TEMPLATE))[0] == 409
    status, changed, _ = await api.call("PUT", f"/templates/{made['id']}", a, {**TEMPLATE, "text": "Payment failed."})
    assert (status, changed["id"], changed["text"]) == (200, made["id"], "Payment failed.")
    status, body, _ = await api.call("PUT", f"/templates/{made['id']}", a, {**TEMPLATE, "language": "es"})
    assert (status, _paths(body)) == (422, {"templates[0].language"})
    assert (await api.call("GET", f"/templates/{made['id']}", a))[1]["text"] == "Payment failed."
    assert await pool.fetchval("SELECT count(*) FROM channel_templates WHERE name = 'payment_notice'") == 1
    assert (await api.call("DELETE", f"/templates/{made['id']}", a))[0] == 204
    assert (await api.call("GET", f"/templates/{made['id']}", a))[0] == 404
    assert (await api.call("GET", "/templates/not-a-uuid", a))[0] == 404
    rows = await pool.fetch("SELECT action FROM audit_logs WHERE resource = 'templates' ORDER BY created_at")
    assert [r["action"] for r in rows] == ["create", "update", "delete"]


async def test_campaigns_crud_and_validation(world: World, pool: asyncpg.Pool) -> None:
    api, a = world.api, world.a
    status, campaigns, _ = await api.call("GET", "/campaigns", a)
    assert (status, [c["slug"] for c in campaigns]) == (200, ["cart"])
    # The tenant file's checks and paths: the model's, then the references (templates, flows).
    status, body, _ = await api.call("POST", "/campaigns", a, {**CAMPAIGN, "triggers": ["nope"],
                                                               "steps": [{"delay": "soon", "text": "x"}]})  # fmt: skip
    assert (status, _paths(body)) == (422, {"campaigns[0].triggers[0]", "campaigns[0].steps[0].delay"})
    status, body, _ = await api.call("POST", "/campaigns", a, CAMPAIGN)
    assert (status, _paths(body)) == (422, {"campaigns[0].steps[0].template"})
    assert body["errors"][0]["message"].startswith("unknown template 'payment_notice'")
    flow = {"bot": "shop", "flow": "main", "node": "greet"}
    bad = {**CAMPAIGN, "steps": [{"delay": "1m", "text": "x", "reply_flow": flow}]}
    status, body, _ = await api.call("POST", "/campaigns", a, bad)
    assert (status, _paths(body)) == (422, {"campaigns[0].steps[0].reply_flow.node"})
    assert await pool.fetchval("SELECT count(*) FROM recovery_campaigns WHERE slug = 'dunning'") == 0

    assert (await api.call("POST", "/templates", a, TEMPLATE))[0] == 201
    status, made, _ = await api.call("POST", "/campaigns", a, CAMPAIGN)
    assert status == 201
    assert (made["type"], made["category"], made["status"], made["triggers"]) == (
        "payment_failed", "utility", "active", ["payment_failed"])  # fmt: skip
    assert [s["delay"] for s in made["definition"]["steps"]] == [600.0, 86400.0]
    assert (await api.call("POST", "/campaigns", a, CAMPAIGN))[0] == 409
    status, changed, _ = await api.call("PUT", f"/campaigns/{made['id']}", a, {**CAMPAIGN, "status": "paused"})
    assert (status, changed["id"], changed["status"]) == (200, made["id"], "paused")
    status, body, _ = await api.call("PUT", f"/campaigns/{made['id']}", a, {**CAMPAIGN, "slug": "other"})
    assert (status, _paths(body)) == (422, {"campaigns[0].slug"})
    status, body, _ = await api.call("PUT", f"/campaigns/{made['id']}", a, {**CAMPAIGN, "max_messages": 99})
    assert (status, _paths(body)) == (422, {"campaigns[0].max_messages"})
    assert (await api.call("GET", f"/campaigns/{made['id']}", a))[1]["status"] == "paused"

    # A template an active campaign needs cannot go; once the campaign is archived it can.
    (template,) = [t for t in (await api.call("GET", "/templates", a))[1] if t["name"] == "payment_notice"]
    status, body, _ = await api.call("DELETE", f"/templates/{template['id']}", a)
    assert (status, body["error"]) == (409, "in_use")
    assert (await api.call("DELETE", f"/campaigns/{made['id']}", a))[0] == 204  # archived: history stays
    assert (await api.call("GET", f"/campaigns/{made['id']}", a))[1]["status"] == "archived"
    assert (await api.call("DELETE", f"/templates/{template['id']}", a))[0] == 204
    assert (await api.call("DELETE", f"/campaigns/{made['id']}x", a))[0] == 404
    rows = await pool.fetch("SELECT action FROM audit_logs WHERE resource = 'campaigns' ORDER BY created_at")
    assert [r["action"] for r in rows] == ["create", "update", "archive"]


async def test_campaign_analytics_query(world: World) -> None:
    api, a = world.api, world.a
    (cart,) = (await api.call("GET", "/campaigns", a))[1]
    status, body, _ = await api.call("GET", f"/campaigns/{cart['id']}/analytics?since=2026-01-01", a)
    assert (status, body["slug"], body["since"], body["days"]) == (200, "cart", "2026-01-01", [])
    assert body["totals"]["events"] == 0 and body["totals"]["conversion_rate"] == 0.0
    assert (await api.call("GET", f"/campaigns/{cart['id']}/analytics?since=7d", a))[0] == 200
    status, body, _ = await api.call("GET", f"/campaigns/{cart['id']}/analytics?since=yesterday", a)
    assert (status, _paths(body)) == (422, {"query.since"})
    assert body["errors"][0]["message"] == "expected YYYY-MM-DD or Nd (N days ago), got 'yesterday'"
    status, body, _ = await api.call("GET", f"/campaigns/{cart['id']}/analytics?until=x", a)
    assert (status, _paths(body)) == (422, {"query.until"})
