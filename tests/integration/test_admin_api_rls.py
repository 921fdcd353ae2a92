"""Row-level security on its own: queries without any tenant filter, run as the API's role, see only
the tenant set for the transaction (and nothing when none is set), and cannot write another
tenant's rows. The role cannot bypass RLS and owns no table."""

from __future__ import annotations

import asyncpg
import pytest

from engine.admin.api.context import API_ROLE, tenant_transaction
from engine.models import stable_id
from engine.settings import Settings
from tests.api_helpers import seed_conversation, seed_recovery, tenant_file
from tests.harness import load_tenant

TENANT_TABLES = [
    "organizations", "bots", "bot_configuration", "channels", "channel_contacts", "conversations", "message_history",
    "channel_messages", "routing_rules", "bot_flows", "tools", "tool_executions", "faqs", "kb_documents", "audit_logs",
    # recovery campaigns (sql/0007; their policies: sql/0009)
    "recovery_settings", "channel_templates", "recovery_campaigns", "recovery_events", "recovery_deliveries",
    "recovery_messages", "contact_preferences", "recovery_analytics",
]  # fmt: skip
# Tenant tables with no grant to the API role at all (RLS is the second wall should one be added).
NOT_GRANTED = ("recovery_settings", "recovery_deliveries")


@pytest.fixture
async def two_tenants(settings: Settings, pool: asyncpg.Pool) -> tuple[str, str]:
    for slug in ("acme", "globex"):
        await load_tenant(settings, tenant_file(slug))
        await seed_conversation(pool, slug, "101")
        await seed_recovery(pool, slug, "101")
    return str(stable_id("tenant", "acme")), str(stable_id("tenant", "globex"))


async def test_the_api_role_cannot_bypass_rls_and_owns_nothing(pool: asyncpg.Pool) -> None:
    role = await pool.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", API_ROLE)
    assert (role["rolsuper"], role["rolbypassrls"]) == (False, False)
    owned = await pool.fetchval("SELECT count(*) FROM pg_tables WHERE tableowner = $1", API_ROLE)
    assert owned == 0
    missing = await pool.fetch(
        "SELECT relname FROM pg_class WHERE relname = any($1::text[]) AND NOT relrowsecurity", TENANT_TABLES
    )
    assert missing == []


async def test_unfiltered_queries_see_only_the_transactions_tenant(
    pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    acme, globex = two_tenants
    everything = {t: await pool.fetchval(f"SELECT count(DISTINCT tenant_id) FROM {t}") for t in TENANT_TABLES[1:]}
    for table, tenants in everything.items():  # the owner (the workers' role) sees both tenants
        assert tenants == (2 if table not in ("channel_messages", "tool_executions", "audit_logs") else 0), table
    for tenant in (acme, globex):
        async with tenant_transaction(pool, tenant) as conn:
            assert await conn.fetchval("SELECT current_user") == API_ROLE
            assert [r["id"] for r in await conn.fetch("SELECT id::text FROM organizations")] == [tenant]
            for table in TENANT_TABLES[1:]:
                if table in NOT_GRANTED:
                    continue
                seen = {r["tenant_id"] for r in await conn.fetch(f"SELECT DISTINCT tenant_id::text FROM {table}")}
                assert seen <= {tenant}, table
            assert await conn.fetchval("SELECT count(*) FROM message_history") == 3
            for table in (
                "recovery_campaigns",
                "recovery_events",
                "recovery_messages",
                "contact_preferences",
                "recovery_analytics",
                "channel_templates",
            ):  # the tenant's own rows are there
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1, table
    async with tenant_transaction(pool, None) as conn:  # no tenant set: no row at all
        for table in (t for t in TENANT_TABLES if t not in NOT_GRANTED):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_writes_to_another_tenant_are_refused_or_touch_nothing(
    pool: asyncpg.Pool, two_tenants: tuple[str, str]
) -> None:
    acme, globex = two_tenants
    async with tenant_transaction(pool, acme) as conn:
        assert await conn.execute("UPDATE bots SET name = 'pwned'") == "UPDATE 1"  # acme's only
        assert await conn.execute("DELETE FROM faqs WHERE tenant_id = $1", globex) == "DELETE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK
        async with tenant_transaction(pool, acme) as conn:
            await conn.execute(
                "INSERT INTO bots (id, tenant_id, slug, name) VALUES (gen_random_uuid(), $1, 'x', 'x')", globex
            )
    assert await pool.fetchval("SELECT count(*) FROM bots WHERE name = 'pwned'") == 1
    assert await pool.fetchval("SELECT name FROM bots WHERE tenant_id = $1", globex) == "Shop bot"
    async with tenant_transaction(pool, acme) as conn:  # the recovery tables too
        assert await conn.execute("UPDATE recovery_campaigns SET name = 'pwned'") == "UPDATE 1"
        assert await conn.execute("UPDATE contact_preferences SET marketing_opt_out = false") == "UPDATE 1"
        assert await conn.execute("DELETE FROM channel_templates WHERE tenant_id = $1", globex) == "DELETE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK
        async with tenant_transaction(pool, acme) as conn:
            await conn.execute(
                "INSERT INTO contact_preferences (contact_id, tenant_id, marketing_opt_out, source, changed_at) "
                "VALUES (gen_random_uuid(), $1, true, 'api', now())", globex,
            )  # fmt: skip
    assert await pool.fetchval("SELECT name FROM recovery_campaigns WHERE tenant_id = $1", globex) == "cart"
    assert await pool.fetchval("SELECT marketing_opt_out FROM contact_preferences WHERE tenant_id = $1", globex)
    for table in ("api_tokens", "inbound_events", "worker_leases", "shard_owners", *NOT_GRANTED):  # not the API's
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(pool, acme) as conn:
                await conn.fetchval(f"SELECT count(*) FROM {table}")
    # The tenant is per transaction: the same pooled connection carries nothing into the next one.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "postgres"
        assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") in (None, "")
