"""`engine migrate` from empty, twice in a row, and two at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.store.migrations import migrate, migration_files
from tests.conftest import _db_url, _drop

EXPECTED_TABLES = {
    "organizations", "bots", "bot_configuration", "channels", "channel_contacts", "conversations",
    "inbound_events", "message_history", "channel_messages", "channel_webhooks", "worker_leases",
}  # fmt: skip


@pytest.fixture
async def fresh_url() -> AsyncIterator[str]:
    name = f"engine_m_{uuid.uuid4().hex[:12]}"
    yield _db_url(name)
    await _drop(name)


async def _applied(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


async def test_from_empty_then_again_is_a_no_op(fresh_url: str) -> None:
    files = [f.name for f in migration_files()]
    assert await migrate(fresh_url) == files  # creates the database too
    assert await migrate(fresh_url) == []
    assert await _applied(fresh_url) == files
    conn = await asyncpg.connect(fresh_url)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert tables >= EXPECTED_TABLES
    assert any(t.startswith("message_history_2") for t in tables)  # monthly partitions exist


def test_two_concurrent_migrate_commands(fresh_url: str) -> None:
    env = {"ENGINE_DATABASE_URL": fresh_url, "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "workers.cli", "migrate"], env=env, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # Exactly one of them applied the files; the other found them applied.
    assert sum("up to date" in out for out in outputs) == 1, outputs
    assert asyncio.run(_applied(fresh_url)) == [f.name for f in migration_files()]
