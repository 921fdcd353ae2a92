"""Workers share the shards between them and take over a stopped worker's shards."""

from __future__ import annotations

import asyncio

from engine.settings import Settings
from tests.harness import wait_until
from workers.worker import WorkerProcess as Worker


async def test_two_workers_split_the_shards_and_one_takes_all_when_the_other_stops(settings: Settings) -> None:
    settings = settings.model_copy(update={"shards": 8})
    a, b = Worker(settings), Worker(settings)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    task_b = asyncio.create_task(b.run(stop_b))
    try:

        def owned(w: Worker) -> set[int]:
            subs = w.consumer
            return set(subs.consumers) if subs else set()

        async def split() -> bool:
            sa, sb = owned(a), owned(b)
            return bool(sa) and bool(sb) and not (sa & sb) and (sa | sb) == set(range(8))

        await wait_until(split, timeout=20)
        stop_b.set()
        await task_b

        async def all_to_a() -> bool:
            return owned(a) == set(range(8))

        await wait_until(all_to_a, timeout=20)  # b left its lease on stopping: no need to wait for expiry
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(task_a, task_b)
