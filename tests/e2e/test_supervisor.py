"""`engine workers -n 2`: two workers, a killed one is restarted, SIGTERM stops them all cleanly."""

from __future__ import annotations

import os
import signal

import asyncpg
import pytest

from engine.settings import Settings
from tests.harness import spawn, wait_until

LIVE = "SELECT pid FROM worker_leases WHERE role = 'worker' AND heartbeat_at > now() - interval '3 seconds'"


@pytest.mark.slow
async def test_supervisor_restarts_a_dead_worker_and_stops_gracefully(settings: Settings, pool: asyncpg.Pool) -> None:
    supervisor = spawn(settings, "workers", "-n", "2")
    try:

        async def two_live() -> list[int]:
            pids = [r["pid"] for r in await pool.fetch(LIVE)]
            return pids if len(pids) == 2 else []

        first = await wait_until(two_live, timeout=30)
        os.kill(first[0], signal.SIGKILL)

        async def replaced() -> bool:
            pids = await two_live()
            return bool(pids) and first[0] not in pids

        await pool.execute("DELETE FROM worker_leases WHERE pid = $1", first[0])  # its lease would expire anyway
        await wait_until(replaced, timeout=30)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=40) == 0
        assert await pool.fetchval("SELECT count(*) FROM worker_leases WHERE role = 'worker'") == 0  # all left cleanly
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
