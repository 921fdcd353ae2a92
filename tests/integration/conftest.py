"""Fixtures of the admin API tests: an engine receiver (with /api/v1) on a loopback port, tenants
acme and globex loaded from the same tenant file, and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from engine.settings import Settings
from tests.api_helpers import Api, make_token, tenant_file
from tests.harness import load_tenant
from workers import serve


@dataclass
class World:
    api: Api
    a: str  # acme's token, every scope
    b: str  # globex's token, every scope
    channels: dict[str, str]  # tenant slug -> channel id


@pytest.fixture
async def world(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[World]:
    channels = {}
    for slug in ("acme", "globex"):
        channels[slug] = (await load_tenant(settings, tenant_file(slug)))["tg"]
    runner = web.AppRunner(serve.build_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield World(
            Api(http, f"http://127.0.0.1:{port}"), await make_token(pool, "acme"), await make_token(pool, "globex"),
            channels,
        )  # fmt: skip
    await runner.cleanup()
