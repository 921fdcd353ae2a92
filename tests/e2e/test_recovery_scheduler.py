"""Schedulers under concurrency and crashes: two at once send every step exactly once; one SIGKILLed
while it holds a claim loses and duplicates nothing (its rows go back to the others)."""

from __future__ import annotations

import asyncio
import collections
import signal
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.fake_platforms import Recorder
from engine.settings import Settings
from tests.harness import count, load_tenant, running_engine, spawn
from tests.recovery_harness import bundle, cart, post_event, start_scheduler, wait_for

CONTACTS = 30


async def _all_sent(pool: asyncpg.Pool, expected: int) -> bool:
    sent = await count(pool, "SELECT count(*) FROM recovery_messages WHERE sent_at IS NOT NULL")
    return sent >= expected


async def test_two_schedulers_send_each_step_exactly_once(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"scheduler_batch": 5})  # many small claims that interleave
    await load_tenant(settings, bundle(delay0="1s", delay1="1s"))
    async with running_engine(settings) as engine:
        start_scheduler(engine)
        start_scheduler(engine)
        for i in range(CONTACTS):
            assert (await post_event(engine, cart(f"two-{i}", {"platform": "telegram", "id": str(9000 + i)})))[0] == 201
        await wait_for(lambda: _all_sent(pool, 2 * CONTACTS), 60)
        await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
    per_chat = collections.Counter(r.chat for r in recorder.sent("telegram", ok=True))
    assert len(per_chat) == CONTACTS and set(per_chat.values()) == {2}
    assert await count(pool, "SELECT count(*) FROM recovery_messages") == 2 * CONTACTS
    assert await count(pool, "SELECT count(*) FROM channel_messages") == 2 * CONTACTS


async def test_scheduler_killed_mid_claim_loses_and_duplicates_nothing(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    _, recorder = fake_platforms
    await load_tenant(settings, bundle(delay0="0s", delay1="1h"))
    async with running_engine(settings) as engine:
        for i in range(10):
            assert (await post_event(engine, cart(f"kill-{i}", {"platform": "telegram", "id": str(7000 + i)})))[
                0
            ] == 201
        # A scheduler process that holds its claim (rows locked, nothing decided) for a long time.
        victim = spawn(settings.model_copy(update={"scheduler_claim_hold": 60.0}), "scheduler")
        try:

            async def locked() -> bool:  # due rows exist, but another transaction holds them all
                async with pool.acquire() as conn, conn.transaction():
                    free = await conn.fetch(
                        "SELECT id FROM recovery_messages WHERE status = 'pending' FOR UPDATE SKIP LOCKED"
                    )
                    return len(free) == 0

            await wait_for(locked, 30)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
        finally:
            if victim.poll() is None:
                victim.kill()
        assert await count(pool, "SELECT count(*) FROM recovery_messages WHERE status = 'pending'") == 10
        start_scheduler(engine)
        await wait_for(lambda: _all_sent(pool, 10), 30)
        await asyncio.sleep(1.0)
    per_chat = collections.Counter(r.chat for r in recorder.sent("telegram", ok=True))
    assert len(per_chat) == 10 and set(per_chat.values()) == {1}


async def test_frequency_cap_holds_across_two_schedulers(
    settings: Settings, pool: asyncpg.Pool, fake_platforms: tuple[str, Recorder]
) -> None:
    """Two events of one contact due together, claimed by two schedulers at the same moment: the
    per-contact claim lock makes the second see the first's send, so the cap skips it."""
    _, recorder = fake_platforms
    settings = settings.model_copy(update={"scheduler_batch": 1, "scheduler_claim_hold": 0.5})
    await load_tenant(settings, bundle(delay0="0s", delay1="1h", freq_cap="1h"))
    async with running_engine(settings) as engine:
        at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()  # both due together, a second from now
        for contact in range(3):
            for n in range(2):
                body = cart(f"x-{contact}-{n}", {"platform": "telegram", "id": str(6100 + contact)}, occurred_at=at)
                assert (await post_event(engine, body))[0] == 201
        start_scheduler(engine)
        start_scheduler(engine)

        async def decided() -> bool:
            return (
                await count(pool, "SELECT count(*) FROM recovery_messages WHERE step = 0 AND status <> 'pending'") == 6
            )

        await wait_for(decided, 60)
        await asyncio.sleep(1.0)
    outcomes = collections.Counter(
        (r["status"], r["skip_reason"])
        for r in await pool.fetch("SELECT status, skip_reason FROM recovery_messages WHERE step = 0")
    )
    assert outcomes[("skipped", "frequency_cap")] == 3
    per_chat = collections.Counter(r.chat for r in recorder.sent("telegram", ok=True))
    assert len(per_chat) == 3 and set(per_chat.values()) == {1}
