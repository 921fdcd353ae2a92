"""Shared fixtures. Every test gets its own database (cloned from a template migrated once per
session) and its own topology prefix on the real broker, both removed afterwards."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiohttp import web

from engine.bus.topology import Topology, delete_topology
from engine.crypto import Vault, generate_key
from engine.fake_platforms import RECORDER, Recorder
from engine.fake_platforms import create_app as create_fake_app
from engine.settings import Settings
from engine.store.migrations import migrate
from engine.store.pool import create_pool

# Tests configure themselves explicitly; nothing leaks in from the developer's environment.
for _name in [n for n in os.environ if n.startswith("ENGINE_")]:
    del os.environ[_name]

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent
MAX_TEST_SHARDS = 16


def _db_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database migrated from sql/ alone, cloned by every test that needs PostgreSQL. A caller that
    runs many short sessions (`make mutation`) migrates one itself and names it in TEST_TEMPLATE_DB."""
    if reused := os.environ.get("TEST_TEMPLATE_DB"):
        yield reused
        return
    name = f"engine_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(migrate(_db_url(name)))
    yield name
    asyncio.run(_drop(name))


@pytest.fixture
async def database_url(template_db: str) -> AsyncIterator[str]:
    name = f"engine_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    yield _db_url(name)
    await _drop(name)


@pytest.fixture
async def fake_platforms() -> AsyncIterator[tuple[str, Recorder]]:
    """The fake platform APIs on a free loopback port: (base URL, recorder)."""
    app = create_fake_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", app[RECORDER]
    await runner.cleanup()


@pytest.fixture
async def settings(database_url: str, fake_platforms: tuple[str, Recorder]) -> AsyncIterator[Settings]:
    base, _ = fake_platforms
    s = Settings(
        database_url=database_url,
        amqp_url=AMQP_URL,
        topology_prefix=f"t{uuid.uuid4().hex[:10]}",
        shards=4,
        master_key=generate_key(),
        telegram_api_base=f"{base}/telegram",
        graph_api_base=f"{base}/graph",
        slack_api_base=f"{base}/slack/api",
        heartbeat_interval=0.3,
        lease_ttl=3.0,
        shutdown_grace=5.0,
        requeue_stale_after=30.0,
        publish_timeout=3.0,
        tool_allow_hosts="127.0.0.1",  # the fake shop: tools reach loopback only where allowed
    )
    yield s
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        # Tests may raise the shard count (up to MAX_TEST_SHARDS); deleting an absent queue is a no-op.
        await delete_topology(await connection.channel(), Topology(s.topology_prefix, MAX_TEST_SHARDS))


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings.database_url)
    yield p
    await p.close()


@pytest.fixture
def vault(settings: Settings) -> Vault:
    return Vault(settings.master_key)


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath) or "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.pg)
            item.add_marker(pytest.mark.amqp)
