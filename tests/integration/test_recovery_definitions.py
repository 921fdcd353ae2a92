"""Campaigns, templates and recovery settings through the tenant file: rejected with the path of each
bad field before anything is written; loading twice changes nothing; a campaign left out is archived;
signing keys are stored encrypted."""

from __future__ import annotations

import asyncpg
import pytest

from engine.admin.tenant_file import BundleError, load_bundle, parse_bundle
from engine.crypto import Vault
from tests.harness import count
from tests.recovery_harness import SIGNING_KEY, bundle


async def test_bad_campaign_is_rejected_with_its_path(pool: asyncpg.Pool, vault: Vault) -> None:
    text = bundle().replace("node: choice", "node: answer").replace("template: cart_reminder\n", "template: nope\n")
    with pytest.raises(BundleError) as info:
        await load_bundle(pool, vault, parse_bundle(text))
    message = str(info.value)
    assert "campaigns[0].steps[0].reply_flow.node: node 'answer' is a message node" in message
    assert "campaigns[0].steps[0].template: unknown template 'nope'" in message
    assert await count(pool, "SELECT count(*) FROM organizations") == 0  # nothing written
    with pytest.raises(BundleError, match=r"campaigns\[0\]\.steps\[1\]\.delay: expected a duration"):
        await load_bundle(pool, vault, parse_bundle(bundle(delay1="tomorrow")))


async def test_load_is_idempotent_and_archives_removed_campaigns(pool: asyncpg.Pool, vault: Vault) -> None:
    await load_bundle(pool, vault, parse_bundle(bundle()))
    before = await pool.fetch("SELECT id, updated_at FROM recovery_campaigns UNION ALL "
                              "SELECT id, updated_at FROM channel_templates ORDER BY 1")  # fmt: skip
    await load_bundle(pool, vault, parse_bundle(bundle()), update=True)
    after = await pool.fetch("SELECT id, updated_at FROM recovery_campaigns UNION ALL "
                             "SELECT id, updated_at FROM channel_templates ORDER BY 1")  # fmt: skip
    assert before == after and len(after) == 2
    secrets = await pool.fetchval("SELECT secrets FROM recovery_settings")
    assert SIGNING_KEY.encode() not in bytes(secrets)
    assert vault.decrypt(secrets)["signing_key"] == SIGNING_KEY
    stop_words = await pool.fetchval("SELECT stop_words FROM recovery_settings")
    assert {"stop", "baja", "unsubscribe"} <= set(stop_words)

    text = bundle().replace("campaigns:\n  - slug: cart", "campaigns:\n  - slug: cart2")
    await load_bundle(pool, vault, parse_bundle(text), update=True)
    rows = {r["slug"]: r["status"] for r in await pool.fetch("SELECT slug, status FROM recovery_campaigns")}
    assert rows == {"cart": "archived", "cart2": "active"}
