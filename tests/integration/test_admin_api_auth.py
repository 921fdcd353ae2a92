"""Tokens and the limits in front of every admin API call: 401 for a missing, unknown, revoked or
expired token, 403 for a missing scope, 429 with Retry-After, 413, and tokens stored hashed only."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from engine.admin import tokens
from engine.settings import Settings
from tests.api_helpers import make_token
from tests.integration.conftest import World


async def test_missing_unknown_revoked_and_expired_tokens_are_401(world: World, pool: asyncpg.Pool) -> None:
    api = world.api
    assert (await api.call("GET", "/bots", None))[0] == 401
    assert (await api.call("GET", "/bots", "Basic abc"))[0] == 401
    assert (await api.call("GET", "/bots", tokens.generate()))[0] == 401  # well formed, never issued
    status, body, headers = await api.call("GET", "/bots", world.a[:-1] + "x")
    assert (status, body["error"], headers["WWW-Authenticate"]) == (401, "unauthorized", 'Bearer realm="engine"')
    assert (await api.call("GET", "/bots", world.a))[0] == 200

    prefix = world.a[: tokens.DISPLAY_CHARS]
    async with pool.acquire() as conn:
        assert len(await tokens.revoke(conn, prefix)) == 1
    status, body, _ = await api.call("GET", "/bots", world.a)
    assert (status, body["detail"]) == (401, "token revoked")

    expired = await make_token(pool, "acme", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, body, _ = await api.call("GET", "/bots", expired)
    assert (status, body["detail"]) == (401, "token expired")


async def test_a_missing_scope_is_403_and_changes_nothing(world: World, pool: asyncpg.Pool) -> None:
    reader = await make_token(pool, "acme", "read")
    agent = await make_token(pool, "acme", "agent")
    bots = await pool.fetchval("SELECT count(*) FROM bots")
    status, body, _ = await world.api.call("POST", "/bots", reader, {"slug": "new", "name": "New"})
    assert (status, body["error"]) == (403, "forbidden")
    assert await pool.fetchval("SELECT count(*) FROM bots") == bots
    assert (await world.api.call("GET", "/bots", agent))[0] == 403  # agent: conversations only
    assert (await world.api.call("GET", "/handoff-queue", agent))[0] == 200
    assert (await world.api.call("GET", "/handoff-queue", reader))[0] == 200
    conversation = "00000000-0000-0000-0000-000000000001"
    assert (await world.api.call("POST", f"/conversations/{conversation}/close", reader))[0] == 403


async def test_tokens_are_stored_as_sha256_only(world: World, pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT * FROM api_tokens")
    dumped = " ".join(str(dict(r)) for r in rows)
    for token in (world.a, world.b):
        assert token not in dumped
        assert token[len(tokens.TOKEN_PREFIX) : len(tokens.TOKEN_PREFIX) + 20] not in dumped
        digest = hashlib.sha256(token.encode()).digest()
        assert sum(bytes(r["token_hash"]) == digest for r in rows) == 1
    assert {r["prefix"] for r in rows} == {world.a[:12], world.b[:12]}
    assert all(r["last_used_at"] is None for r in rows)  # no call made yet
    await world.api.call("GET", "/tenant", world.a)
    assert await pool.fetchval("SELECT count(*) FROM api_tokens WHERE last_used_at IS NOT NULL") == 1


async def test_rate_limit_answers_429_with_retry_after(settings: Settings, pool: asyncpg.Pool) -> None:
    from tests.api_helpers import Api, tenant_file
    from tests.harness import load_tenant

    await load_tenant(settings, tenant_file("acme"))
    limited = settings.model_copy(update={"api_rate_limit": 0.5, "api_rate_burst": 3})
    import aiohttp
    from aiohttp import web

    from workers import serve

    runner = web.AppRunner(serve.build_app(limited))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token, other = await make_token(pool, "acme"), await make_token(pool, "acme")
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, f"http://127.0.0.1:{port}")
            statuses = [(await api.call("GET", "/tenant", token))[0] for _ in range(5)]
            assert statuses == [200, 200, 200, 429, 429]
            status, body, headers = await api.call("GET", "/tenant", token)
            assert (status, body["error"]) == (429, "rate_limited")
            assert 1 <= int(headers["Retry-After"]) <= 2
            assert (await api.call("GET", "/tenant", other))[0] == 200  # per token
    finally:
        await runner.cleanup()


async def test_bodies_over_the_limit_are_413_and_bad_json_400(world: World) -> None:
    big = orjson.dumps({"slug": "big", "name": "x" * (1024 * 1024 + 10)})
    async with world.api.http.post(
        f"{world.api.base_url}/api/v1/bots", data=io.BytesIO(big),
        headers={"Authorization": f"Bearer {world.a}", "Content-Type": "application/json"},
    ) as resp:  # fmt: skip
        assert resp.status == 413
        assert (await resp.json())["error"] == "too_large"
    async with world.api.http.post(
        f"{world.api.base_url}/api/v1/bots", data=b"{not json", headers={"Authorization": f"Bearer {world.a}"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "malformed"


async def test_page_size_is_bounded(world: World) -> None:
    status, body, _ = await world.api.call("GET", "/conversations?limit=201", world.a)
    assert status == 422
    assert body["errors"][0]["path"] == "query.limit"
    assert (await world.api.call("GET", "/conversations?limit=200", world.a))[0] == 200
    assert (await world.api.call("GET", "/conversations?bogus=1", world.a))[0] == 422


def test_token_commands(settings: Settings) -> None:
    import asyncio

    from tests.api_helpers import tenant_file
    from tests.harness import load_tenant

    asyncio.run(load_tenant(settings, tenant_file("acme")))
    env = settings.environment()

    def engine(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workers.cli", "token", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    created = engine("create", "--tenant", "acme", "--scopes", "read,agent", "--expires", "30d", "--name", "ann")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("eng_") and len(token) == 4 + 43
    listed = engine("list", "--tenant", "acme")
    assert listed.returncode == 0
    assert token[:12] in listed.stdout and token not in listed.stdout
    assert "read,agent\tactive" in listed.stdout
    assert engine("create", "--tenant", "nope").returncode == 2
    assert engine("create", "--tenant", "acme", "--scopes", "admin").returncode == 2
    revoked = engine("revoke", token[:12])
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in engine("list").stdout
    assert engine("revoke", token[:12]).returncode == 2  # already revoked
